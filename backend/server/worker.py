"""The worker thread: takes jobs from the fair queue and runs each on an engine.

"Run one job on an engine" is :class:`LocalEngineRunner` -- one engine kept loaded in this
process between jobs (switching unloads the previous one first, an idle period unloads it). It
is the seam where another executor (a pool of GPU workers elsewhere) stands in: anything with
``run``, ``unload``, ``idle_unload`` and ``status`` will do.

Everything a job produces (progress, result, error) goes back to the network thread through an
in-process ZeroMQ socket, because ZeroMQ sockets must not be shared between threads. Whatever
fails while a job runs -- the engine, building the result, encoding it -- ends that job with a
coded error carrying its request id, and the worker takes the next job. Should the thread die
all the same, the network thread notices, fails the job and starts a new worker (see endpoint).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np
import zmq

from ...shared.protocol import ErrorCode, Kind, encode, error_header, make_header
from ..config import Config
from ..engines import create_engine
from ..engines.base import Engine
from ..errors import Cancelled, TouchupError
from ..pipeline.imaging import NUMPY_DTYPES, array_to_frame, from_float, to_float
from ..pipeline.refine import RefineOutcome, run_refine
from .queue import Job, JobQueue

log = logging.getLogger("touchup.worker")

#: Previews are small on purpose: they are a progress cue, not a result.
PREVIEW_SIDE = 256

ProgressFn = Callable[..., None]


class JobRunner(Protocol):
    """Runs one job to its outcome. Raises Cancelled, TouchupError or anything else on failure."""

    def run(self, job: Job, on_progress: ProgressFn, is_cancelled: Callable[[], bool]) -> RefineOutcome: ...

    def needs_loading(self, job: Job) -> bool: ...

    def unload(self) -> None: ...

    def idle_unload(self, idle_s: float) -> None: ...

    def status(self) -> dict[str, Any]: ...


class LocalEngineRunner:
    """One engine loaded in this process, reused while jobs ask for the same engine."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine: Engine | None = None
        self.engine_name: str | None = None
        self.engine_preset: str | None = None
        self.loading = False

    def needs_loading(self, job: Job) -> bool:
        return self.engine_name != job.engine or (job.preset is not None and self.engine_preset != job.preset)

    def run(self, job: Job, on_progress: ProgressFn, is_cancelled: Callable[[], bool]) -> RefineOutcome:
        if self.engine_name != job.engine:
            self.unload()
            self.engine = create_engine(job.engine, self.config.engine_options(job.engine))
            self.engine_name = job.engine
        assert self.engine is not None
        self.loading = True
        try:
            self.engine.load(job.preset)
        finally:
            self.loading = False
        self.engine_preset = job.preset or self.engine.preset(None).name
        return run_refine(job.work, self.engine, on_progress, is_cancelled)

    def unload(self) -> None:
        if self.engine is not None:
            try:
                self.engine.unload()
            except Exception:
                log.exception("unloading %s failed", self.engine_name)
            else:
                log.info("unloaded %s", self.engine_name)
            self.engine = None
            self.engine_name = self.engine_preset = None

    def idle_unload(self, idle_s: float) -> None:
        limit = self.config.idle_unload_s
        if self.engine is not None and limit and idle_s > limit:
            log.info("unloading %s after %.0f s idle", self.engine_name, limit)
            self.unload()

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {"engine": self.engine_name, "preset": self.engine_preset}
        if self.engine is not None:
            try:
                info["engine_status"] = self.engine.status()
            except Exception as exc:  # status must never fail
                info["engine_status"] = {"error": str(exc)[:200]}
        return info


