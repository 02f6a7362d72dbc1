"""The supervisor thread: keeps one ``touchup serve`` child alive and polls its state."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from ....shared.client import BackendError, Client
from ....shared.protocol import Kind
from .state import ERROR, STARTING, TrayState, state_from_status

log = logging.getLogger("touchup.tray")


class Supervisor:
    """Keeps a backend child running and reports its state to ``on_state``.

    A backend that already answers at the endpoint when the tray starts (started by a plugin or
    by hand) is watched rather than duplicated; if it goes away, the supervisor starts its own.
    """

    def __init__(
        self,
        command: list[str],
        endpoint: str,
        on_state: Callable[[TrayState], None],
        log_file: Path | None = None,
        poll_s: float = 0.5,
        start_timeout_s: float = 120.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._thread = threading.Thread(target=self.run, name="touchup-supervisor", daemon=True)
        self.command = command
        self.endpoint = endpoint
        self.on_state = on_state
        self.log_file = log_file
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        self.max_backoff_s = max_backoff_s
        self.child: subprocess.Popen | None = None
        self.state = TrayState()
        self._stopping = threading.Event()
        self._child_started = 0.0
        self._restart = threading.Event()
        self._restarts = 0
        self._backoff = 1.0

    # -- control (any thread) ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop supervising and stop the child (SIGTERM, then SIGKILL after 10 s)."""
        self._stopping.set()
        self._restart.set()
        self.join(timeout)
        self._terminate_child()

    def restart_backend(self) -> None:
        """Stop the child now and start a fresh one without waiting for a backoff."""
        self._restart.set()

    def unload_model(self) -> None:
        with Client(self.endpoint, name="touchup-tray") as client:
            client.request(Kind.UNLOAD, timeout=5.0)

    # -- the loop ---------------------------------------------------------------------------
    def _set(self, state: TrayState) -> None:
        if state != self.state:
            if (state.phase, state.detail) != (self.state.phase, self.state.detail):
                log.info("state %s", state.line())
            self.state = state
            try:
                self.on_state(state)
            except Exception:  # a broken icon update must not kill supervision
                log.exception("tray update failed")

    def run(self) -> None:
        client = Client(self.endpoint, name="touchup-tray")
        try:
            while not self._stopping.is_set():
                if self._restart.is_set():
                    self._restart.clear()
                    if self._stopping.is_set():
                        break
                    self._terminate_child()
                    self._backoff = 1.0
                    self._set(
                        replace(self.state, phase=STARTING, detail="restarting the backend", progress=None)
                    )
                client = self._step(client)
                self._restart.wait(self.poll_s)
        finally:
            client.close()

    def _poll(self, client: Client) -> tuple[Client, dict[str, Any] | None]:
        try:
            return client, client.status(timeout=max(1.0, self.poll_s * 4))
        except BackendError:
            # An unanswered request leaves the DEALER's queue in an unknown state: reconnect.
            client.close()
            return Client(self.endpoint, name="touchup-tray"), None

    def _step(self, client: Client) -> Client:
        child = self.child
        if child is not None and child.poll() is not None:
            code = child.returncode
            self.child = None
            self._restarts += 1
            wait = self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff_s)
            log.warning("backend exited with code %s; restarting in %.0f s", code, wait)
            self._set(
                TrayState(
                    ERROR,
                    f"backend exited (code {code}); restarting in {wait:.0f} s",
                    None,
                    None,
                    None,
                    self._restarts,
                )
            )
            self._restart.wait(wait)
            self._restart.clear()
            return client
        client, status = self._poll(client)
        if status is not None:
            pid = child.pid if child else status.get("pid")
            if child is not None and child.pid and time.monotonic() - self._child_started > 60:
                self._backoff = 1.0  # it ran long enough: the next crash starts the backoff again
            self._set(state_from_status(status, pid, self._restarts))
            return client
        if child is None:
            self._start_child()
        elif time.monotonic() - self._child_started > self.start_timeout_s:
            log.error("backend did not answer within %.0f s; restarting it", self.start_timeout_s)
            self._terminate_child()
        return client

    def _start_child(self) -> None:
        out: int | BinaryIO = subprocess.DEVNULL
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.child = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl+C meant for the tray reaches the child only through us
            )
        except OSError as exc:
            self._set(TrayState(ERROR, f"cannot start the backend: {exc}", restarts=self._restarts))
            self._restart.wait(self._backoff)
            return
        finally:
            if not isinstance(out, int):
                out.close()

        self._child_started = time.monotonic()
        log.info("started backend pid %d: %s", self.child.pid, " ".join(self.command))
        self._set(TrayState(STARTING, "starting the backend", None, None, self.child.pid, self._restarts))

    def _terminate_child(self) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
