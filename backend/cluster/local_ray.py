"""Starting a Ray cluster on this machine (``--cluster local``, tests, benchmarks).

Small on purpose: no dashboard, a bounded object store (pixels of a few jobs in flight, not a
data lake), logs kept in Ray's session folder instead of the terminal, and every Ray process
listening on the loopback interface only: a cluster of one machine needs no network (Ray's
single-machine mode, which it uses by default on macOS and Windows). Ray gives its node 30 s
to come up and its per-node agent 15 s; on an overloaded machine those can pass, so the
agent gets longer and a failed start is tried again.
"""

from __future__ import annotations

import logging
import os
import uuid

import ray

from .pool import NAMESPACE

log = logging.getLogger("touchup.cluster")


def loopback_only() -> None:
    """Make Ray use 127.0.0.1 as this node's address, so all its servers bind loopback only.

    Ray reads the switch from the environment in the processes it starts, and from its
    constants (at call time) in this one.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def start_local_ray(num_cpus: int, object_store_mb: int | None = None, attempts: int = 3) -> str:
    """Start Ray here (unless it already runs in this process); returns the GCS address."""
    os.environ.setdefault("RAY_agent_register_timeout_ms", "60000")  # read by Ray's node processes
    if not ray.is_initialized():
        loopback_only()
        for attempt in range(1, attempts + 1):
            # Every process Ray starts inherits this mark, so a failed start can be cleaned up.
            mark = os.environ["TOUCHUP_RAY_START"] = uuid.uuid4().hex
            try:
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    object_store_memory=object_store_mb * 1024 * 1024 if object_store_mb else None,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
                break
            except Exception as exc:  # Ray raises a bare Exception when its node is slow to start
                ray.shutdown()
                _end_processes_marked(mark)
                if attempt == attempts:
                    raise
                log.warning("Ray did not start (%s); trying again", exc)
    return str(ray.get_runtime_context().gcs_address)


def _end_processes_marked(mark: str) -> None:
    """End what a failed start left behind (Ray's agents outlive a crashed node manager)."""
    import psutil  # a dependency of Ray

    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get("TOUCHUP_RAY_START") == mark:
                proc.kill()
        except (psutil.Error, OSError):
            continue
