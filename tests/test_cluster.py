"""``touchup serve --cluster``: the same ZeroMQ front, jobs on a Ray Serve pool of replicas.

A small Ray cluster runs on this machine for the module (CPU only: two logical CPU slots, no
dashboard, a small object store); each front is a real ``touchup serve --cluster ADDRESS``
process joining it, with the slow test engine registered the way tests and benchmarks do.
Replica processes are real Ray actors: the fault test kills one with SIGKILL.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from conftest import free_endpoint

from touchup.backend.cluster.executor import LocalExecutor
from touchup.backend.cluster.local_ray import start_local_ray
from touchup.backend.cluster.shipping import cut, run_parts, unpack_outcome
from touchup.backend.engines import create_engine
from touchup.backend.engines.base import RefineParams
from touchup.backend.pipeline.imaging import array_to_frame, frame_to_array, mask_to_float
from touchup.backend.pipeline.refine import RefineJob, run_refine
from touchup.shared.client import BackendError, Client, refine_request
from touchup.shared.protocol import ErrorCode, Kind

STEP_S = 0.2  # the slow engine's sleep per step in these tests
LOAD_S = 0.3


# -- inputs ------------------------------------------------------------------------------------


def make_tile(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A textured RGBA tile (smooth gradients plus noise, so the classic engine has work)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], axis=2) % 256
    tile = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return np.dstack([tile, np.full((h, w), 255, np.uint8)])


def make_mask(h: int = 96, w: int = 128) -> np.ndarray:
    """Two islands: a box and a disc (close enough to share one focus region)."""
    mask = np.zeros((h, w), np.uint8)
    mask[20:44, 16:48] = 255
    yy, xx = np.mgrid[0:h, 0:w]
    mask[(yy - 66) ** 2 + (xx - 96) ** 2 < 12**2] = 255
    return mask


ORIGIN, DOC = (300, 200), (1600, 1200)


def request(source, mask, **kw):
    return refine_request(
        array_to_frame(source, "source"), array_to_frame(mask, "mask"), origin=ORIGIN, doc_size=DOC, **kw
    )


def placed(result, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The result layer placed on a transparent canvas of the tile's size, and its region mask."""
    layer = frame_to_array(result.frame("result"))
    ox, oy = result.header["origin"]
    x, y = ox - ORIGIN[0], oy - ORIGIN[1]
    canvas = np.zeros((*source.shape[:2], 4), np.uint8)
    canvas[y : y + layer.shape[0], x : x + layer.shape[1]] = layer
    covered = np.zeros(source.shape[:2], bool)
    covered[y : y + layer.shape[0], x : x + layer.shape[1]] = True
    return canvas, covered


