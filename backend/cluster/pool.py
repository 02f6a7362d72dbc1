"""The Ray side of the pool: engine replicas, the affinity router, the pool board.

- :class:`EngineReplica` is a Ray Serve deployment; each replica owns one engine (a
  :class:`~.executor.LocalExecutor`) on one GPU (or a CPU slot) and streams each job's events.
  The resident engine and preset are Serve's *multiplexed model id* (``engine/preset``), so
  Serve knows which replica holds what.
- :class:`AffinityRouter` is the deployment's request router: a job goes to a free replica that
  already holds its preset; a replica holding nothing is the next best; only after waiting
  ``affinity_wait_s`` does a job take a replica that must swap its model. Serve's own
  multiplexing router gives up on a busy holder at once, which thrashes loads with mixed presets.
- :class:`PoolBoard` is a tiny actor the replicas report their state to (node, device, preset,
  busy), which ``status`` shows; entries not refreshed for a few seconds are gone replicas.

Imported only by the Ray executor and by replicas: this module imports Ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve
from ray.serve.request_router import FIFOMixin, MultiplexMixin, PendingRequest, RequestRouter, RunningReplica

from ...shared.protocol import ErrorCode
from ..engines import ENGINES
from ..errors import Cancelled, TouchupError
from ..pipeline.refine import JobProgressFn, RefineJob, RefineOutcome, VariantFn
from .events import Event, Failed, Finished, Progress, VariantDone, WasCancelled
from .executor import LocalExecutor
from .shipping import ShippedJob, ShippedOutcome, run_parts

if TYPE_CHECKING:
    import numpy as np

    from ..pipeline.refine import RefineJob, RefineOutcome


log = logging.getLogger("touchup.cluster")

NAMESPACE = "touchup"
APP_NAME = "touchup"
DEPLOYMENT_NAME = "touchup-engine"
BOARD_NAME = "touchup-pool-board"
#: Replicas report at least this often; the board forgets one silent for 3 periods.
HEARTBEAT_S = 1.0


def model_key(engine: str, preset: str) -> str:
    """Serve's multiplexed model id for an engine with a preset."""
    return f"{engine}/{preset}"


def split_key(key: str) -> tuple[str, str]:
    engine, _, preset = key.partition("/")
    return engine, preset


@ray.remote(num_cpus=0)
class PoolBoard:
    """Last reported state of every replica (for ``status``; routing never depends on it)."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}

    def put(self, info: dict[str, Any]) -> None:
        self._entries[info["replica"]] = {**info, "seen": time.time()}

    def drop(self, replica: str) -> None:
        self._entries.pop(replica, None)

    def all(self) -> list[dict[str, Any]]:
        now = time.time()
        for key in [k for k, e in self._entries.items() if now - e["seen"] > 3 * HEARTBEAT_S]:
            del self._entries[key]
        return sorted(self._entries.values(), key=lambda e: e["replica"])


class AffinityRouter(FIFOMixin, MultiplexMixin, RequestRouter):
    """Keeps presets resident: free holder first, then an empty replica, then (late) any.

    A free replica whose preset nobody asked for within ``affinity_wait_s`` is as good as an
    empty one (a stream of one preset then uses every replica). When a replica must swap its
    model, the one used longest ago is taken first, so the presets in use stay where they are.
    """

    def initialize_state(self, affinity_wait_s: float = 20.0, **_: Any) -> None:
        self.affinity_wait_s = float(affinity_wait_s)
        self._last_used: dict[Any, float] = {}
        self._wanted: dict[str, float] = {}  # model id -> when a job last asked for it

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if pending_request is None or not pending_request.metadata.multiplexed_model_id:
            return [candidate_replicas]
        now = time.time()
        key = pending_request.metadata.multiplexed_model_id
        self._wanted[key] = now
        holders = [r for r in candidate_replicas if key in r.multiplexed_model_ids]
        empty = [r for r in candidate_replicas if not r.multiplexed_model_ids]
        others = [r for r in candidate_replicas if r not in holders and r not in empty]
        stale = [
            r
            for r in others
            if all(now - self._wanted.get(m, 0.0) > self.affinity_wait_s for m in r.multiplexed_model_ids)
        ]
        # Rank lists are tried in order; a rank whose replicas are all busy is skipped, and when
        # every rank is busy the router backs off and asks again.
        pending_request.routing_context.should_backoff = True
        if holders and now - pending_request.created_at < self.affinity_wait_s:
            return [holders, empty, stale]
        others.sort(key=lambda r: self._last_used.get(r.replica_id, 0.0))
        return [holders, empty, *([r] for r in others)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: Any, result: Any) -> None:
        self._last_used[replica_id] = time.time()


class _Resident:
    """What Serve's multiplexer keeps per model id: a marker (the executor holds the engine)."""

    def __init__(self, key: str) -> None:
        self.key = key


