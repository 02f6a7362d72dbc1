"""Worker threads: take jobs from the fair queue and run each through the executor.

"Run one job on an engine" is the executor (``cluster.executor``): one engine kept loaded in this
process (:class:`~touchup.backend.cluster.executor.LocalExecutor`), or a Ray Serve pool of
replicas (``serve --cluster``). The server starts one worker per executor slot.

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
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import zmq

from ...shared.frames import Frame
from ...shared.protocol import ErrorCode, Kind, encode, error_header, make_header
from ..cluster.executor import Executor
from ..config import Config
from ..errors import Cancelled, TouchupError
from ..pipeline.imaging import NUMPY_DTYPES, array_to_frame, from_float, to_float
from ..pipeline.refine import RefineOutcome
from .queue import Job, JobQueue

log = logging.getLogger("touchup.worker")

#: Previews are small on purpose: they are a progress cue, not a result.
PREVIEW_SIDE = 256


class Worker(threading.Thread):
    """Takes jobs one at a time and runs each through the shared executor."""

    def __init__(
        self,
        config: Config,
        queue: JobQueue,
        zctx: zmq.Context,
        outbox: str,
        executor: Executor,
        index: int = 0,
    ) -> None:
        super().__init__(name=f"touchup-worker-{index}", daemon=True)
        self.config = config
        self.queue = queue
        self.executor = executor
        self.index = index
        self._zctx = zctx
        self._outbox_addr = outbox
        self._stopping = threading.Event()
        self.job: Job | None = None  # the job this worker runs now
        self.crash: str | None = None  # the traceback that ended this thread, if one did

    def stop(self) -> None:
        self._stopping.set()
        self.queue.wake()

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
            out.close(0)

    def _loop(self, out: zmq.Socket) -> None:
        while not self._stopping.is_set():
            job = self.queue.take(timeout=0.5)
            if job is None:
                self.executor.tick()  # housekeeping while idle: unload requests, idle unload
                continue
            self.job = job
            header, frames = self._run_job(job, out)
            # The final message goes out only after the job has left the queue, so that a client
            # asking for status right after its result never sees the job still running.
            self.queue.done(job)
            self.job = None
            send_final(out, job, header, frames)

    def _run_job(self, job: Job, out: zmq.Socket) -> tuple[dict[str, Any], list]:
        """Run ``job``, streaming progress; returns its final message (result, error or cancelled).
        Never raises for anything the job does."""
        if job.cancelled:
            return make_header(Kind.CANCELLED), []
        last_sent: list[tuple] = [()]

        def on_progress(
            stage: str, step: int, total: int, preview: np.ndarray | None = None, variant: int = 0
        ) -> None:
            # One event per distinct step (diffusion engines report each denoising step once);
            # repeats of the same step carry nothing new unless they bring a preview.
            job.stage, job.step, job.total, job.variant = stage, step, total, variant
            if job.cancelled:
                raise Cancelled()  # every progress report is also a cancel check
            if (stage, step, total, variant) == last_sent[0] and preview is None:
                return
            last_sent[0] = (stage, step, total, variant)
            frames = [_preview_frame(preview)] if preview is not None else []
            header = make_header(
                Kind.PROGRESS,
                stage=stage,
                step=step,
                total=total,
                position=0,
                variant=variant,
                variants=job.variants,
            )
            out.send_multipart(_parts(job, header, frames), copy=False)

        started = time.perf_counter()

        def on_variant(outcome: RefineOutcome) -> None:
            # Every variant but the last goes out the moment it is pasted back; the last one is
            # the job's ``result``, sent once the job has left the queue.
            if outcome.variant < outcome.variants - 1:
                header, frames = result_message(job, outcome, time.perf_counter() - started, Kind.VARIANT)
                out.send_multipart(_parts(job, header, frames), copy=False)

        try:
            outcomes = self.executor.run(
                job.work, job.engine, job.preset, on_progress, lambda: job.cancelled, on_variant
            )
            return result_message(job, outcomes[-1], time.perf_counter() - started)
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
    job: Job, outcome: RefineOutcome, seconds: float, kind: Kind = Kind.RESULT
) -> tuple[dict[str, Any], list]:
    """The ``result`` (or ``variant``) header and frame: only the part of the tile the new layer
    covers, with which variant it is and the seed it used."""
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
    meta["preset"] = outcome.meta.get("preset")
    meta["seconds"] = round(seconds, 4)
    if kind is Kind.RESULT:
        log.info("job %s done in %.2f s", job.job_id, seconds)
    return (
        make_header(
            kind,
            origin=[ox + x0, oy + y0],
            size=[x1 - x0, y1 - y0],
            meta=_plain(meta),
            variant=outcome.variant,
            variants=outcome.variants,
            seed=outcome.seed,
        ),
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


def _parts(job: Job, header: dict[str, Any], frames: Sequence[Any] = ()) -> list:
    header.setdefault("id", job.request_id)
    header.setdefault("job", job.job_id)
    return [job.peer, *encode(header, list(frames))]


def _convert(arr: np.ndarray, dtype: str) -> np.ndarray:
    target = NUMPY_DTYPES[dtype]
    return arr if arr.dtype == target else from_float(to_float(arr), target)


def _preview_frame(preview: np.ndarray) -> Frame:

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