def composite(source: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """The document as an editor shows it: the new layer over the source ("normal" blending)."""
    a = canvas[:, :, 3:4].astype(np.float64) / 255
    out = source.astype(np.float64)
    out[:, :, :3] = canvas[:, :, :3] * a + source[:, :, :3] * (1 - a)
    return np.where(a > 0, np.round(out), source).astype(np.uint8)


def local_layer(source: np.ndarray, mask: np.ndarray, engine: str, **params: Any) -> np.ndarray:
    """What the single-process backend computes for the same job (the pool must match it)."""
    job = RefineJob(source.copy(), mask_to_float(mask), params=RefineParams(**params), doc_size=DOC)
    return run_refine(job, create_engine(engine)).layer


# -- the cluster and its fronts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head on this machine for the module, sized for a shared 2-core box."""
    address = start_local_ray(num_cpus=2, object_store_mb=96)
    try:
        yield address
    finally:
        ray.shutdown()


FRONT = textwrap.dedent(
    """
    import sys
    from touchup.backend.engines import register_engine
    from touchup.backend.tools.bench_engines import SEEDED, register_slow_engine
    from touchup.backend.app.cli import main
    register_slow_engine()
    register_engine("seeded", SEEDED)
    sys.exit(main(sys.argv[1:]))
    """
)


class Front:
    """A ``touchup serve --cluster ADDRESS`` process (with the slow test engine registered)."""

    def __init__(self, workdir: Path, address: str, replicas: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.endpoint = free_endpoint()
        self.log_path = workdir / "front.log"
        config = workdir / "config.toml"
        config.write_text(
            'engine = "classic"\naffinity_wait_s = 5.0\n'
            f"[engines.slow-test]\nstep_s = {STEP_S}\nload_s = {LOAD_S}\n"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FRONT,
                "serve",
                "--endpoint",
                self.endpoint,
                "--config",
                str(config),
                "--log-file",
                str(self.log_path),
                "--cluster",
                address,
                "--replicas",
                str(replicas),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "front.stderr", "wb"),  # noqa: SIM115 - the child owns it
        )
        self.stderr_path = workdir / "front.stderr"
        # Generous: starting Ray workers on a busy 2-core machine can take minutes.
        self._wait(lambda: self.pool_size() >= replicas, 300, f"{replicas} replica(s)")

    def client(self, name: str = "test") -> Client:
        return Client(self.endpoint, name=name)

    def status(self) -> dict[str, Any]:
        with self.client("status") as c:
            return c.status()

    def pool(self) -> list[dict[str, Any]]:
        return self.status()["worker"]["pool"]["replicas"]

    def pool_size(self) -> int:
        try:
            return len(self.pool())
        except BackendError:
            return 0

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"front exited with {self.proc.returncode}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"front: no {what} within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        parts = [
            p.read_text(errors="replace")[-4000:] for p in (self.log_path, self.stderr_path) if p.exists()
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def front(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """Two replicas, shared by the tests below the throughput test."""
    proc = Front(tmp_path_factory.mktemp("front2"), ray_address, replicas=2)
    yield proc
    proc.stop()


def run_jobs(front: Front, jobs: list[tuple[dict, list]], clients: int = 3) -> tuple[list, float]:
    """Submit ``jobs`` round-robin from ``clients`` clients at once; results in job order, seconds."""
    results: list[Any] = [None] * len(jobs)
    start = time.monotonic()

    def client_loop(k: int) -> None:
        with front.client(f"c{k}") as c:
            mine = list(range(k, len(jobs), clients))
            ids = {i: c.submit(*jobs[i]) for i in mine}
            for i in mine:
                try:
                    results[i] = c.wait(ids[i], timeout=90)
                except BackendError as exc:
                    results[i] = exc

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results, time.monotonic() - start


def slow_job(preset: str = "a", steps: int = 4, seed: int = 0):
    source = make_tile(seed=seed)
    return request(source, make_mask(), engine="slow-test", preset=preset, params={"steps": steps})


# -- no Ray without --cluster -----------------------------------------------------------------------


def test_plain_backend_never_imports_ray(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, threading
        import numpy as np
        from touchup.backend.config import Config
        from touchup.backend.server import Server
        from touchup.backend.pipeline.imaging import array_to_frame
        from touchup.shared.client import Client, refine_request
        config = Config(endpoint={free_endpoint()!r}, engine="classic", log_file={str(tmp_path / "log")!r})
        server = Server(config)
        threading.Thread(target=server.run, daemon=True).start()
        assert server.ready.wait(60)
        tile = np.full((32, 32, 4), 200, np.uint8)
        mask = np.zeros((32, 32), np.uint8); mask[8:20, 8:20] = 255
        header, frames = refine_request(array_to_frame(tile, "source"), array_to_frame(mask, "mask"), (0, 0), (32, 32))
        with Client(config.endpoint) as c:
            result = c.refine(header, frames, timeout=60)
            status = c.status()
        server.stop()
        print(result.kind, "pool" in status["worker"], "ray" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [Kind.RESULT, "False", "False"]


def test_cluster_flags_need_cluster(tmp_path):
    (tmp_path / "none.toml").write_text("")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "touchup.backend",
            "serve",
            "--replicas",
            "2",
            "--config",
            str(tmp_path / "none.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 2 and "--cluster" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "touchup.backend",
            "serve",
            "--config",
            str(tmp_path / "none.toml"),
            "--endpoint",
            free_endpoint(),
            "--cluster",
            "local",
            "--autoscale",
            "3:1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 2 and "MIN <= MAX" in out.stderr, out.stderr


# -- shipping crops -------------------------------------------------------------------------------


def test_cut_regions_give_the_same_pixels_as_the_whole_tile():
    # A whole image sent as the tile (as a script may): two islands, far from its borders.
    source, mask = make_tile(200, 300, seed=3), np.zeros((200, 300), np.uint8)
    mask[30:50, 40:70] = 255
    mask[140:160, 230:260] = 255
    params = {"context": 16}
    work = RefineJob(source, mask_to_float(mask), params=RefineParams(**params), doc_size=(1000, 800))
    engine = create_engine("classic")
    whole = run_refine(
        RefineJob(source.copy(), work.mask.copy(), params=RefineParams(**params), doc_size=(1000, 800)),
        engine,
    )
    parts = cut(work, engine.preset(None).working)
    assert len(parts) == 2  # one cut per focus region, together a fraction of the tile
    assert sum(p.work.source.nbytes for p in parts) < source.nbytes // 4
    replica = LocalExecutor(lambda name: {})
    events: list[tuple] = []

    def run(part, report, deliver):
        return replica.run(part, "classic", None, report, lambda: False, deliver)

    [shipped] = run_parts(parts, run, lambda *e: events.append(e[:3]))  # one variant
    back = unpack_outcome(shipped, parts, source)
    np.testing.assert_array_equal(back.layer, whole.layer)
    np.testing.assert_array_equal(back.composite, whole.composite)
    assert [r.as_list() for r in back.regions] == [r.as_list() for r in whole.regions]
    assert [r["rect"] for r in back.meta["regions"]] == [r["rect"] for r in whole.meta["regions"]]
    # Progress reads as for the whole tile: region k of n.
    assert ("focus", 2, 2) in events and any(stage == "refine 2/2" for stage, _, _ in events)


# -- the pool ---------------------------------------------------------------------------------------


def test_three_clients_classic_and_slow_on_two_replicas_keep_outside_pixels(front):
    sources = [make_tile(seed=10 + i) for i in range(6)]
    mask = make_mask()
    jobs = []
    for i, source in enumerate(sources):
        if i % 2:
            jobs.append(request(source, mask, engine="slow-test", preset="a", params={"steps": 2}))
        else:
            # A small context: the two islands become two focus regions, shipped as two cuts.
            jobs.append(request(source, mask, engine="classic", params={"context": 8}))
    results, _ = run_jobs(front, jobs, clients=3)
    replicas = set()
    for i, (source, result) in enumerate(zip(sources, results, strict=True)):
        assert not isinstance(result, Exception), result
        canvas, covered = placed(result, source)
        shown = composite(source, canvas)
        outside = mask == 0
        assert (canvas[:, :, 3][outside] == 0).all()
        np.testing.assert_array_equal(shown[outside], source[outside])  # bit-identical outside
        meta = result.header["meta"]
        replicas.add(meta["replica"])
        if i % 2:  # the slow engine inverts: the selection visibly changed
            inside = mask > 0
            assert np.abs(shown[inside][:, :3].astype(int) - source[inside][:, :3]).mean() > 40
        else:  # the classic engine on the pool gives exactly what it gives in one process
            assert len(meta["regions"]) == 2
            expected = local_layer(source, mask, "classic", context=8)
            np.testing.assert_array_equal(canvas[covered], expected[covered])
            assert (expected[:, :, 3][~covered] == 0).all()
    assert len(replicas) == 2  # both replicas did work


def test_progress_arrives_per_step_while_the_job_runs(front):
    events: list[tuple[float, Any]] = []
    with front.client() as c:
        c.refine(*slow_job(steps=5), on_event=lambda m: events.append((time.monotonic(), m)), timeout=60)
    steps = [
        (t, m.header) for t, m in events if m.kind == Kind.PROGRESS and m.header["stage"].startswith("refine")
    ]
    # Five steps (the two islands share one focus region): each step is its own event. The
    # front's probe for vanished clients may repeat the current step, never go back.
    seen = [h["step"] for _, h in steps]
    assert seen == sorted(seen)
    first = {}
    for when, h in steps:
        first.setdefault(h["step"], (when, h))
    assert list(first) == [1, 2, 3, 4, 5]
    assert all(h["total"] == 5 for _, h in steps)
    arrivals = list(first.values())
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert sorted(gaps)[len(gaps) // 2] > STEP_S / 2  # spread over the job, not sent at the end


def test_variants_stream_from_the_pool_each_as_its_seed_alone(front):
    source, mask = make_tile(seed=5), make_mask()
    events: list[Any] = []
    header, frames = request(source, mask, engine="seeded", params={"seed": 9, "variants": 3, "steps": 2})
    with front.client() as c:
        messages = c.refine_variants(header, frames, on_event=events.append, timeout=90)
    assert [(m.kind, m.header["variant"], m.header["seed"]) for m in messages] == [
        (Kind.VARIANT, 0, 9),
        (Kind.VARIANT, 1, 10),
        (Kind.RESULT, 2, 11),
    ]
    for msg in messages:  # the same pixels as the single-process pipeline with that seed alone
        canvas, covered = placed(msg, source)
        expected = local_layer(source, mask, "seeded", seed=msg.header["seed"])
        np.testing.assert_array_equal(canvas[covered], expected[covered])
        assert (expected[:, :, 3][~covered] == 0).all()
    # Each variant went out before the next one's progress: streamed, not held to the end.
    order = [(m.kind, m.header.get("variant")) for m in events if m.kind in (Kind.PROGRESS, Kind.VARIANT)]
    assert order.index((Kind.VARIANT, 0)) < max(i for i, e in enumerate(order) if e == (Kind.PROGRESS, 1))
    assert all(m.header["variants"] == 3 for m in events if m.kind == Kind.PROGRESS)


def test_cancel_reaches_the_replica_and_stops_the_engine(front):
    with front.client() as c:
        req = c.submit(*slow_job(steps=40))  # 2 regions x 40 steps x 0.2 s: 16 s if not stopped
        job, progressed = None, 0
        deadline = time.monotonic() + 30
        while progressed < 2 and time.monotonic() < deadline:
            msg = c.recv(5)
            if msg is not None and msg.kind == Kind.ACCEPTED:
                job = msg.header["job"]
            if msg is not None and msg.kind == Kind.PROGRESS and msg.header["stage"].startswith("refine"):
                progressed += 1
        assert job and progressed == 2
        cancelled_at = time.monotonic()
        c.cancel(job)
        with pytest.raises(BackendError) as err:
            c.wait(req, timeout=10)
        assert err.value.code == ErrorCode.CANCELLED
        assert time.monotonic() - cancelled_at < 3
    # The engine stopped: its replica is idle again long before the job would have ended.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(r["busy"] for r in front.pool()):
        time.sleep(0.2)
    assert not any(r["busy"] for r in front.pool())


def test_affinity_mixed_presets_cause_no_reload_after_warm_up(front):
    # Warm-up: one job of each preset at once -- each lands on a replica of its own.
    warm, _ = run_jobs(front, [slow_job("a", steps=1), slow_job("b", steps=1)], clients=2)
    assert all(r.kind == Kind.RESULT for r in warm)
    time.sleep(1.5)  # the board refreshes every second
    loads_before = {r["replica"]: r["loads"] for r in front.pool()}
    holders = {r["preset"]: r["replica"] for r in front.pool()}
    assert set(holders) == {"a", "b"}
    # A mixed stream, all submitted at once: a, b, a, b, ... Whenever a job's replica is busy
    # the other one is free, yet the job waits for its own preset's replica.
    stream = [slow_job("ab"[i % 2], steps=2, seed=i) for i in range(8)]
    results, _ = run_jobs(front, stream, clients=2)
    assert all(not isinstance(r, Exception) and r.kind == Kind.RESULT for r in results), results
    for i, result in enumerate(results):
        assert result.header["meta"]["replica"] == holders["ab"[i % 2]]
    time.sleep(1.5)  # the board refreshes every second
    assert {r["replica"]: r["loads"] for r in front.pool()} == loads_before


def test_killed_replica_mid_job_completes_elsewhere_and_the_pool_recovers(front):
    with front.client() as c:
        req = c.submit(*slow_job(steps=10))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = c.recv(5)
            if msg is not None and msg.kind == Kind.PROGRESS and msg.header["stage"].startswith("refine"):
                break
        busy = [r for r in front.pool() if r["busy"]]
        while not busy and time.monotonic() < deadline:
            time.sleep(0.2)
            busy = [r for r in front.pool() if r["busy"]]
        (victim,) = busy
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            result = c.wait(req, timeout=10)
        except BackendError as exc:  # the other outcome allowed: a coded error, in time
            assert exc.code in (ErrorCode.REPLICA_LOST, ErrorCode.CLUSTER_UNAVAILABLE), exc
        else:
            assert result.kind == Kind.RESULT
            assert result.header["meta"]["replica"] != victim["replica"]
            print("the killed replica's job completed on", result.header["meta"]["replica"])
        assert time.monotonic() - killed_at < 10
    # The pool recovers: Serve replaces the dead replica, and jobs run on both again.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ids = {r["replica"] for r in front.pool()}
        if len(ids) == 2 and victim["replica"] not in ids:
            break
        time.sleep(0.5)
    assert len(ids) == 2 and victim["replica"] not in ids, front.pool()
    results, _ = run_jobs(front, [slow_job(steps=1) for _ in range(2)], clients=2)
    assert all(not isinstance(r, Exception) and r.kind == Kind.RESULT for r in results), results


def test_status_shows_the_pool(front):
    status = front.status()
    pool = status["worker"]["pool"]
    assert pool["target"] == 2 and len(pool["replicas"]) == 2
    for replica in pool["replicas"]:
        assert replica["node"] and replica["device"] == "cpu" and replica["pid"] > 0
        assert replica["busy"] in (True, False) and "preset" in replica
    assert "waiting" in status["queue"]
    shown = subprocess.run(
        [sys.executable, "-m", "touchup.backend", "status", "--endpoint", front.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "2 replica(s) of 2" in shown.stdout, shown.stdout + shown.stderr
    assert all(r["replica"] in shown.stdout for r in pool["replicas"])


def test_the_cluster_and_the_front_listen_on_loopback_only(front):
    import psutil

    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == "LISTEN" and c.pid in ours]
    assert len(listening) > 5  # Ray's servers, the replicas' and the front's sockets
    assert front.proc.pid in {c.pid for c in listening}
    loopback = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
    # The one exception: Ray Serve binds each replica's inter-deployment gRPC server to all
    # interfaces (hard-coded "[::]:0" in Ray Serve), one socket per replica process.
    wide = [c for c in listening if c.laddr.ip not in loopback]
    assert all(psutil.Process(c.pid).name().startswith("ray::ServeReplica") for c in wide), wide
    assert len({c.pid for c in wide}) == len(wide) <= 2, wide


def test_two_replicas_double_throughput_on_the_sleep_bound_engine(front, ray_address, tmp_path):
    """Last: it measures on the shared 2-replica front, then replaces it with a 1-replica one."""

    def rate(proc: Front, replicas: int) -> float:
        # Warm-up: every replica holds preset a (loading is not what is measured).
        warm, _ = run_jobs(proc, [slow_job(steps=1) for _ in range(replicas)], clients=replicas)
        assert all(r.kind == Kind.RESULT for r in warm), warm
        results, seconds = run_jobs(proc, [slow_job(steps=5, seed=i) for i in range(6)], clients=3)
        assert all(not isinstance(r, Exception) and r.kind == Kind.RESULT for r in results), results
        return len(results) / seconds

    rates = {2: rate(front, 2)}
    front.stop()
    single = Front(tmp_path / "r1", ray_address, replicas=1)
    try:
        rates[1] = rate(single, 1)
    finally:
        single.stop()
    print(f"jobs/s: 1 replica {rates[1]:.2f}, 2 replicas {rates[2]:.2f} ({rates[2] / rates[1]:.2f}x)")
    assert rates[2] >= 1.7 * rates[1], rates
