"""What a user (or the tray) notices about a backend's life between jobs: models unloaded on
request, when idle and when switching engines; a full queue; results in another sample type;
previews while a job runs; a config file with a typo; the transport benchmark."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from test_server import request

from touchup.backend.pipeline.imaging import frame_to_array
from touchup.shared.client import BackendError, Client
from touchup.shared.protocol import ErrorCode, Kind, make_header


def _worker(c: Client) -> dict:
    return c.status()["worker"]


def _until(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "condition never held"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_unload_frees_the_engine_and_the_next_job_loads_it_again(backend_factory):
    proc = backend_factory(engine="identity", idle_unload_s=0)
    with proc.client() as c:
        c.refine(*request(engine="identity"), timeout=60)
        assert _worker(c)["engine"] == "identity"
        assert _worker(c)["engine_status"] == {"loaded": True}
        reply = c.request(Kind.UNLOAD)
        assert reply.kind == Kind.UNLOAD and reply.header.get("ok")
        _until(lambda: _worker(c)["engine"] is None, 5)
        assert "unloaded identity" in proc.log()
        c.refine(*request(engine="identity"), timeout=60)
        assert _worker(c)["engine_status"] == {"loaded": True}


def test_an_idle_engine_is_unloaded_after_the_configured_time(backend_factory):
    proc = backend_factory(engine="identity", idle_unload_s=1.0)
    with proc.client() as c:
        c.refine(*request(engine="identity"), timeout=60)
        assert _worker(c)["engine"] == "identity"
        waited = _until(lambda: _worker(c)["engine"] is None, 10)
    assert 0.5 <= waited <= 5
    assert "unloading identity after 1 s idle" in proc.log()


def test_switching_engines_unloads_the_previous_one_first(backend_factory):
    proc = backend_factory(engine="identity", idle_unload_s=0)
    with proc.client() as c:
        c.refine(*request(engine="identity"), timeout=60)
        c.refine(*request(engine="classic"), timeout=120)
        assert _worker(c)["engine"] == "classic"
    log = proc.log()
    assert "unloaded identity" in log
    assert log.index("unloaded identity") < log.rindex("done in")  # before the classic job finished


def test_a_full_queue_refuses_with_queue_full_and_keeps_serving(backend_factory):
    proc = backend_factory(engine="identity", max_queue=2, engines={"identity": {"delay": 0.5}})
    with proc.client() as c:
        ids = [c.submit(*request(engine="identity", params={"steps": 2})) for _ in range(5)]
        outcomes = []
        for req_id in ids:
            try:
                outcomes.append(c.wait(req_id, timeout=60).kind)
            except BackendError as exc:
                outcomes.append(exc.code)
        assert ErrorCode.QUEUE_FULL in outcomes
        assert outcomes.count(Kind.RESULT) >= 2
        assert c.refine(*request(engine="identity"), timeout=60).kind == Kind.RESULT


@pytest.mark.parametrize(("output_dtype", "numpy_dtype"), [("f32", np.float32), ("u16", np.uint16)])
def test_output_dtype_sets_the_results_sample_type(backend, output_dtype, numpy_dtype):
    yy, xx = np.mgrid[0:64, 0:80]  # smooth, so resampling for the engine changes next to nothing
    source = np.stack([xx * 3, yy * 3, np.full_like(xx, 90), np.full_like(xx, 255)], axis=2).astype(np.uint8)
    with Client(backend) as c:
        result = c.refine(
            *request(source, engine="identity", output_dtype=output_dtype, params={"feather": 0}), timeout=60
        )
    layer = frame_to_array(result.frame("result"))
    assert layer.dtype == numpy_dtype
    top = 1.0 if numpy_dtype == np.float32 else 65535
    # Deep inside the selection (20,16 30x24) the identity engine returns the source's pixels.
    inner = source[24:34, 28:42, :3].astype(np.float64) / 255.0
    got = layer[8:18, 8:22, :3].astype(np.float64) / top
    assert np.abs(got - inner).max() < 0.01


def test_previews_reach_the_client_during_a_job(backend_factory):
    proc = backend_factory(engine="identity", engines={"identity": {"previews": True}})
    events = []
    with proc.client() as c:
        c.refine(*request(engine="identity", params={"steps": 4}), on_event=events.append, timeout=60)
    previews = [e.frame("preview") for e in events if e.kind == Kind.PROGRESS and e.frames]
    assert len(previews) == 3  # every step but the last
    image = frame_to_array(previews[0])
    assert image.dtype == np.uint8 and image.shape[2] == 3 and max(image.shape[:2]) <= 256
    assert image.std() > 1  # a picture, not a blank frame


def test_a_config_with_an_unknown_key_stops_serve_with_the_keys_name(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('engine = "classic"\nmax_pixles = 100\n')
    out = subprocess.run(
        [sys.executable, "-m", "touchup.backend", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "unknown setting(s)" in out.stderr and "max_pixles" in out.stderr


def test_bench_transport_prints_its_table(backend_factory):
    proc = backend_factory(engine="identity")
    args = [
        "--canvas",
        "2048",
        "--sizes",
        "512",
        "--dtypes",
        "u8",
        "--repeat",
        "1",
        "--endpoint",
        proc.endpoint,
    ]
    out = subprocess.run(
        [sys.executable, "-m", "touchup.backend", "bench", "transport", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 512x512 in 2048x2048")]
    assert len(rows) == 1, out.stdout
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert float(cells[-1].rstrip("x")) > 1  # raw frames beat the PNG round trip
    with proc.client() as c:  # the benchmark's jobs went through this backend
        assert c.status()["queue"]["completed"] >= 1


def test_unload_is_answered_even_with_no_engine_loaded(backend_factory):
    proc = backend_factory(engine="identity")
    with proc.client() as c:
        reply = c.request(Kind.UNLOAD)
        assert reply.kind == Kind.UNLOAD
        assert c.send(make_header(Kind.PING))
