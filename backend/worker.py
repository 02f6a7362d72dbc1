"""The worker thread: the only code that touches an engine (and therefore the GPU).

It takes jobs from the queue in order, keeps one engine loaded between jobs (switching unloads
the previous one first), unloads after an idle period, and reports everything back to the
network thread through an in-process ZeroMQ socket, because ZeroMQ sockets must not be shared
between threads.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

import cv2
import numpy as np
import zmq

from ..shared.protocol import ErrorCode, Kind, encode, error_header, make_header
from .config import Config
from .engines import create_engine
from .engines.base import Engine
from .errors import Cancelled, TouchupError
from .jobs import Job, JobQueue
from .pipeline.imaging import NUMPY_DTYPES, array_to_frame, from_float, to_float
from .pipeline.refine import run_refine

log = logging.getLogger("touchup.worker")

#: Previews are small on purpose: they are a progress cue, not a result.
PREVIEW_SIDE = 256


class Worker(threading.Thread):
    def __init__(self, config: Config, queue: JobQueue, zctx: zmq.Context, outbox: str) -> None:
        super().__init__(name="touchup-worker", daemon=True)
        self.config = config
        self.queue = queue
        self._zctx = zctx
        self._outbox_addr = outbox
        self._stopping = threading.Event()
        self._unload_requested = threading.Event()
        self.engine: Engine | None = None
        self.engine_name: str | None = None
        self.engine_preset: str | None = None
        self.last_job_end = time.monotonic()
        self.state = "idle"

    def stop(self) -> None:
        self._stopping.set()
        self.queue.wake()

    def request_unload(self) -> None:
        self._unload_requested.set()
        self.queue.wake()

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "state": self.state,
            "engine": self.engine_name,
            "preset": self.engine_preset,
        }
        if self.engine is not None:
            try:
                info["engine_status"] = self.engine.status()
            except Exception as exc:  # status must never fail
                info["engine_status"] = {"error": str(exc)}
        return info

    # -- thread body -------------------------------------------------------------------------
    def run(self) -> None:
        out = self._zctx.socket(zmq.PUSH)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(self._outbox_addr)
        try:
            while not self._stopping.is_set():
                job = self.queue.take(timeout=0.5)
                if self._unload_requested.is_set():
                    self._unload_requested.clear()
                    self._unload()
                if job is None:
                    self._maybe_idle_unload()
                    continue
                final: tuple[dict[str, Any], list] | None = None
                try:
                    final = self._run_job(job, out)
                finally:
                    self.queue.done(job)
                    self.last_job_end = time.monotonic()
                    self.state = "idle"
                if final is not None:
                    out.send_multipart(self._parts(job, *final), copy=False)
        finally:
            self._unload()
            out.close(0)

    def _maybe_idle_unload(self) -> None:
        limit = self.config.idle_unload_s
        if self.engine is not None and limit and time.monotonic() - self.last_job_end > limit:
            log.info("unloading %s after %.0f s idle", self.engine_name, limit)
            self._unload()

    def _unload(self) -> None:
        if self.engine is not None:
            try:
                self.engine.unload()
            except Exception:
                log.exception("unloading %s failed", self.engine_name)
            else:
                log.info("unloaded %s", self.engine_name)
            self.engine = None
            self.engine_name = self.engine_preset = None

    def _engine_for(self, job: Job) -> Engine:
        if self.engine_name != job.engine:
            self._unload()
            self.engine = create_engine(job.engine, self.config.engine_options(job.engine))
            self.engine_name = job.engine
        assert self.engine is not None
        self.state = "loading"
        self.engine.load(job.preset)
        self.engine_preset = job.preset or self.engine.preset(None).name
        return self.engine

    def _run_job(self, job: Job, out: zmq.Socket) -> tuple[dict[str, Any], list]:
        """Run ``job``, streaming progress; returns the final message (result, error or
        cancelled), which the caller sends only after the job has left the queue, so that a
        client asking for status right after its result never sees the job still running."""

        def send(header: dict[str, Any], frames: list = ()) -> None:
            out.send_multipart(self._parts(job, header, frames), copy=False)

        if job.cancelled:
            return make_header(Kind.CANCELLED), []
        self.state = "busy"
        last_sent: list[tuple] = [()]

        def on_progress(stage: str, step: int, total: int, preview: np.ndarray | None = None) -> None:
            # One event per distinct step (diffusion engines report each denoising step once);
            # repeats of the same step carry nothing new unless they bring a preview.
            job.stage, job.step, job.total = stage, step, total
            if (stage, step, total) == last_sent[0] and preview is None:
                return
            last_sent[0] = (stage, step, total)
            frames = [_preview_frame(preview)] if preview is not None else []
            send(make_header(Kind.PROGRESS, stage=stage, step=step, total=total), frames)

        started = time.perf_counter()
        try:
            if self.engine_name != job.engine or self.engine_preset != (job.preset or self.engine_preset):
                on_progress("loading", 0, 1)  # loading weights can take minutes: say so
            engine = self._engine_for(job)
            self.state = "busy"
            outcome = run_refine(job.work, engine, on_progress, lambda: job.cancelled)
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
                ErrorCode.ENGINE_FAILED, f"the engine failed: {exc}", traceback.format_exc(limit=5)
            ), []

        layer = _convert(outcome.layer, job.output_dtype)
        # Send only the part of the tile the new layer actually covers.
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
        meta["preset"] = self.engine_preset
        meta["seconds"] = round(time.perf_counter() - started, 4)
        log.info("job %s done in %.2f s", job.job_id, meta["seconds"])
        return (
            make_header(Kind.RESULT, origin=[ox + x0, oy + y0], size=[x1 - x0, y1 - y0], meta=_plain(meta)),
            [array_to_frame(layer, "result", job.order)],
        )

    @staticmethod
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