class EngineReplica:
    """One engine on one device; runs a job at a time and streams its events."""

    def __init__(
        self, engine_table: dict[str, str], engine_options: dict[str, dict[str, Any]], board: str
    ) -> None:
        # The front's engine table, so engines registered there (tests, benchmarks) exist here.
        ENGINES.update(engine_table)
        self._executor = LocalExecutor(lambda name: dict(engine_options.get(name, {})))
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._board_name = board
        self._board: Any = None
        self._busy_since: float | None = None
        self.jobs = 0
        self.loads = 0
        self._info = {
            "replica": self.replica,
            "node": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "device": _device(),
        }
        self._stop = threading.Event()
        threading.Thread(target=self._heartbeat, name="touchup-replica-heartbeat", daemon=True).start()

    # -- Serve entry points ------------------------------------------------------------------
    @serve.multiplexed(max_num_models_per_replica=1)  # type: ignore[untyped-decorator]
    async def _resident(self, key: str) -> _Resident:
        engine, preset = split_key(key)
        await asyncio.to_thread(self._executor.load, engine, preset or None)
        self.loads += 1
        self._report()
        return _Resident(key)

    async def run(self, shipped: ShippedJob) -> AsyncIterator[Event]:
        """Stream the job's events: progress per step, each variant as it is done, then
        Finished, Failed or WasCancelled."""
        key = serve.get_multiplexed_model_id()
        started = time.perf_counter()
        self._busy_since = time.time()
        self._report()
        cancel = threading.Event()
        try:
            if key and key != _current_key(self._executor):
                yield Progress("loading", 0, 1)
            if key:
                try:
                    await self._resident(key)
                except TouchupError as exc:
                    yield Failed(exc.code, exc.message, exc.detail)
                    return
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[Progress | VariantDone | None] = asyncio.Queue()

            def on_progress(
                stage: str, step: int, total: int, preview: np.ndarray | None = None, variant: int = 0
            ) -> None:
                loop.call_soon_threadsafe(events.put_nowait, Progress(stage, step, total, preview, variant))

            def on_variant(index: int, outcomes: list[ShippedOutcome]) -> None:
                done_event = VariantDone(index, outcomes, self.replica, self.loads)
                loop.call_soon_threadsafe(events.put_nowait, done_event)

            done = loop.run_in_executor(
                None, self._run_blocking, shipped, on_progress, cancel.is_set, on_variant
            )
            done.add_done_callback(lambda _f: events.put_nowait(None))
            try:
                while (event := await events.get()) is not None:
                    yield event
            except asyncio.CancelledError:
                # The front cancelled (Serve cancels this task): stop the engine at its next
                # check and keep the replica busy until it has really stopped.
                cancel.set()
                with suppress(BaseException):
                    await asyncio.shield(done)
                raise
            while not events.empty():
                if (event := events.get_nowait()) is not None:
                    yield event
            ending = done.result()
            if isinstance(ending, Finished):
                ending.seconds = round(time.perf_counter() - started, 4)
            yield ending
        finally:
            self._busy_since = None
            self._report()

    def _run_blocking(
        self,
        shipped: ShippedJob,
        on_progress: JobProgressFn,
        is_cancelled: Callable[[], bool],
        on_variant: Callable[[int, list[ShippedOutcome]], None],
    ) -> Finished | Failed | WasCancelled:
        def run(work: RefineJob, report: JobProgressFn, deliver: VariantFn) -> list[RefineOutcome]:
            return self._executor.run(work, shipped.engine, shipped.preset, report, is_cancelled, deliver)

        try:
            run_parts(shipped.parts, run, on_progress, on_variant)
        except Cancelled:
            return WasCancelled()
        except TouchupError as exc:
            return Failed(exc.code, exc.message, exc.detail)
        except MemoryError:
            return Failed(
                ErrorCode.OUT_OF_MEMORY, f"replica {self.replica} ran out of memory for this region"
            )
        except Exception as exc:
            log.exception("job crashed on replica %s", self.replica)
            return Failed(ErrorCode.ENGINE_FAILED, f"the engine failed: {exc}", traceback.format_exc(limit=5))
        self.jobs += 1
        return Finished(self.replica, self.loads, 0.0)

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising marks the replica unhealthy (restarted)."""

    def __del__(self) -> None:
        self._stop.set()

    # -- the board ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        ex = self._executor
        return {
            **self._info,
            "engine": ex.engine_name,
            "preset": ex.engine_preset,
            "busy": self._busy_since is not None,
            "busy_s": round(time.time() - self._busy_since, 1) if self._busy_since else 0.0,
            "jobs": self.jobs,
            "loads": self.loads,
        }

    def _report(self) -> None:
        try:
            if self._board is None:
                self._board = ray.get_actor(self._board_name, namespace=NAMESPACE)
            self._board.put.remote(self._state())
        except Exception:  # no board (the front restarts): status only, never a job's concern
            self._board = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._report()


#: The deployment. The class stays importable under its own name, so Ray ships it by reference
#: (by value, its module globals -- the engine table -- would be copies).
ENGINE_DEPLOYMENT = serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=1,  # one engine, one job at a time: the router queues the rest
    health_check_period_s=2.0,
    health_check_timeout_s=10.0,
    graceful_shutdown_timeout_s=5.0,
    graceful_shutdown_wait_loop_s=0.5,
)(EngineReplica)


def _current_key(executor: LocalExecutor) -> str | None:
    if executor.engine_name is None or executor.engine_preset is None:
        return None
    return model_key(executor.engine_name, executor.engine_preset)


def _device() -> str:
    """This replica's device in words: its GPU(s) as Ray assigned them, else the CPU."""
    gpus = ray.get_gpu_ids()
    if not gpus:
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    except Exception:
        pass
    return f"gpu {','.join(str(g) for g in gpus)}"
