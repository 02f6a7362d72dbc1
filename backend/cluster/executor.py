"""The seam between the job queue and whatever runs jobs: an executor.

The server's worker threads take jobs from the queue and hand each to an executor: "run this
prepared job, stream its progress, honour cancel, return the result". Everything else -- the
queue, validation, the wire format of progress and results -- stays the worker's business, so
the same front serves a single local GPU and a Ray Serve pool.

- :class:`LocalExecutor` owns one engine in this process (the single-GPU backend; also what
  each Ray replica runs inside).
- ``RayExecutor`` (:mod:`.ray_executor`, imported only with ``--cluster``) sends jobs to a Ray
  Serve deployment whose replicas each own one engine.

An executor declares ``slots``: how many jobs it can run at once. The server starts that many
worker threads; each calls :meth:`Executor.run` for one job at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..engines import create_engine
from ..engines.base import CancelFn, Engine
from ..pipeline.refine import ProgressFn, RefineJob, RefineOutcome, run_refine

log = logging.getLogger("touchup.executor")


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` replicas, 0 <= MIN <= MAX, MAX >= 1 (checked before Ray is imported)."""
    lo, sep, hi = text.partition(":")
    try:
        low, high = int(lo), int(hi)
    except ValueError:
        raise ValueError(f"--autoscale wants MIN:MAX replicas, got {text!r}") from None
    if not sep or low < 0 or high < max(low, 1):
        raise ValueError(f"--autoscale wants 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return low, high


class ClusterError(RuntimeError):
    """The pool cannot be used at all (Ray missing, cluster unreachable at start-up)."""


class Executor(ABC):
    """Runs prepared jobs. Thread-safe: up to ``slots`` worker threads call :meth:`run` at once."""

    #: Jobs that can run at the same time (worker threads the server starts).
    slots: int = 1

    def start(self) -> None:
        """Acquire what jobs need (connect to a cluster, deploy replicas). Called once, before run."""

    @abstractmethod
    def run(
        self,
        work: RefineJob,
        engine: str,
        preset: str | None,
        on_progress: ProgressFn,
        is_cancelled: CancelFn,
    ) -> RefineOutcome:
        """Run one job to completion on a worker thread.

        ``on_progress(stage, step, total, preview)`` is called for each step as it happens;
        ``is_cancelled()`` turns true when the user cancels, and the run then raises
        :class:`~touchup.backend.errors.Cancelled` at the engine's next check. Failures raise
        :class:`~touchup.backend.errors.TouchupError` (with a protocol code) or any exception
        (reported as ``engine_failed``). ``outcome.meta["preset"]`` names the preset used.
        """

    def tick(self) -> None:
        """Called by idle worker threads about twice a second: housekeeping (idle unload)."""

    def request_unload(self) -> None:
        """Free device memory as soon as no job runs (called from the network thread)."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """What ``status`` reports about the engines: must never raise or block for long."""

    def close(self) -> None:
        """Release everything (unload engines, leave the cluster)."""


class LocalExecutor(Executor):
    """One engine resident in this process; switching engines unloads the previous one first.

    Only the thread running a job touches the engine; unloading requested from elsewhere is
    deferred to the next :meth:`tick` or job, so the device is only ever used by one thread.
    """

    slots = 1

    def __init__(self, engine_options: Callable[[str], dict[str, Any]], idle_unload_s: float = 0.0) -> None:
        self._engine_options = engine_options
        self.idle_unload_s = idle_unload_s
        self.engine: Engine | None = None
        self.engine_name: str | None = None
        self.engine_preset: str | None = None
        self.state = "idle"
        self.jobs_done = 0
        self.last_job_end = time.monotonic()
        self._lock = threading.Lock()
        self._unload_requested = threading.Event()

    def run(
        self,
        work: RefineJob,
        engine: str,
        preset: str | None,
        on_progress: ProgressFn,
        is_cancelled: CancelFn,
    ) -> RefineOutcome:
        with self._lock:
            try:
                self._apply_unload_request()
                if self.engine_name != engine or (preset is not None and self.engine_preset != preset):
                    on_progress("loading", 0, 1, None)  # loading weights can take minutes: say so
                self.state = "loading"
                loaded = self._engine_for(engine, preset)
                self.state = "busy"
                outcome = run_refine(work, loaded, on_progress, is_cancelled)
                self.jobs_done += 1
                return outcome
            finally:
                self.state = "idle"
                self.last_job_end = time.monotonic()

    def load(self, engine: str, preset: str | None) -> str:
        """Make ``engine`` with ``preset`` resident now (a replica warming up); returns the preset."""
        with self._lock:
            self.state = "loading"
            try:
                self._engine_for(engine, preset)
            finally:
                self.state = "idle"
            assert self.engine_preset is not None
            return self.engine_preset

    def _engine_for(self, name: str, preset: str | None) -> Engine:
        if self.engine_name != name:
            self._unload()
            self.engine = create_engine(name, self._engine_options(name))
            self.engine_name = name
        assert self.engine is not None
        self.engine.load(preset)
        self.engine_preset = preset or self.engine.preset(None).name
        return self.engine

    def tick(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # a job runs: nothing to tidy
        try:
            self._apply_unload_request()
            limit = self.idle_unload_s
            if self.engine is not None and limit and time.monotonic() - self.last_job_end > limit:
                log.info("unloading %s after %.0f s idle", self.engine_name, limit)
                self._unload()
        finally:
            self._lock.release()

    def request_unload(self) -> None:
        self._unload_requested.set()

    def _apply_unload_request(self) -> None:
        if self._unload_requested.is_set():
            self._unload_requested.clear()
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

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {"state": self.state, "engine": self.engine_name, "preset": self.engine_preset}
        engine = self.engine
        if engine is not None:
            try:
                info["engine_status"] = engine.status()
            except Exception as exc:  # status must never fail
                info["engine_status"] = {"error": str(exc)}
        return info

    def close(self) -> None:
        with self._lock:
            self._unload()
