"""The backend end to end over loopback: jobs, progress, cancel, concurrency, bad input.

Every test talks to a real ``touchup serve`` process through the real protocol.
"""

from __future__ import annotations

import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq

from touchup.backend.pipeline.imaging import array_to_frame, frame_to_array
from touchup.shared.client import BackendError, Client, refine_request
from touchup.shared.protocol import ErrorCode, Kind


def make_tile(h: int = 64, w: int = 80, dtype=np.uint8, channels: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535 if dtype == np.uint16 else 1.0
    arr = rng.random((h, w, channels)) * top
    if channels == 4:
        arr[:, :, 3] = top
    return arr.astype(dtype)


def make_mask(h: int = 64, w: int = 80, box=(20, 16, 30, 24)) -> np.ndarray:
    x, y, bw, bh = box
    mask = np.zeros((h, w), np.uint8)
    mask[y : y + bh, x : x + bw] = 255
    return mask


def request(source=None, mask=None, refs=(), order="RGBA", **kw):
    source = make_tile() if source is None else source
    mask = make_mask(*source.shape[:2]) if mask is None else mask
    kw.setdefault("origin", (100, 50))
    kw.setdefault("doc_size", (1000, 800))
    return refine_request(
        array_to_frame(source, "source", order),
        array_to_frame(mask, "mask"),
        references=[array_to_frame(r, "reference") for r in refs],
        **kw,
    )


def raw_send(endpoint: str, parts: list[bytes], timeout: float = 5.0) -> dict | None:
    """Send raw multipart bytes from a bare DEALER; return the decoded reply header or None."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(parts)
        if sock.poll(int(timeout * 1000)):
            return msgpack.unpackb(sock.recv_multipart()[0])
        return None
    finally:
        sock.close(0)


# -- normal operation ------------------------------------------------------------------------


def test_hello_describes_engines_and_limits(backend):
    with Client(backend) as c:
        hello = c.hello()
    assert hello["kind"] == Kind.HELLO
    assert hello["protocol"][0] == 1
    caps = hello["capabilities"]
    names = [e["name"] for e in caps["engines"]]
    assert "classic" in names and caps["default_engine"] == "classic"
    classic = next(e for e in caps["engines"] if e["name"] == "classic")
    assert classic["presets"] and "accepts" in classic["presets"][0]
    assert classic["presets"][0]["accepts"]["reference"] is True
    assert caps["limits"]["max_pixels"] > 0 and caps["device"]


def test_refine_returns_layer_tile_with_zero_alpha_outside(backend):
    source = make_tile()
    header, frames = request(source, engine="identity")
    events = []
    with Client(backend) as c:
        result = c.refine(header, frames, on_event=events.append, timeout=60)
    kinds = [e.kind for e in events]
    assert kinds[0] == Kind.ACCEPTED and Kind.PROGRESS in kinds
    layer = frame_to_array(result.frame("result"))
    ox, oy = result.header["origin"]
    # The tile covers the selection (20,16 30x24 in the tile at origin 100,50), no more.
    assert (ox, oy) == (120, 66) and layer.shape == (24, 30, 4)
    assert layer.dtype == np.uint8
    assert (layer[:, :, 3] > 0).all()
    assert result.header["meta"]["engine"] == "identity"
    # The focus region, in document coordinates, covers the selection plus context.
    (region,) = result.header["meta"]["regions"]
    x, y, w, h = region["doc_rect"]
    assert x <= 120 and y <= 66 and x + w >= 150 and y + h >= 90
    assert region["scale"] > 1  # a small selection is upsampled for the engine


def test_result_keeps_source_dtype_and_byte_order(backend):
    # Smooth, distinct channels (so a swap would show; noise would not survive resampling).
    yy, xx = np.mgrid[0:64, 0:80]
    source = np.stack([xx * 800, yy * 1000, np.full_like(xx, 30000), np.full_like(xx, 65535)], axis=2)
    source = source.astype(np.uint16)
    mask = make_mask()
    header, frames = request(source, mask, order="BGRA", engine="identity", params={"feather": 0})
    with Client(backend) as c:
        result = c.refine(header, frames, timeout=60)
    frame = result.frame("result")
    assert frame.desc.dtype == "u16" and frame.desc.order == "BGRA"
    layer = frame_to_array(frame)  # back to RGBA
    inner = source[16 + 4 : 16 + 20, 20 + 4 : 20 + 26, :3].astype(np.int64)
    got = layer[4:20, 4:26, :3].astype(np.int64)
    # identity engine, no feather: deep-inside pixels come back (nearly) unchanged, channels not swapped
    assert np.abs(got - inner).mean() < 0.02 * 65535


def test_two_clients_get_their_own_results(backend):
    a_src, b_src = make_tile(seed=1), make_tile(seed=2)
    with Client(backend, name="a") as a, Client(backend, name="b") as b:
        ha, fa = request(a_src, engine="identity", params={"feather": 0, "color_correct": False})
        hb, fb = request(b_src, engine="identity", params={"feather": 0, "color_correct": False})
        ida, idb = a.submit(ha, fa), b.submit(hb, fb)
        ra, rb = a.wait(ida, timeout=60), b.wait(idb, timeout=60)
    la, lb = frame_to_array(ra.frame("result")), frame_to_array(rb.frame("result"))
    ca = a_src[16:40, 20:50, :3].astype(int)
    cb = b_src[16:40, 20:50, :3].astype(int)
    assert np.abs(la[:, :, :3] - ca).mean() < np.abs(la[:, :, :3] - cb).mean()
    assert np.abs(lb[:, :, :3] - cb).mean() < np.abs(lb[:, :, :3] - ca).mean()


def test_status_and_ping_answer_while_a_job_runs(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 0.2}})
    with proc.client() as c:
        header, frames = request(params={"steps": 15})
        job_id = c.submit(header, frames)
        time.sleep(0.8)
        t0 = time.monotonic()
        status = c.status(timeout=2)
        assert time.monotonic() - t0 < 1.0
        assert status["queue"]["running"] is not None
        assert status["queue"]["running"]["stage"] in ("refine", "focus", "paste", "denoise")
        assert c.ping(timeout=1) < 1.0
        c.wait(job_id, timeout=60)


def test_cancel_queued_and_running_jobs(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 0.2}})
    with proc.client() as c:
        # 150 steps x 0.2 s = 30 s per job: a cancel that works ends it far sooner, even under load.
        first = c.submit(*request(params={"steps": 150}))
        second = c.submit(*request(params={"steps": 150}))
        accepted = {}
        deadline = time.monotonic() + 10
        while len(accepted) < 2 and time.monotonic() < deadline:
            msg = c.recv(1)
            if msg is not None and msg.kind == Kind.ACCEPTED:
                accepted[msg.header["id"]] = msg.header
        assert accepted[second]["position"] == 1
        c.cancel(accepted[second]["job"])  # queued
        with pytest.raises(BackendError) as info:
            c.wait(second, timeout=10)
        assert info.value.code == "cancelled"
        t0 = time.monotonic()
        c.cancel(accepted[first]["job"])  # running: stops at the next step
        with pytest.raises(BackendError) as info:
            c.wait(first, timeout=10)
        assert info.value.code == "cancelled"
        assert time.monotonic() - t0 < 10.0  # far less than the 30 s the job would take
        assert c.status()["queue"]["running"] is None


def test_cancel_of_unknown_job_is_an_error(backend):
    with Client(backend) as c:
        req = c.cancel("j-does-not-exist")
        msg = c.recv(5)
    assert msg.kind == Kind.ERROR and msg.header["code"] == ErrorCode.UNKNOWN_JOB and msg.header["id"] == req


def test_vanished_client_does_not_stop_the_backend(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 0.1}})
    ghost = proc.client("ghost")
    ghost.submit(*request(params={"steps": 30}))
    time.sleep(0.4)
    ghost.close()  # vanishes mid-job
    with proc.client("other") as c:
        assert c.ping(timeout=2) < 2
        result = c.refine(*request(params={"steps": 2}), timeout=60)
        assert result.kind == Kind.RESULT
    assert proc.alive()


# -- bad input: each has its own code, and the backend keeps serving --------------------------

BAD_REFINES = {
    ErrorCode.EMPTY_MASK: lambda: request(mask=np.zeros((64, 80), np.uint8)),
    ErrorCode.SIZE_MISMATCH: lambda: request(mask=np.full((10, 10), 255, np.uint8)),
    ErrorCode.NOT_FINITE: lambda: request(source=np.full((64, 80, 4), np.nan, np.float32)),
    ErrorCode.UNKNOWN_ENGINE: lambda: request(engine="no-such-engine"),
    ErrorCode.UNKNOWN_PRESET: lambda: request(engine="classic", preset="no-such-preset"),
    ErrorCode.BAD_PARAMS: lambda: request(params={"strength": 7}),
    ErrorCode.TOO_LARGE: lambda: request(source=make_tile(300, 300), mask=make_mask(300, 300)),
}


@pytest.mark.parametrize("code", sorted(BAD_REFINES))
def test_bad_refine_requests_get_their_code(backend_factory, code):
    proc = backend_factory(max_pixels=200 * 200)
    with proc.client() as c:
        with pytest.raises(BackendError) as info:
            c.refine(*BAD_REFINES[code](), timeout=30)
        assert info.value.code == code
        assert info.value.message and "\n" not in info.value.message
        assert c.ping(timeout=2) < 2  # still serving
        assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT


def test_malformed_wire_messages_get_their_code(backend):
    header = msgpack.packb({"kind": "refine", "v": [1, 0], "id": "x"})
    good_desc = {"role": "source", "width": 2, "height": 2, "channels": 4, "dtype": "u8"}
    cases = {
        ErrorCode.MALFORMED: [b"\xc1 not msgpack"],
        ErrorCode.FRAME_COUNT: [header, b"stray frame"],
        ErrorCode.FRAME_SIZE: [
            msgpack.packb({"kind": "refine", "id": "y", "frames": [good_desc]}),
            b"\0" * 15,
        ],
        ErrorCode.UNKNOWN_KIND: [msgpack.packb({"kind": "teleport", "id": "z"})],
        ErrorCode.PROTOCOL_MISMATCH: [msgpack.packb({"kind": "hello", "v": [9, 0], "id": "w"})],
        ErrorCode.BAD_FRAME: [
            msgpack.packb({"kind": "refine", "id": "q", "frames": [dict(good_desc, dtype="f64")]}),
            b"\0" * 16,
        ],
    }
    for code, parts in cases.items():
        reply = raw_send(backend, parts)
        assert reply is not None, code
        assert reply["kind"] == "error" and reply["code"] == code, (code, reply)
    # A refine with frames but no mask at all:
    only_source = msgpack.packb({"kind": "refine", "id": "m", "frames": [good_desc]})
    assert raw_send(backend, [only_source, b"\0" * 16])["code"] == ErrorCode.FRAME_COUNT
    with Client(backend) as c:
        assert c.ping(timeout=2) < 2


def test_shutdown_from_loopback_stops_cleanly(backend_factory):
    proc = backend_factory()
    with proc.client() as c:
        c.shutdown()
    assert proc.proc.wait(timeout=15) == 0


def test_sigterm_stops_cleanly(backend_factory):
    proc = backend_factory()
    assert proc.stop() == 0
    assert "shutting down" in proc.log()


def test_second_instance_is_refused(backend_process):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "touchup.backend",
            "serve",
            "--endpoint",
            backend_process.endpoint,
            "--config",
            str(backend_process.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "already running" in out.stderr
    assert backend_process.alive()


def test_ipc_endpoint(backend_factory, tmp_path):
    proc = backend_factory(endpoint=f"ipc://{tmp_path}/touchup.sock")
    with proc.client() as c:
        assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT


def test_client_notices_a_backend_that_dies_mid_job(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 0.5}})
    with proc.client() as c:
        req = c.submit(*request(params={"steps": 100}))
        time.sleep(1.0)
        proc.proc.kill()
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            c.wait(req, idle_timeout=2.0)
    assert info.value.code == ErrorCode.UNREACHABLE
    assert time.monotonic() - t0 < 15


def test_a_slow_but_alive_backend_is_waited_for(backend_factory):
    """Silence longer than idle_timeout is fine while the backend still answers pings."""
    proc = backend_factory(engine="identity", engines={"identity": {"delay": 3.0}})
    with proc.client() as c:
        req = c.submit(*request(params={"steps": 1}))
        result = c.wait(req, idle_timeout=1.0, timeout=60)
    assert result.kind == Kind.RESULT
