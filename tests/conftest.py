"""Shared fixtures: real backend processes on free loopback ports.

Tests talk to a real ``touchup serve`` process over the real protocol, so what they check is
what a plugin would see. Each backend gets its own config file, so a developer's own
``config.toml`` never leaks into a test run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from touchup.backend.engines import register_engine
from touchup.backend.tools.bench_engines import IDENTITY, SEEDED
from touchup.shared.client import BackendError, Client

# In-process tests (the pipeline, eval) use the test engines by name too.
register_engine("identity", IDENTITY)
register_engine("seeded", SEEDED)


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _toml(values: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML writing for test configs (scalars and one level of tables)."""
    lines, tables = [], []
    for key, value in values.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    for key, table in tables:
        name = f"{prefix}{key}" if not prefix else f'{prefix}."{key}"'
        if all(isinstance(v, dict) for v in table.values()):
            lines.append(_toml(table, prefix=name))
        else:
            lines.append(f"[{name}]\n" + _toml(table))
    return "\n".join(lines) + "\n"


class BackendProcess:
    """A ``touchup serve`` child process with its own config and log file."""

    def __init__(self, workdir: Path, **config: Any) -> None:
        self.endpoint = config.pop("endpoint", None) or free_endpoint()
        self.connection = config.pop("connection", None)  # a CurveZMQ backend's client keys
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "backend.log"
        self.config_path = workdir / "config.toml"
        config.setdefault("engine", "classic")
        # Test engines exist only where a backend is configured to offer them.
        config.setdefault("extra_engines", {"identity": IDENTITY, "seeded": SEEDED})
        config.setdefault("log_file", str(self.log_path))
        self.config_path.write_text(_toml(config))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "touchup.backend",
                "serve",
                "--endpoint",
                self.endpoint,
                "--config",
                str(self.config_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with Client(self.endpoint, connection=self.connection) as c:
                    c.ping(timeout=0.5)
                return
            except BackendError:
                continue
        self.stop()
        raise RuntimeError(f"backend did not answer within {timeout} s:\n{self.log()}")

    def client(self, name: str = "test") -> Client:
        return Client(self.endpoint, name=name, connection=self.connection)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def backend_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    """One shared backend (classic engine by default) for tests that do not disturb it."""
    proc = BackendProcess(tmp_path_factory.mktemp("backend"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def backend(backend_process: BackendProcess) -> str:
    """Endpoint (tcp://127.0.0.1:PORT) of the shared backend running the classic engine."""
    return backend_process.endpoint


@pytest.fixture
def backend_factory(tmp_path: Path) -> Iterator:
    """Start private backends with custom config: ``backend_factory(engine="identity", ...)``."""
    started: list[BackendProcess] = []

    def start(**config: Any) -> BackendProcess:
        proc = BackendProcess(tmp_path / f"backend{len(started)}", **config)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


TESTS = Path(__file__).resolve().parent


def curve_backend(root: Path, engine: str = "identity") -> tuple[BackendProcess, Path]:
    """A CurveZMQ backend on loopback and the connection file `touchup keys add` wrote for it."""
    from touchup.shared.connection import load_connection

    keys, endpoint, file = root / "keys", free_endpoint(), root / "krita-user.touchup"
    for args in (["init"], ["add", "krita-user", "--endpoint", endpoint, "-o", str(file)]):
        subprocess.run(
            [sys.executable, "-m", "touchup.backend", "keys", "--keys-dir", str(keys), *args], check=True
        )
    proc = BackendProcess(root / "curve", endpoint=endpoint, engine=engine, curve=True, keys_dir=str(keys),
                          connection=load_connection(file))  # fmt: skip
    return proc, file


def editors_required() -> bool:
    """CI sets TOUCHUP_REQUIRE_EDITORS=1 after installing Krita and GIMP: missing ones then fail."""
    return os.environ.get("TOUCHUP_REQUIRE_EDITORS") == "1"


def skip_or_fail(reason: str) -> None:
    if editors_required():
        pytest.fail(f"{reason} (TOUCHUP_REQUIRE_EDITORS=1)")
    pytest.skip(reason)