class Worker(threading.Thread):
    def __init__(
        self, config: Config, queue: JobQueue, zctx: zmq.Context, outbox: str, runner: JobRunner | None = None
    ) -> None:
        super().__init__(name="touchup-worker", daemon=True)
        self.config = config
        self.queue = queue
        self.runner: JobRunner = runner or LocalEngineRunner(config)
        self._zctx = zctx
        self._outbox_addr = outbox
        self._stopping = threading.Event()
        self._unload_requested = threading.Event()
        self.last_job_end = time.monotonic()
        self.state = "idle"
        self.crash: str | None = None  # the traceback that ended this thread, if one did

    def stop(self) -> None:
        self._stopping.set()
        self.queue.wake()

    def request_unload(self) -> None:
        self._unload_requested.set()
        self.queue.wake()

    def status(self) -> dict[str, Any]:
        state = "loading" if getattr(self.runner, "loading", False) else self.state
        return {"state": state, **self.runner.status()}

    # -- thread body -------------------------------------------------------------------------
    def run(self) -> None:
        out = self._zctx.socket(zmq.PUSH)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(self._outbox_addr)
        try:
            self._loop(out)
        except BaseException:
            self.crash = traceback.format_exc(limit=8)
            log.critical("the worker died:\n%s", self.crash)
            raise
        finally:
            try:
                self.runner.unload()
            finally:
                out.close(0)

    def _loop(self, out: zmq.Socket) -> None:
        while not self._stopping.is_set():
            job = self.queue.take(timeout=0.5)
            if self._unload_requested.is_set():
                self._unload_requested.clear()
                self.runner.unload()
            if job is None:
                self.runner.idle_unload(time.monotonic() - self.last_job_end)
                continue
            header, frames = self._run_job(job, out)
            # The final message goes out only after the job has left the queue, so that a client
            # asking for status right after its result never sees the job still running.
            self.queue.done(job)
            self.last_job_end = time.monotonic()
            self.state = "idle"
            send_final(out, job, header, frames)

    def _run_job(self, job: Job, out: zmq.Socket) -> tuple[dict[str, Any], list]:
        """Run ``job``, streaming progress; returns its final message (result, error or cancelled).
        Never raises for anything the job does."""
        if job.cancelled:
            return make_header(Kind.CANCELLED), []
        self.state = "busy"
        last_sent: list[tuple] = [()]

        def on_progress(stage: str, step: int, total: int, preview: np.ndarray | None = None) -> None:
            # One event per distinct step (diffusion engines report each denoising step once);
            # repeats of the same step carry nothing new unless they bring a preview.
            job.stage, job.step, job.total = stage, step, total
            if job.cancelled:
                raise Cancelled()  # every progress report is also a cancel check
            if (stage, step, total) == last_sent[0] and preview is None:
                return
            last_sent[0] = (stage, step, total)
            frames = [_preview_frame(preview)] if preview is not None else []
            header = make_header(Kind.PROGRESS, stage=stage, step=step, total=total, position=0)
            out.send_multipart(_parts(job, header, frames), copy=False)

        started = time.perf_counter()
        try:
            if self.runner.needs_loading(job):
                on_progress("loading", 0, 1)  # loading weights can take minutes: say so
            outcome = self.runner.run(job, on_progress, lambda: job.cancelled)
            return result_message(job, outcome, time.perf_counter() - started, self.runner.status())
        except Cancelled:
            log.info("job %s cancelled", job.job_id)
            return make_header(Kind.CANCELLED), []
        except TouchupError as exc:
            log.warning("job %s failed: %s (%s)", job.job_id, exc.message, exc.code)
            return error_header(exc.code, exc.message, exc.detail), []
        except MemoryError:
            return error_header(ErrorCode.OUT_OF_MEMORY, "the backend ran out of memory for this region"), []
        except Exception as exc:
            log.exception("job %s crashed", job.job_id)
            return error_header(
                ErrorCode.ENGINE_FAILED, f"the engine failed: {str(exc)[:300]}", traceback.format_exc(limit=5)
            ), []


def result_message(
    job: Job, outcome: RefineOutcome, seconds: float, runner_status: dict[str, Any]
) -> tuple[dict[str, Any], list]:
    """The ``result`` header and frame: only the part of the tile the new layer covers."""
    layer = _convert(outcome.layer, job.output_dtype)
    bx, by, bw, bh = cv2.boundingRect((outcome.layer[:, :, 3] > 0).view(np.uint8))
    if bw == 0 or bh == 0:
        bx, by, bw, bh = 0, 0, layer.shape[1], layer.shape[0]
    x0, y0, x1, y1 = bx, by, bx + bw, by + bh
    layer = layer[y0:y1, x0:x1]
    ox, oy = job.origin
    meta = dict(outcome.meta)
    # Each focus region's details, plus where it lies in the document (what a user can see).
    details = outcome.meta.get("regions") or [{} for _ in outcome.regions]
    meta["regions"] = [
        {**info, "doc_rect": [r.x + ox, r.y + oy, r.width, r.height]}
        for info, r in zip(details, outcome.regions, strict=True)
    ]
    meta["timings"] = {k: round(v, 4) for k, v in outcome.timings.items()}
    meta["engine"] = job.engine
    meta["preset"] = runner_status.get("preset")
    meta["seconds"] = round(seconds, 4)
    log.info("job %s done in %.2f s", job.job_id, seconds)
    return (
        make_header(Kind.RESULT, origin=[ox + x0, oy + y0], size=[x1 - x0, y1 - y0], meta=_plain(meta)),
        [array_to_frame(layer, "result", job.order)],
    )


def send_final(out: zmq.Socket, job: Job, header: dict[str, Any], frames: list) -> None:
    """Send a job's last message; one that cannot be encoded becomes an ``internal`` error that
    still carries the request id, so the client never waits for a reply that will not come."""
    try:
        parts = _parts(job, header, frames)
    except Exception as exc:
        log.exception("job %s: its %s could not be encoded", job.job_id, header.get("kind"))
        parts = _parts(
            job, error_header(ErrorCode.INTERNAL, f"the backend could not send the result: {exc}"[:300])
        )
    out.send_multipart(parts, copy=False)


def _parts(job: Job, header: dict[str, Any], frames: list = ()) -> list:
    header.setdefault("id", job.request_id)
    header.setdefault("job", job.job_id)
    return [job.peer, *encode(header, list(frames))]


def _convert(arr: np.ndarray, dtype: str) -> np.ndarray:
    target = NUMPY_DTYPES[dtype]
    return arr if arr.dtype == target else from_float(to_float(arr), target)


def _preview_frame(preview: np.ndarray):
    h, w = preview.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale < 1.0:
        preview = cv2.resize(
            preview, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return array_to_frame(from_float(np.clip(preview, 0, 1), np.uint8), "preview")


def _plain(value: Any) -> Any:
    """Engine metadata made msgpack-safe (numpy scalars and arrays become plain values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
