"""CurveZMQ: keys, the allow-list, connection files, and the refusal to listen unprotected.

Everything binds loopback only; ``--curve`` is what a studio turns on for the network, and it
works the same on 127.0.0.1. The keys are made by the real ``touchup keys`` command, and the
allowed client refines through the real ``touchup refine --connection``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
import zmq
from conftest import free_endpoint
from test_server import raw_send, request

from touchup.shared.client import BackendError, Client
from touchup.shared.connection import Connection, load_connection
from touchup.shared.protocol import ErrorCode, Kind


def touchup(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "touchup.backend", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def studio(tmp_path, backend_factory):
    """A CurveZMQ backend on loopback with one allowed user, alice."""
    keys = tmp_path / "keys"
    endpoint = free_endpoint()
    assert touchup("keys", "--keys-dir", str(keys), "init").returncode == 0
    out = touchup("keys", "--keys-dir", str(keys), "add", "alice", "--endpoint", endpoint,
                  "-o", str(tmp_path / "alice.touchup"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    alice = load_connection(tmp_path / "alice.touchup")
    proc = backend_factory(
        endpoint=endpoint, engine="identity", curve=True, keys_dir=str(keys), connection=alice
    )
    return proc, keys, tmp_path / "alice.touchup"


def test_connection_file_is_private_and_complete(studio):
    _, keys, file = studio
    assert file.stat().st_mode & 0o077 == 0  # it holds alice's secret key
    conn = load_connection(file)
    assert conn.user == "alice" and conn.endpoint.startswith("tcp://127.0.0.1:")
    assert (keys / "clients" / "alice.key").exists()
    assert (
        conn.secret_key not in (keys / "clients" / "alice.key").read_text()
    )  # the server keeps no secret of hers


def test_an_allowed_client_refines_through_the_cli(studio, tmp_path):
    proc, _, file = studio
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, :, 1] = np.arange(160, dtype=np.uint8)[None, :]
    cv2.imwrite(str(tmp_path / "in.png"), image)
    out = touchup("refine", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--box", "40,30,50,40",
                  "--engine", "identity", "--connection", str(file), "--quiet", "--timeout", "60")  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = cv2.imread(str(tmp_path / "out.png"))
    assert result.shape == image.shape
    assert np.abs(result.astype(int) - image.astype(int)).max() <= 2  # identity engine: same picture back
    with proc.client() as c:
        assert c.status()["security"] == "curve"
    assert "client 'alice' connected" in proc.log()


def test_an_unknown_key_is_refused_and_logged(studio):
    proc, _, file = studio
    alice = load_connection(file)
    public, secret = zmq.curve_keypair()
    mallory = Connection(alice.endpoint, alice.server_key, public.decode(), secret.decode(), "mallory")
    t0 = time.monotonic()
    with Client(connection=mallory) as c, pytest.raises(BackendError) as info:
        c.ping(timeout=10)
    assert info.value.code == ErrorCode.FORBIDDEN and time.monotonic() - t0 < 5
    time.sleep(0.2)
    assert "refused a client with an unknown key" in proc.log()


def test_a_client_without_keys_gets_nothing(studio):
    proc, _, _ = studio
    ping = msgpack.packb({"kind": "ping", "v": [1, 0], "id": "p"})
    assert raw_send(proc.endpoint, [ping], timeout=1.5) is None  # not even an error message
    with Client(proc.endpoint) as c, pytest.raises(BackendError) as info:
        c.ping(timeout=5)
    assert info.value.code == ErrorCode.FORBIDDEN and "connection file" in info.value.message
    with proc.client() as c:  # alice is unaffected
        assert c.refine(*request(engine="identity"), timeout=30).kind == Kind.RESULT


def test_revoking_a_key_refuses_its_next_connection(studio):
    _proc, keys, file = studio
    out = touchup("keys", "--keys-dir", str(keys), "revoke", "alice")
    assert out.returncode == 0, out.stderr
    with Client(connection=file) as c, pytest.raises(BackendError) as info:
        c.ping(timeout=10)
    assert info.value.code == ErrorCode.FORBIDDEN


def test_listening_on_the_network_without_curve_is_refused(tmp_path):
    port = free_endpoint().rsplit(":", 1)[1]
    out = touchup(
        "serve", "--listen", f"tcp://0.0.0.0:{port}", "--log-file", str(tmp_path / "log"), timeout=60
    )
    assert out.returncode == 2
    assert "CurveZMQ" in out.stderr and "touchup keys" in out.stderr and "--curve" in out.stderr


def test_a_bad_connection_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.touchup"
    bad.write_text("{}")
    out = touchup("ping", "--connection", str(bad), timeout=60)
    assert out.returncode == 1 and "not a Touchup connection file" in out.stderr
    assert not Path(tmp_path / "missing").exists()
