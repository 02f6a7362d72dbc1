"""The front's executor for ``touchup serve --cluster``: jobs run on a Ray Serve pool.

The front (ZeroMQ endpoint, validation, queue) is unchanged; each worker thread hands its job
here. The job's tile is cut to its focus regions, sent to the deployment with the job's
``engine/preset`` as Serve's multiplexed model id (the affinity router picks the replica),
and the replica's events are streamed back as they come. Cancel cancels the Serve request,
which reaches the replica and stops its engine at the next check.

Faults: a replica that dies mid-job is noticed through Ray (the actor is gone) and the job is
sent once more, to another replica; a second loss fails with ``replica_lost``. A cluster that
cannot be reached fails jobs with ``cluster_unavailable`` until it answers again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import DeploymentUnavailableError, RequestCancelledError

from ...shared.protocol import ErrorCode
from ..config import Config
from ..engines import ENGINES, engine_class
from ..engines.base import CancelFn, Engine
from ..errors import BadInput, Cancelled, EngineError, TouchupError
from ..pipeline.refine import JobProgressFn, RefineJob, RefineOutcome, VariantFn
from .events import Failed, Finished, Progress, VariantDone, WasCancelled
from .executor import ClusterError, Executor, parse_autoscale
from .local_ray import is_loopback, loopback_only, start_local_ray
from .pool import APP_NAME, BOARD_NAME, ENGINE_DEPLOYMENT, NAMESPACE, AffinityRouter, PoolBoard, model_key
from .shipping import ShippedJob, cut, unpack_outcome

if TYPE_CHECKING:
    import numpy as np

    from ..engines.base import CancelFn, Engine
    from ..pipeline.refine import RefineJob, RefineOutcome


log = logging.getLogger("touchup.cluster")

#: How often the front refreshes the pool's state for ``status``.
POOL_REFRESH_S = 1.0


class RayExecutor(Executor):
    """Runs jobs on a Ray Serve deployment of :class:`~.pool.EngineReplica`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.address = config.cluster or "local"
        if config.autoscale:
            self.min_replicas, self.max_replicas = parse_autoscale(config.autoscale)
        else:
            if config.replicas < 1:
                raise ValueError(f"--replicas must be at least 1, got {config.replicas}")
            self.min_replicas = self.max_replicas = config.replicas
        # One worker thread per replica that can exist: more jobs than replicas wait in the
        # front's (fair) queue rather than inside Ray, so ``status`` shows them.
        self.slots = self.max_replicas
        self.handle: Any = None
        self._board: Any = None
        self._pool: list[dict[str, Any]] = []
        self._pool_error: str | None = None
        self._running = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._own_cluster = False
        self._engines: dict[str, Engine] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except ClusterError:
            raise
        except Exception as exc:
            raise ClusterError(f"cannot start the pool on the Ray cluster at {self.address}: {exc}") from exc

    def _start(self) -> None:
        if not ray.is_initialized():
            if self.address == "local":
                start_local_ray(num_cpus=max(os.cpu_count() or 1, self.max_replicas))
                self._own_cluster = True
            else:
                if is_loopback(self.address):  # a cluster of this machine, started loopback-only
                    loopback_only()
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        serve.start(proxy_location="Disabled")
        self._board = PoolBoard.options(  # type: ignore[attr-defined]  # a Ray actor class
            name=BOARD_NAME, namespace=NAMESPACE, get_if_exists=True
        ).remote()
        gpus = ray.cluster_resources().get("GPU", 0)
        # One GPU per replica where the cluster has GPUs, else one CPU slot.
        actor_options = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        options: dict[str, Any] = {
            "ray_actor_options": actor_options,
            "request_router_config": RequestRouterConfig(
                request_router_class=AffinityRouter,  # type: ignore[arg-type]  # Ray's pydantic annotations
                request_router_kwargs={"affinity_wait_s": self.config.affinity_wait_s},
                request_routing_stats_period_s=2.0,  # type: ignore[arg-type]
            ),
        }
        if self.config.autoscale:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 1.0,
                "downscale_delay_s": 120.0,
            }
        else:
            options["num_replicas"] = self.max_replicas
        engine_options = {name: self.config.engine_options(name) for name in ENGINES}
        app = ENGINE_DEPLOYMENT.options(**options).bind(dict(ENGINES), engine_options, BOARD_NAME)
        log.info(
            "deploying %s engine replica(s) on the Ray cluster at %s (%s GPU(s))",
            self.config.autoscale or self.max_replicas,
            self.address,
            int(gpus),
        )
        self.handle = serve.run(app, name=APP_NAME, route_prefix=None)
        threading.Thread(target=self._watch_pool, name="touchup-pool-status", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        try:
            serve.delete(APP_NAME)
        except Exception as exc:
            log.info("could not remove the pool's deployment: %s", exc)
        if self._own_cluster:
            serve.shutdown()
            ray.shutdown()

    # -- jobs --------------------------------------------------------------------------------
    def run(
        self,
        work: RefineJob,
        engine: str,
        preset: str | None,
        on_progress: JobProgressFn,
        is_cancelled: CancelFn,
        on_variant: VariantFn | None = None,
    ) -> list[RefineOutcome]:
        try:
            spec = self._engine(engine).preset(preset)
        except KeyError:
            raise BadInput(f"engine {engine!r} has no preset {preset!r}", ErrorCode.UNKNOWN_PRESET) from None
        shipped = ShippedJob(cut(work, spec.working), engine, preset)
        key = model_key(engine, spec.name)
        # Variants already handed on stay handed on: a retry on another replica recomputes them
        # (same seeds, same pixels) but does not send them twice.
        delivered: dict[int, RefineOutcome] = {}
        with self._lock:
            self._running += 1
        try:
            for attempt in (1, 2):
                try:
                    return self._stream(
                        shipped, key, work.source, on_progress, is_cancelled, on_variant, delivered
                    )
                except _ReplicaLost as lost:
                    if attempt == 2:
                        raise TouchupError(
                            "the pool lost the replica running this job twice; try again",
                            ErrorCode.REPLICA_LOST,
                            str(lost),
                        ) from None
                    log.warning("replica lost mid-job (%s); retrying on another replica", lost)
                    on_progress("retry", 1, 1, None, len(delivered))
            raise AssertionError("unreachable")
        finally:
            with self._lock:
                self._running -= 1

    def _stream(
        self,
        shipped: ShippedJob,
        key: str,
        source: np.ndarray,
        on_progress: JobProgressFn,
        is_cancelled: CancelFn,
        on_variant: VariantFn | None,
        delivered: dict[int, RefineOutcome],
    ) -> list[RefineOutcome]:
        if self.handle is None:
            raise TouchupError("the pool is not started", ErrorCode.CLUSTER_UNAVAILABLE)
        try:
            response = self.handle.options(stream=True, multiplexed_model_id=key).run.remote(shipped)
        except RayError as exc:
            raise TouchupError(
                f"the Ray cluster at {self.address} is unavailable", ErrorCode.CLUSTER_UNAVAILABLE, str(exc)
            ) from None
        finished = threading.Event()
        watcher = threading.Thread(
            target=_cancel_when, args=(is_cancelled, finished, response.cancel), daemon=True
        )
        watcher.start()
        try:
            for event in response:
                if isinstance(event, Progress):
                    on_progress(event.stage, event.step, event.total, event.preview, event.variant)
                elif isinstance(event, VariantDone):
                    if event.index in delivered:
                        continue
                    outcome = unpack_outcome(event.outcomes, shipped.parts, source)
                    outcome.meta["replica"] = event.replica
                    outcome.meta["replica_loads"] = event.loads
                    outcome.meta["shipped_bytes"] = shipped.nbytes()
                    delivered[event.index] = outcome
                    if on_variant is not None:
                        on_variant(outcome)
                elif isinstance(event, Finished):
                    outcomes = [delivered[i] for i in sorted(delivered)]
                    if not outcomes:
                        raise EngineError("the replica ended the job without a result")
                    for outcome in outcomes:
                        outcome.timings["replica"] = event.seconds
                    return outcomes
                elif isinstance(event, Failed):
                    raise TouchupError(event.message, event.code, event.detail)
                elif isinstance(event, WasCancelled):
                    raise Cancelled()
            raise EngineError("the replica ended the job without a result")
        except (RequestCancelledError, ray.exceptions.TaskCancelledError):
            raise Cancelled() from None
        except RayActorError as exc:
            if is_cancelled():
                raise Cancelled() from None
            raise _ReplicaLost(str(exc).splitlines()[0]) from None
        except RayTaskError as exc:
            raise EngineError(f"the replica failed: {exc.cause if exc.cause else exc}", str(exc)) from None
        except (DeploymentUnavailableError, GetTimeoutError, RayError) as exc:
            raise TouchupError(
                f"the Ray cluster at {self.address} is unavailable", ErrorCode.CLUSTER_UNAVAILABLE, str(exc)
            ) from None
        finally:
            finished.set()

    def _engine(self, name: str) -> Engine:
        """An engine object for its presets' working sizes (never loaded on the front)."""
        if name not in self._engines:
            try:
                self._engines[name] = engine_class(name)(self.config.engine_options(name))
            except KeyError:
                raise BadInput(f"unknown engine {name!r}", ErrorCode.UNKNOWN_ENGINE) from None
        return self._engines[name]

    def request_unload(self) -> None:
        log.info("unload is not forwarded to pool replicas: they keep their presets resident")

    # -- status ------------------------------------------------------------------------------
    def _watch_pool(self) -> None:
        while not self._stop.wait(POOL_REFRESH_S):
            try:
                self._pool = ray.get(self._board.all.remote(), timeout=5)
                self._pool_error = None
            except Exception as exc:
                self._pool_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def status(self) -> dict[str, Any]:
        pool = list(self._pool)
        busy = sum(1 for r in pool if r.get("busy"))
        return {
            "state": "busy" if self._running else "idle",
            "engine": None,
            "preset": None,
            "pool": {
                "cluster": self.address,
                "replicas": [{k: v for k, v in r.items() if k != "seen"} for r in pool],
                "target": self.config.autoscale or self.max_replicas,
                "busy": busy,
                "idle": len(pool) - busy,
                "jobs_in_flight": self._running,
                "error": self._pool_error,
            },
        }


class _ReplicaLost(Exception):
    """The replica running a job went away (the job may be retried)."""


def _cancel_when(is_cancelled: CancelFn, finished: threading.Event, cancel: Callable[[], object]) -> None:
    """Cancel the Serve request once the user cancels (polled: the worker thread is blocked
    reading the stream)."""
    while not finished.wait(0.1):
        if is_cancelled():
            cancel()
            return
