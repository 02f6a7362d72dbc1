"""Nothing a client sends stops the backend, and no client can crowd out the others.

Each test reproduces one way a client could stop work or starve others (a hostile field, an
oversized frame, a ping flood, a vanished client, a restart, a long batch) and checks what a
user would notice: an error carrying the request id, other jobs still finishing, a prompt place
in the queue. Most talk to a real ``touchup serve`` process; the few that need to reach inside
(a worker that dies, a peer that is not trusted) run the same server in this process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_endpoint
from test_server import make_tile, raw_send, request

from touchup.backend.config import Config
from touchup.backend.server import Server, endpoint
from touchup.backend.server.queue import Job, JobQueue
from touchup.backend.tools.bench_engines import IDENTITY
from touchup.shared.client import BackendError, Client
from touchup.shared.protocol import ErrorCode, Kind

SLOW = {"engine": "identity", "engines": {"identity": {"delay": 0.1}}}


def refine_parts(req_id: str, **over) -> list[bytes]:
    """A small valid refine, as raw parts, with header fields overridden."""
    src = {"role": "source", "width": 8, "height": 8, "channels": 4, "dtype": "u8"}
    mask = {"role": "mask", "width": 8, "height": 8, "channels": 1, "dtype": "u8"}
    header = {"kind": "refine", "v": [1, 0], "id": req_id, "engine": "identity", "frames": [src, mask]}
    header.update(over)
    return [msgpack.packb(header), bytes(256), b"\xff" * 64]


# -- one message must not stop all work ----------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"origin": [2**64 - 1, 0]}, {"doc_size": [2**64 - 1, 2**64 - 1], "params": {"context": 4096}}],
    ids=["origin", "doc_size"],
)
def test_out_of_range_coordinates_are_refused_and_work_goes_on(backend_factory, fields):
    proc = backend_factory(engine="identity")
    reply = raw_send(proc.endpoint, refine_parts("hostile", **fields))
    assert reply["kind"] == "error" and reply["code"] == ErrorCode.BAD_PARAMS and reply["id"] == "hostile"
    with proc.client() as c:  # the worker still runs jobs (it used to die on this input)
        assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT
        assert c.status()["worker"]["restarts"] == 0


MALFORMED_FIELDS = {
    "engine list": {"engine": ["classic"]},
    "engine map": {"engine": {"a": 1}},
    "preset list": {"preset": ["x"]},
    "preset map": {"preset": {"a": 1}},
    "dtype list": {"frames": [{"role": "source", "width": 8, "height": 8, "channels": 4, "dtype": ["u8"]},
                              {"role": "mask", "width": 8, "height": 8, "channels": 1}]},
    "order list": {"frames": [{"role": "source", "width": 8, "height": 8, "channels": 4, "order": ["RGBA"]},
                              {"role": "mask", "width": 8, "height": 8, "channels": 1}]},
    "v map": {"v": {}},
    "v inf": {"v": [float("inf")]},
    "params list": {"params": [1, 2]},
    "prompt megabyte": {"prompt": "x" * 1_000_000},
}  # fmt: skip


def test_malformed_fields_are_answered_with_the_request_id(backend_factory):
    proc = backend_factory(engine="identity")
    for name, fields in MALFORMED_FIELDS.items():
        reply = raw_send(proc.endpoint, refine_parts(f"id-{name}", **fields))
        assert reply is not None, name
        assert reply["kind"] == "error" and reply["id"] == f"id-{name}", (name, reply)
        assert reply["code"] != ErrorCode.INTERNAL, (name, reply)
        assert len(reply["message"]) < 300, name
    with proc.client() as c:
        assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT


def test_a_megabyte_engine_name_is_refused_in_one_short_line(backend_factory):
    proc = backend_factory(engine="identity")
    reply = raw_send(proc.endpoint, refine_parts("long", engine="e" * 1_000_000))
    assert reply["code"] == ErrorCode.BAD_PARAMS and len(reply["message"]) < 300
    time.sleep(0.3)
    assert max(len(line) for line in proc.log().splitlines()) < 2000


def test_an_oversized_frame_is_dropped_before_it_is_read(backend_factory):
    proc = backend_factory(engine="identity", max_pixels=64 * 64)
    with proc.client() as c:
        limit = c.hello()["capabilities"]["limits"]["max_message_bytes"]
    assert limit < 2 << 20  # derived from max_pixels, not a fixed size
    ping = msgpack.packb({"kind": "ping", "v": [1, 0], "id": "big", "frames": [{}]})
    # Over the limit: ZeroMQ drops the connection instead of reading the frame into memory.
    assert raw_send(proc.endpoint, [ping, bytes(4 * limit)], timeout=2) is None
    with proc.client() as c:
        assert c.ping(timeout=2) < 2


def test_a_ping_flood_does_not_starve_another_clients_results(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 0.05}})
    job = request(engine="identity", params={"steps": 4})

    def latency() -> float:
        with proc.client() as c:
            t0 = time.perf_counter()
            c.refine(*job, timeout=60)
            return time.perf_counter() - t0

    quiet = min(latency() for _ in range(2))
    stop = threading.Event()

    def flood() -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.connect(proc.endpoint)
        ping = msgpack.packb({"kind": "ping", "v": [1, 0], "id": 1})
        while not stop.is_set():
            for _ in range(200):
                with contextlib.suppress(zmq.Again):
                    sock.send(ping, zmq.NOBLOCK)
            with contextlib.suppress(zmq.Again):
                while True:
                    sock.recv(zmq.NOBLOCK)
        sock.close(0)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(0.5)
        loaded = latency()
    finally:
        stop.set()
        flooder.join(5)
    print(f"job latency: {quiet:.3f} s quiet, {loaded:.3f} s under a ping flood ({loaded / quiet:.1f}x)")
    assert loaded < 4 * quiet + 1.0


# -- fair scheduling -----------------------------------------------------------------------------


def test_round_robin_a_single_job_overtakes_a_long_batch(backend_factory):
    proc = backend_factory(max_queue=64, max_queue_per_client=32, **SLOW)
    a, b = proc.client("a"), proc.client("b")
    try:
        a_ids = [a.submit(*request(engine="identity", params={"steps": 2})) for _ in range(20)]
        accepted_a = 0
        while accepted_a < 20:  # all of A's batch is queued before B asks
            msg = a.recv(10)
            assert msg is not None
            accepted_a += msg.kind == Kind.ACCEPTED
        b_id = b.submit(*request(engine="identity", params={"steps": 2}))
        order: list[str] = []
        b_position = None
        deadline = time.monotonic() + 120
        while b_id not in order and time.monotonic() < deadline:
            for client, who in ((a, "a"), (b, "b")):
                msg = client.recv(0.05)
                if msg is None:
                    continue
                if msg.kind == Kind.ACCEPTED and who == "b":
                    b_position = msg.header["position"]
                if msg.kind == Kind.RESULT:
                    order.append(b_id if who == "b" else msg.header["id"])
        assert b_id in order
        # B's job starts within the next two jobs: at most A's running job and one more finish first.
        assert order.index(b_id) <= 2, order
        assert b_position is not None and b_position <= 2
        assert len(a_ids) == 20
    finally:
        a.close()
        b.close()


def test_each_client_has_a_quota_and_others_still_get_in(backend_factory):
    proc = backend_factory(max_queue=32, max_queue_per_client=3, **SLOW)
    with proc.client("a") as a, proc.client("b") as b:
        a.submit(*request(engine="identity", params={"steps": 50}))
        deadline = time.monotonic() + 10
        while a.status()["queue"]["running"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        codes = []
        for _ in range(4):  # one runs; three may wait, the fourth is over the quota
            rid = a.submit(*request(engine="identity", params={"steps": 20}))
            while True:
                msg = a.recv(10)
                if msg.header.get("id") == rid and msg.kind in (Kind.ACCEPTED, Kind.ERROR):
                    codes.append(msg.header.get("code", "accepted"))
                    break
        assert codes == ["accepted"] * 3 + [ErrorCode.QUEUE_FULL]
        rid = b.submit(*request(engine="identity", params={"steps": 1}))
        msg = b.recv(10)
        assert msg.kind == Kind.ACCEPTED and msg.header["id"] == rid


def test_waiting_clients_hear_their_place_in_line(backend_factory):
    proc = backend_factory(**SLOW)
    # The positions told to the last of three jobs only ever go down, ending at 0 (running).
    with proc.client() as c:
        ids = [c.submit(*request(engine="identity", params={"steps": 3})) for _ in range(3)]
        positions: list[int] = []
        c.wait(ids[-1], timeout=60, on_event=lambda m: positions.append(m.header.get("position")))
    assert positions[0] == 2 and positions == sorted(positions, reverse=True) and positions[-1] == 0


def test_fair_queue_order_unit():
    """The schedule itself: A's batch, then B and C arrive; they go right after A's next job."""
    q = JobQueue(limit=100)

    def job(owner: str) -> Job:
        work = type("W", (), {"source": np.zeros((1, 1, 3))})()
        return Job(peer=owner.encode(), request_id=owner, work=work, engine="identity", preset=None,
                   origin=(0, 0), order="RGBA", output_dtype="u8", owner=owner)  # fmt: skip

    for _ in range(5):
        q.put(job("a"))
    first = q.take(0)
    q.put(job("b"))
    q.put(job("c"))
    q.done(first)
    taken = [q.take(0).owner for _ in range(6)]
    assert taken == ["a", "b", "c", "a", "a", "a"]


# -- vanished clients, restarts, one backend per endpoint ---------------------------------------


def test_a_vanished_clients_queued_jobs_are_dropped_within_two_seconds(backend_factory):
    proc = backend_factory(**SLOW)
    with proc.client("other") as other:
        busy = other.submit(*request(engine="identity", params={"steps": 100}))
        ghost = proc.client("ghost")
        for _ in range(3):
            ghost.submit(*request(engine="identity", params={"steps": 100}))
        deadline = time.monotonic() + 10
        while other.status()["queue"]["waiting_total"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        ghost.close()
        t0 = time.monotonic()
        while other.status()["queue"]["waiting_total"] and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        dropped = time.monotonic() - t0
        print(f"a vanished client's jobs were dropped {dropped:.2f} s after it left")
        assert dropped < 2.0
        other.cancel(other.status()["queue"]["running"]["job"])
        with pytest.raises(BackendError):
            other.wait(busy, timeout=20)


def test_a_vanished_clients_running_job_stops_within_two_seconds(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 0.2}})
    ghost = proc.client("ghost")
    ghost.submit(*request(engine="identity", params={"steps": 200}))
    with proc.client("watch") as c:
        deadline = time.monotonic() + 10
        while c.status()["queue"]["running"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ghost.close()
        t0 = time.monotonic()
        while c.status()["queue"]["busy"] and time.monotonic() - t0 < 10:
            time.sleep(0.05)
    assert time.monotonic() - t0 < 2.0


def test_wait_fails_at_once_when_the_backend_restarts(backend_factory, tmp_path):
    first = backend_factory(engine="identity", engines={"identity": {"delay": 0.5}})
    with first.client() as c:
        c.hello()
        req = c.submit(*request(engine="identity", params={"steps": 200}))
        time.sleep(1.0)
        first.proc.kill()
        first.proc.wait()
        backend_factory(endpoint=first.endpoint, engine="identity")  # the tray restarts it
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            c.wait(req, timeout=60)
    assert info.value.code == ErrorCode.BACKEND_RESTARTED
    assert time.monotonic() - t0 < 10


def test_a_killed_backend_is_noticed_within_seconds(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 1.0}})
    with proc.client() as c:
        req = c.submit(*request(engine="identity", params={"steps": 100}))
        time.sleep(1.5)
        proc.proc.kill()
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            c.wait(req, timeout=60)  # default idle timeout: the drop itself triggers the check
    noticed = time.monotonic() - t0
    print(f"a killed backend was noticed after {noticed:.2f} s")
    assert info.value.code == ErrorCode.UNREACHABLE and noticed < 6


def test_two_backends_started_at_once_on_one_ipc_endpoint(tmp_path):
    sock = tmp_path / "touchup.sock"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'engine = "identity"\nlog_file = "{tmp_path / "backend.log"}"\n'
        f'[extra_engines]\nidentity = "{IDENTITY}"\n'
    )
    cmd = [
        sys.executable,
        "-m",
        "touchup.backend",
        "serve",
        "--endpoint",
        f"ipc://{sock}",
        "--config",
        str(cfg),
    ]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        assert loser.returncode == 1 and "already running" in loser.stderr.read()
        # The loser gives up at the lock, before the winner (still starting) has bound: wait for
        # the winner to serve, then its socket must be there -- the loser left it alone.
        while winner.poll() is None and not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert winner.poll() is None and sock.exists()
        with Client(f"ipc://{sock}") as c:
            assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)


# -- in-process: a dead worker, an untrusted peer ----------------------------------------------


@contextlib.contextmanager
def serve_here(tmp_path: Path, **kw):
    kw.setdefault("engine", "identity")
    kw.setdefault("log_file", str(tmp_path / "backend.log"))
    factory = kw.pop("executor_factory", None)
    config = Config(endpoint=free_endpoint(), **kw)
    server = Server(config, executor=factory(config) if factory else None)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(60)
    try:
        yield server
    finally:
        server.stop()
        thread.join(20)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_fails_its_job_and_is_replaced(tmp_path, caplog):
    from touchup.backend.cluster.executor import LocalExecutor

    class DiesOnce(LocalExecutor):
        died = False

        def run(self, work, engine, preset, on_progress, is_cancelled, on_variant=None):
            if not DiesOnce.died:
                DiesOnce.died = True
                raise SystemExit("simulated crash outside any job handler")
            return super().run(work, engine, preset, on_progress, is_cancelled, on_variant)

    def factory(config):
        return DiesOnce(config.engine_options, config.idle_unload_s)

    with serve_here(tmp_path, executor_factory=factory) as server, Client(server.config.endpoint) as c:
        with pytest.raises(BackendError) as info:
            c.refine(*request(engine="identity"), timeout=30)
        assert info.value.code == ErrorCode.WORKER_RESTARTED
        assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT
        status = c.status()
    assert (
        status["worker"]["restarts"] == 1 and "simulated crash" in status["worker"]["last_restart"]["reason"]
    )
    assert "the worker died" in caplog.text


def test_unload_shutdown_and_other_clients_jobs_need_a_trusted_peer(tmp_path, monkeypatch):
    monkeypatch.setattr(endpoint, "peer_identity", lambda frame, curve, ep: (None, False))
    with serve_here(tmp_path, engines={"identity": {"delay": 0.2}}) as server:
        with Client(server.config.endpoint) as mine, Client(server.config.endpoint) as theirs:
            theirs.submit(*request(engine="identity", params={"steps": 50}))
            for kind in (Kind.UNLOAD, Kind.SHUTDOWN):
                with pytest.raises(BackendError) as info:
                    mine.request(kind)
                assert info.value.code == ErrorCode.FORBIDDEN
            time.sleep(0.5)
            queue = mine.status()["queue"]
            assert queue["busy"] and queue["running"] is None  # busy, but whose job is not shown
        assert not server._stop.is_set()


def test_trust_is_loopback_or_a_key():
    class Frame:
        def __init__(self, **props):
            self.props = props

        def get(self, name):
            return self.props[name]

    ep = "tcp://127.0.0.1:1"
    assert endpoint.peer_identity(Frame(**{"Peer-Address": "127.0.0.1"}), False, ep) == (None, True)
    assert endpoint.peer_identity(Frame(**{"Peer-Address": "192.168.1.5"}), False, ep) == (None, False)
    assert endpoint.peer_identity(Frame(**{"User-Id": "alice"}), True, ep) == ("alice", True)
    assert endpoint.peer_identity(Frame(**{"User-Id": ""}), True, ep) == (None, False)


def test_the_tray_says_when_the_worker_was_restarted():
    from touchup.backend.app.tray import state_from_status

    status = {"worker": {"state": "idle", "restarts": 2}, "queue": {"completed": 5}}
    assert "worker restarted 2x" in state_from_status(status, pid=1, restarts=0).line()


def test_waiting_jobs_cannot_hold_more_image_memory_than_configured(backend_factory):
    # Each 64x80 float32 tile with its mask holds ~100 KB while it waits; allow about two.
    proc = backend_factory(max_queued_bytes=250_000, **SLOW)
    tile = make_tile(dtype=np.float32)
    with proc.client() as c:
        replies = []
        for _ in range(5):
            rid = c.submit(*request(tile, engine="identity", params={"steps": 30}))
            while True:
                msg = c.recv(10)
                if msg.header.get("id") == rid and msg.kind in (Kind.ACCEPTED, Kind.ERROR):
                    replies.append(msg)
                    break
        refused = [m for m in replies if m.kind == Kind.ERROR]
        assert refused and all(m.header["code"] == ErrorCode.QUEUE_FULL for m in refused)
        assert "GiB" in refused[0].header["message"]
        assert sum(m.kind == Kind.ACCEPTED for m in replies) >= 2
