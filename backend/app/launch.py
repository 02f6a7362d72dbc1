"""Starting a backend process on demand (the CLI's "none running, start one for this call")."""

from __future__ import annotations

import subprocess
import sys
import time

from ...shared.client import BackendError, Client


def backend_command(
    endpoint: str, engine: str | None = None, extra_engines: dict[str, str] | None = None
) -> list[str]:
    """The command that runs ``touchup serve`` with this very interpreter and environment."""
    cmd = [sys.executable, "-m", "touchup.backend", "serve", "--endpoint", endpoint]
    if engine:
        cmd += ["--engine", engine]
    for name, path in (extra_engines or {}).items():
        cmd += ["--extra-engine", f"{name}={path}"]
    return cmd


def is_running(endpoint: str, timeout: float = 0.5) -> bool:
    try:
        with Client(endpoint) as client:
            client.ping(timeout=timeout)
        return True
    except BackendError:
        return False


def start_backend(
    endpoint: str,
    engine: str | None = None,
    timeout: float = 60.0,
    quiet: bool = True,
    extra_engines: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``touchup serve`` on ``endpoint`` and wait until it answers ping.

    Raises RuntimeError with the backend's own last words when it exits or never answers.
    """
    proc = subprocess.Popen(
        backend_command(endpoint, engine, extra_engines) + (["--log-level", "WARNING"] if quiet else []),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
            raise RuntimeError(f"the backend exited at start: {err[-1] if err else proc.returncode}")
        if is_running(endpoint, timeout=0.5):
            if proc.stderr:  # stop buffering its stderr: nobody reads it from here on
                proc.stderr.close()
            return proc
    proc.kill()
    raise RuntimeError(f"the backend did not answer on {endpoint} within {timeout:g} s")
