"""Starting the backend process from Krita: detached, its output kept for error messages."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time


class BackendLauncher:
    """One ``touchup serve`` process started by the plugin, detached from Krita's lifetime.

    The connection asks it whether the process is still starting (within its deadline), has
    exited, and what it last wrote, to tell the user why a backend never answered.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._log: str | None = None
        self.deadline = 0.0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def launched(self) -> bool:
        """A process was started and has not been reaped yet."""
        return self._process is not None

    def start(self, argv: list[str], timeout_s: float) -> str:
        """Start ``argv``; returns an error text for the user, or "" once it runs."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        fd, self._log = tempfile.mkstemp(prefix="touchup-backend-", suffix=".log")
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return f"Could not start the backend ({' '.join(argv)}): {exc.strerror or exc}"
        finally:
            os.close(fd)
        self.deadline = time.monotonic() + timeout_s
        return ""

    def reap(self) -> int | None:
        """The exit code once the process has ended (and forget it), else None."""
        if self._process is None or self._process.poll() is None:
            return None
        code = self._process.returncode
        self._process = None
        return code

    def log_tail(self) -> str:
        """The last lines the process wrote, joined: what a user needs to see why it failed."""
        if not self._log:
            return ""
        try:
            with open(self._log, encoding="utf-8", errors="replace") as fh:
                lines = [line.strip() for line in fh.read().splitlines() if line.strip()]
        except OSError:
            return ""
        return " ".join(lines[-3:])
