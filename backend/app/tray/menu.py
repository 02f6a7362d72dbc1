"""The tray menu's entries and what they do, shared by pystray's menu and the popup fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ....shared.client import BackendError
from .state import BUSY, IDLE
from .supervisor import Supervisor

log = logging.getLogger("touchup.tray")


def open_path(path: Path) -> None:
    """Open a file or folder with the desktop's default application (creating the folder, so
    "Open log" works before the backend has written anything)."""
    (path if path.suffix == "" else path.parent).mkdir(parents=True, exist_ok=True)
    if sys.platform.startswith("win"):
        os.startfile(str(path))  # type: ignore[attr-defined]
    else:
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        try:
            subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            log.warning("cannot open %s: %s is not available", path, opener)


@dataclass
class MenuActions:
    """What the menu entries do; separate from pystray so the popup fallback shares them."""

    supervisor: Supervisor
    log_path: Path
    config_dir: Path
    quit: Callable[[], None]

    def items(self) -> list[tuple[str, str, bool]]:
        """(id, label, enabled) in menu order; id "" is a separator."""
        s = self.supervisor.state
        return [
            ("status", s.line(), False),
            ("model", f"Model: {s.model or 'none loaded'}", False),
            ("unload", "Unload model", bool(s.model) and s.phase in (IDLE, BUSY)),
            ("", "", False),
            ("log", "Open log", True),
            ("config", "Open config folder", True),
            ("restart", "Restart backend", True),
            ("", "", False),
            ("quit", "Quit", True),
        ]

    def run(self, action: str) -> None:
        log.info("menu: %s", action)
        if action == "unload":
            try:
                self.supervisor.unload_model()
            except BackendError as exc:
                log.warning("unload failed: %s", exc.message)
        elif action == "log":
            open_path(self.log_path)
        elif action == "config":
            open_path(self.config_dir)
        elif action == "restart":
            self.supervisor.restart_backend()
        elif action == "quit":
            self.quit()
