"""The tray icon: the supervisor plus pystray (or, without a tray, a plain foreground daemon)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .desktop import enable_xorg_clicks, system_tray_available
from .menu import MenuActions
from .popup import popup_menu
from .state import TrayState, icon_image
from .supervisor import Supervisor

log = logging.getLogger("touchup.tray")


class Tray:
    """The supervisor plus an icon (or, without a tray, a plain foreground daemon)."""

    def __init__(
        self,
        command: list[str],
        endpoint: str,
        backend_log: Path,
        config_dir: Path,
        child_output: Path | None = None,
    ) -> None:
        self.icon: Any = None
        self.done = threading.Event()
        self._quitter: threading.Thread | None = None
        self._menu_proc: subprocess.Popen | None = None  # an open popup menu, closed on quit
        self.supervisor = Supervisor(command, endpoint, self._on_state, log_file=child_output)
        self.actions = MenuActions(self.supervisor, backend_log, config_dir, self.quit)

    def _on_state(self, state: TrayState) -> None:
        icon = self.icon
        if icon is None:
            return
        icon.icon = icon_image(state)
        icon.title = state.line()
        if getattr(icon, "HAS_MENU", False):
            icon.update_menu()

    def quit(self) -> None:
        """Stop everything; safe from any thread and from signal handlers."""
        if self.done.is_set():
            return
        self.done.set()
        # From a thread: a signal handler or the icon's own event loop must not block on this.
        self._quitter = threading.Thread(target=self._shutdown, name="touchup-quit", daemon=True)
        self._quitter.start()

    def _wait_stopped(self) -> None:
        """Wait until the backend child is really gone, so no process outlives the tray."""
        if self._quitter is not None:
            self._quitter.join(30)
        log.info("tray stopped")

    def _shutdown(self) -> None:
        if self._menu_proc is not None and self._menu_proc.poll() is None:
            self._menu_proc.terminate()
        self.supervisor.stop()
        if self.icon is not None:
            self.icon.stop()

    def run(self) -> int:
        available, why = system_tray_available()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.quit())
        if not available:
            msg = f"touchup tray: {why}; running as a plain daemon (Ctrl+C or SIGTERM stops it)"
            print(msg, file=sys.stderr, flush=True)
            log.warning(msg)
            self.supervisor.start()
            while not self.done.wait(0.5):
                pass
            self._wait_stopped()
            return 0
        import pystray

        has_menu = getattr(pystray.Icon, "HAS_MENU", False)
        menu = (
            self._pystray_menu(pystray)
            if has_menu
            else pystray.Menu(pystray.MenuItem("Touchup", self._popup, default=True))
        )
        self.icon = pystray.Icon("touchup", icon_image(TrayState()), TrayState().line(), menu)
        if not has_menu:
            enable_xorg_clicks(self.icon)

        def setup(icon: Any) -> None:
            icon.visible = True
            self.supervisor.start()
            log.info("tray icon shown (%s)", pystray.Icon.__module__)

        try:
            self.icon.run(setup)
        except Exception as exc:
            # pystray's AppIndicator backend hides its notification over D-Bus while closing and
            # raises where the desktop runs no notification service; the icon is gone by then.
            if not self.done.is_set():
                raise
            log.warning("tray icon closed with an error: %s", exc)
        self.quit()
        self._wait_stopped()
        return 0

    def _popup(self, *_args: Any) -> None:
        """Left click on trays without menus: the same menu as a popup."""

        def show() -> None:
            choice = popup_menu(self.actions.items(), keep=lambda p: setattr(self, "_menu_proc", p))
            if choice:
                self.actions.run(choice)

        threading.Thread(target=show, name="touchup-popup", daemon=True).start()

    def _pystray_menu(self, pystray: Any) -> Any:
        def entry(index: int) -> Any:
            def text(_item: Any) -> str:
                return self.actions.items()[index][1]

            def enabled(_item: Any) -> bool:
                return self.actions.items()[index][2]

            ident = self.actions.items()[index][0]
            return pystray.MenuItem(text, lambda *_: self.actions.run(ident), enabled=enabled)

        entries = []
        for i, (ident, _label, _enabled) in enumerate(self.actions.items()):
            entries.append(pystray.Menu.SEPARATOR if not ident else entry(i))
        return pystray.Menu(*entries)
