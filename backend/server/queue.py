"""Jobs, and the fair queue the single worker drains.

One worker owns the engine (and the GPU), so every client's jobs wait here. Waiting jobs are
kept per client and taken round-robin: one user's 25-job batch delays another user's single job
by at most one job, instead of by the whole batch. Each client also has a quota of waiting jobs
and the queue a bound on the bytes it holds, so no client can fill the backend's memory.

The queue is shared between the network thread (which adds, cancels and reports positions) and
the worker (which takes jobs), hence the lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...shared.protocol import ErrorCode
from ..errors import TouchupError
from ..pipeline.refine import RefineJob

_job_ids = itertools.count(1)


class QueueFull(TouchupError):
    """The queue, or this client's share of it, is full."""

    code = ErrorCode.QUEUE_FULL


@dataclass
class Job:
    """A validated refine request and where its replies go."""

    peer: bytes  # ROUTER identity of the submitting connection: replies go there
    request_id: Any  # the client's ``id``, echoed on every reply
    work: RefineJob
    engine: str
    preset: str | None
    origin: tuple[int, int]
    order: str  # channel order of the source frame; the result uses the same
    output_dtype: str
    owner: str = ""  # whose share of the queue this job uses: the key's name, else the connection
    nbytes: int = 0  # pixel memory the job holds while it waits
    job_id: str = field(default_factory=lambda: f"j{next(_job_ids)}")
    submitted: float = field(default_factory=time.monotonic)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # Progress as last reported (for ``status``), written by the worker only.
    stage: str = "queued"
    step: int = 0
    total: int = 0
    variant: int = 0  # the variant being computed
    position: int = -1  # last queue position told to the client (network thread only)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def variants(self) -> int:
        """How many results the job makes (the edge resolved the preset's default)."""
        return int(self.work.params.variants or 1)

    def summary(self, with_owner: bool = False) -> dict[str, Any]:
        h, w = self.work.source.shape[:2]
        info = {
            "job": self.job_id,
            "engine": self.engine,
            "preset": self.preset,
            "size": [w, h],
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
            "variant": self.variant,
            "variants": self.variants,
            "age_s": round(time.monotonic() - self.submitted, 3),
        }
        if with_owner:
            info["owner"] = self.owner
        return info


class JobQueue:
    """Waiting jobs per owner, taken round-robin, plus the running ones (one per worker slot)."""

    def __init__(self, limit: int, per_client: int | None = None, max_bytes: int | None = None) -> None:
        self.limit = limit
        self.per_client = per_client or limit
        self.max_bytes = max_bytes
        self._waiting: dict[str, deque[Job]] = {}
        self._rotation: deque[str] = deque()  # owners with waiting jobs, next to be served first
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self.completed = 0
        #: Bumped whenever positions may have changed (a job started, left or was cancelled).
        self.generation = 0

    # -- network thread ---------------------------------------------------------------------
    def put(self, job: Job) -> int:
        """Queue ``job``; returns its position (0 = runs next). Raises :class:`QueueFull`."""
        with self._cond:
            waiting = self._count()
            if waiting >= self.limit:
                raise QueueFull(f"the queue is full ({self.limit} jobs waiting); try again shortly")
            mine = self._waiting.get(job.owner, ())
            if len(mine) >= self.per_client:
                raise QueueFull(
                    f"you already have {len(mine)} jobs waiting (at most {self.per_client} per client); "
                    "wait for some to finish"
                )
            held = sum(j.nbytes for q in self._waiting.values() for j in q)
            if self.max_bytes is not None and waiting and held + job.nbytes > self.max_bytes:
                raise QueueFull(
                    f"the queue holds {held / 2**30:.1f} GiB of images already; try again when it has drained"
                )
            if job.owner not in self._waiting:
                self._waiting[job.owner] = deque()
                self._rotation.append(job.owner)
            self._waiting[job.owner].append(job)
            self.generation += 1  # a newcomer may go ahead of a long batch: positions move
            self._cond.notify()
            return self._position_of(job)

    def find(self, job_id: str) -> Job | None:
        with self._cond:
            return next((j for j in [*self._running, *self._schedule()] if j.job_id == job_id), None)

    def remove_waiting(self, job: Job) -> bool:
        """Take a queued job out before it runs; False if it already started."""
        with self._cond:
            mine = self._waiting.get(job.owner)
            if mine is None or job not in mine:
                return False
            mine.remove(job)
            if not mine:
                del self._waiting[job.owner]
                self._rotation.remove(job.owner)
            self.generation += 1
            return True

    def positions(self) -> list[tuple[Job, int]]:
        """Every waiting job with the number of jobs that will start before it."""
        with self._cond:
            ahead = len(self._running)
            return [(job, i + ahead) for i, job in enumerate(self._schedule())]

    # -- worker ------------------------------------------------------------------------------
    def take(self, timeout: float) -> Job | None:
        """The next job in round-robin order (now running), or None after ``timeout`` seconds."""
        with self._cond:
            if not self._rotation:
                self._cond.wait(timeout)
            if not self._rotation:
                return None
            owner = self._rotation.popleft()
            mine = self._waiting[owner]
            job = mine.popleft()
            self._running.append(job)
            if mine:
                self._rotation.append(owner)  # back of the line: everyone else goes first
            else:
                del self._waiting[owner]
            self.generation += 1
            return job

    def done(self, job: Job) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
                self.completed += 1
                self.generation += 1

    @property
    def running(self) -> list[Job]:
        """The jobs running now, oldest first."""
        with self._cond:
            return list(self._running)

    # -- both --------------------------------------------------------------------------------
    def jobs_of(self, peer: bytes) -> list[Job]:
        return [j for j in self.jobs_of_all() if j.peer == peer]

    def jobs_of_all(self) -> list[Job]:
        with self._cond:
            return [*self._running, *self._schedule()]

    def snapshot(self, viewer: str | None = None) -> dict[str, Any]:
        """Running and waiting jobs for ``status``; with ``viewer`` set, only that owner's jobs are
        described and the others only counted (a client may not see what others are working on)."""
        with self._cond:
            jobs = self._schedule()

            def visible(job: Job) -> bool:
                return viewer is None or job.owner == viewer

            running = [j.summary(viewer is None) for j in self._running if visible(j)]
            return {
                # The oldest running job (what a single-engine backend runs), then all of them.
                "running": running[0] if running else None,
                "running_all": running,
                "busy": bool(self._running),
                "waiting": [j.summary(viewer is None) for j in jobs if visible(j)],
                "waiting_total": len(jobs),
                "completed": self.completed,
            }

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- inside the lock ---------------------------------------------------------------------
    def _count(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def _schedule(self) -> list[Job]:
        """Waiting jobs in the order they will run if nothing else arrives."""
        queues = {owner: list(q) for owner, q in self._waiting.items()}
        rotation = deque(self._rotation)
        order: list[Job] = []
        while rotation:
            owner = rotation.popleft()
            order.append(queues[owner].pop(0))
            if queues[owner]:
                rotation.append(owner)
        return order

    def _position_of(self, job: Job) -> int:
        return self._schedule().index(job) + len(self._running)
