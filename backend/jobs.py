"""Jobs and the FIFO queue that the worker threads drain.

One worker per executor slot (one for a local engine, one per replica of a pool), so jobs
from every client queue here in arrival order. The queue is shared between the network thread (which adds and cancels jobs) and the
worker (which takes them), hence the lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .refine import RefineJob

_job_ids = itertools.count(1)


@dataclass
class Job:
    """A validated refine request and where its replies go."""

    peer: bytes  # ROUTER identity of the submitting client
    request_id: Any  # the client's ``id``, echoed on every reply
    work: RefineJob
    engine: str
    preset: str | None
    origin: tuple[int, int]
    order: str  # channel order of the source frame; the result uses the same
    output_dtype: str
    job_id: str = field(default_factory=lambda: f"j{next(_job_ids)}")
    submitted: float = field(default_factory=time.monotonic)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # Progress as last reported (for ``status``), written by the worker only.
    stage: str = "queued"
    step: int = 0
    total: int = 0

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def summary(self) -> dict[str, Any]:
        h, w = self.work.source.shape[:2]
        return {
            "job": self.job_id,
            "engine": self.engine,
            "preset": self.preset,
            "size": [w, h],
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
            "age_s": round(time.monotonic() - self.submitted, 3),
        }


class JobQueue:
    """FIFO of waiting jobs plus the running ones (one per worker)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self.completed = 0

    def put(self, job: Job) -> int:
        """Queue ``job``; returns its position (0 = next to run). Raises OverflowError when full."""
        with self._cond:
            if len(self._waiting) >= self.limit:
                raise OverflowError(f"the queue is full ({self.limit} jobs waiting)")
            self._waiting.append(job)
            self._cond.notify()
            return len(self._waiting) - 1 + len(self._running)

    def take(self, timeout: float) -> Job | None:
        """The next job (now running), or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._waiting:
                self._cond.wait(timeout)
            if not self._waiting:
                return None
            job = self._waiting.popleft()
            self._running.append(job)
            return job

    def done(self, job: Job) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            self.completed += 1

    def find(self, job_id: str) -> Job | None:
        with self._cond:
            return next((j for j in [*self._running, *self._waiting] if j.job_id == job_id), None)

    def remove_waiting(self, job: Job) -> bool:
        """Take a queued job out before it runs; False if it already started."""
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            return True

    def jobs_of(self, peer: bytes) -> list[Job]:
        return [j for j in self.jobs_of_all() if j.peer == peer]

    def jobs_of_all(self) -> list[Job]:
        with self._cond:
            return [*self._running, *self._waiting]

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {
                # The oldest running job (as before a pool existed), then all of them.
                "running": self._running[0].summary() if self._running else None,
                "running_all": [j.summary() for j in self._running],
                "waiting": [j.summary() for j in self._waiting],
                "completed": self.completed,
            }

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
