"""``touchup bench cluster``: throughput and latency of a Ray Serve pool, by pool size.

For each pool size a real front (``serve --cluster``) is started in this process, every replica
is warmed up with the job's preset, then ``--jobs`` jobs are submitted at once from
``--clients`` clients over ZeroMQ. Printed: jobs per second, latency percentiles (submit to
result, queueing included) and the speed-up over the first pool size. The default engine is
the sleep-bound test engine, so the figures show what the pool's scheduling achieves even on
a small machine; ``--engine classic`` measures the CPU engine (bounded by the cores).

It also prints what a job ships to its replica for a few selection sizes: the context tile
the plugins send, that tile trimmed to its focus regions (what the front ships), and the
upsampled float32 crops an engine works on (the alternative: cropping on the front).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import threading
import time
from typing import Any

import numpy as np

from ...shared.client import Client, refine_request
from ...shared.geometry import Rect, context_tile, scaled_margin
from ..pipeline.imaging import array_to_frame


def register_cluster(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="throughput and latency of a Ray Serve pool by pool size")
    p.add_argument("--replicas", default="1,2", help="pool sizes to compare, comma-separated")
    p.add_argument("--cluster", default="local", help="'local' (a Ray cluster started here) or a Ray address")
    p.add_argument("--engine", default="slow-test", help="slow-test (sleep-bound, default) or classic")
    p.add_argument("--jobs", type=int, default=12, help="jobs per pool size")
    p.add_argument("--clients", type=int, default=3, help="clients submitting at once")
    p.add_argument("--steps", type=int, default=5, help="slow-test: steps per job")
    p.add_argument("--step-s", type=float, default=0.2, help="slow-test: seconds per step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import ray
    except ModuleNotFoundError:
        print("touchup bench cluster: needs the 'cluster' extra (pip install 'touchup[cluster]')")
        return 2
    from ..cluster.local_ray import is_loopback, loopback_only, start_local_ray
    from .bench_engines import register_slow_engine

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the figures, not Serve's chatter
    sizes = [int(n) for n in args.replicas.split(",") if n.strip()]
    register_slow_engine()
    if args.cluster == "local":
        start_local_ray(num_cpus=max(sizes), object_store_mb=128)
    else:
        if is_loopback(args.cluster):
            loopback_only()
        ray.init(
            address=args.cluster, namespace="touchup", log_to_driver=False, logging_level=logging.WARNING
        )

    try:
        print(f"engine {args.engine}, {args.jobs} jobs from {args.clients} clients at once per pool size")
        print(f"{'replicas':>8} {'jobs/s':>8} {'p50 s':>7} {'p90 s':>7} {'max s':>7} {'speed-up':>9}")
        base = None
        for n in sizes:
            rate, latencies = _measure(args, n)
            base = base or rate
            q = statistics.quantiles(latencies, n=10)
            print(
                f"{n:>8} {rate:>8.2f} {statistics.median(latencies):>7.2f} {q[-1]:>7.2f} "
                f"{max(latencies):>7.2f} {rate / base:>8.2f}x"
            )
    finally:
        ray.shutdown()
    print()
    _print_shipping()
    return 0


def _job(engine: str, steps: int, seed: int) -> tuple[dict[str, Any], list]:
    rng = np.random.default_rng(seed)
    tile = (rng.random((96, 128, 4)) * 255).astype(np.uint8)
    tile[:, :, 3] = 255
    mask = np.zeros((96, 128), np.uint8)
    mask[24:72, 32:96] = 255
    preset = "a" if engine == "slow-test" else None
    params = {"steps": steps} if engine == "slow-test" else {}
    return refine_request(
        array_to_frame(tile, "source"),
        array_to_frame(mask, "mask"),
        origin=(0, 0),
        doc_size=(1024, 1024),
        engine=engine,
        preset=preset,
        params=params,
    )


def _measure(args: argparse.Namespace, replicas: int) -> tuple[float, list[float]]:
    from ..cluster.ray_executor import RayExecutor
    from ..config import Config
    from ..server import Server

    endpoint = _free_endpoint()
    config = Config(
        endpoint=endpoint,
        engine="classic",
        cluster=args.cluster,
        replicas=replicas,
        log_file=None,
        engines={"slow-test": {"step_s": args.step_s, "load_s": 0.3}},
    )
    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not server.ready.wait(300):
        raise RuntimeError("the front did not start")
    assert isinstance(server.executor, RayExecutor)
    try:
        while len(server.executor.status()["pool"]["replicas"]) < replicas:
            time.sleep(0.2)
        _run_jobs(endpoint, [_job(args.engine, 1, i) for i in range(replicas)], replicas)  # warm-up
        jobs = [_job(args.engine, args.steps, i) for i in range(args.jobs)]
        start = time.monotonic()
        latencies = _run_jobs(endpoint, jobs, args.clients)
        return len(jobs) / (time.monotonic() - start), latencies
    finally:
        server.stop()
        thread.join(60)


def _run_jobs(endpoint: str, jobs: list, clients: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop(k: int) -> None:
        with Client(endpoint, name=f"bench{k}") as c:
            mine = jobs[k::clients]
            sent = [(time.monotonic(), c.submit(*job)) for job in mine]
            for t0, req in sent:
                c.wait(req, timeout=600)
                with lock:
                    latencies.append(time.monotonic() - t0)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(latencies) != len(jobs):
        raise RuntimeError("some jobs failed")
    return latencies


def _print_shipping() -> None:
    """Bytes a job ships: context tile vs trimmed tile vs upsampled float32 crops."""
    from ..cluster.shipping import cut
    from ..engines import engine_class
    from ..pipeline.focus import plan_regions
    from ..pipeline.refine import RefineJob

    presets = {"classic": engine_class("classic")().preset(None)}
    with contextlib.suppress(Exception):  # the diffusion engines' module may be absent
        presets["qwen-edit"] = engine_class("qwen-edit")().preset(None)
    canvas = 4096
    print("what one job ships to a replica (RGBA u8 canvas 4096x4096, default context):")
    print(f"{'selection':>18} {'engine':>10} {'tile (sent)':>12} {'cut':>10} {'upsampled crops':>16}")
    for label, islands in (
        ("64x64", [Rect(2000, 2000, 64, 64)]),
        ("512x512", [Rect(1800, 1800, 512, 512)]),
        ("two 64x64, apart", [Rect(1000, 1000, 64, 64), Rect(3000, 3000, 64, 64)]),
    ):
        bounds = islands[0]
        for r in islands[1:]:
            bounds = bounds.union(r)
        tile = context_tile(bounds, canvas, canvas)
        mask = np.zeros((tile.height, tile.width), np.float32)
        for r in islands:
            mask[r.y - tile.y : r.y1 - tile.y, r.x - tile.x : r.x1 - tile.x] = 1
        source = np.zeros((tile.height, tile.width, 4), np.uint8)
        for name, preset in presets.items():
            work = RefineJob(source, mask, doc_size=(canvas, canvas))
            parts = cut(work, preset.working)
            margin = scaled_margin(work.params.context, canvas, canvas)
            regions = plan_regions(mask, margin, preset.working)
            upsampled = sum(r.work_width * r.work_height * 4 * 4 for r in regions)  # RGB float + mask
            sent = source.nbytes + mask.size  # u8 mask on the wire
            shipped = sum(p.work.source.nbytes + p.work.mask.size for p in parts)
            print(f"{label:>18} {name:>10} {_mb(sent):>12} {_mb(shipped):>10} {_mb(upsampled):>16}")


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"
