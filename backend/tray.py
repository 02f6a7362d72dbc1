"""``touchup tray``: the backend as a tray daemon.

A :class:`Supervisor` thread keeps one ``touchup serve`` child alive -- restarting it with
exponential backoff when it dies -- and polls its ``status`` over the normal protocol client,
turning it into a :class:`TrayState` (starting / idle / busy with progress / error). The tray
icon (pystray) shows that state as a colour, a progress ring and a tooltip, and its menu offers
the status line, the loaded model with "Unload model", "Open log", "Open config folder",
"Restart backend" and "Quit".

Where a desktop has no tray (no system tray on X, no display at all), the same supervisor runs
as a plain foreground daemon and says so. pystray's pure-X backend cannot show menus, so there a
left click opens the same menu as a small Tk popup in a child process (``--popup-menu``), which
keeps Tk's event loop away from the tray's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..shared.client import BackendError, Client
from ..shared.protocol import Kind

log = logging.getLogger("touchup.tray")

STARTING, IDLE, BUSY, ERROR = "starting", "idle", "busy", "error"
#: Icon colours per state (RGB): what a glance at the tray tells.
COLOURS = {
    STARTING: (120, 144, 156),  # grey-blue
    IDLE: (46, 160, 67),  # green
    BUSY: (230, 145, 30),  # orange
    ERROR: (211, 47, 47),  # red
}


@dataclass(frozen=True)
class TrayState:
    phase: str = STARTING
    detail: str = "starting the backend"
    progress: float | None = None  # 0..1 while busy, when the job reports steps
    model: str | None = None  # loaded engine (and preset)
    pid: int | None = None  # backend process id
    restarts: int = 0

    def line(self) -> str:
        """The status line: menu entry and tooltip."""
        text = f"Touchup: {self.phase}"
        if self.phase == BUSY and self.progress is not None:
            text += f" {round(self.progress * 100)}%"
        return f"{text} - {self.detail}" if self.detail else text


def state_from_status(status: dict[str, Any], pid: int | None, restarts: int) -> TrayState:
    """Turn a backend ``status`` reply into what the tray shows."""
    worker = status.get("worker") or {}
    queue = status.get("queue") or {}
    running = queue.get("running")
    waiting = len(queue.get("waiting") or [])
    engine = worker.get("engine")
    model = None
    if engine:
        model = f"{engine} ({worker['preset']})" if worker.get("preset") else str(engine)
    pid = status.get("pid", pid)
    if worker.get("state") == "loading":
        return TrayState(BUSY, f"loading {model or 'model'}", None, model, pid, restarts)
    if running or worker.get("state") == "busy":
        progress = None
        detail = "refining"
        if running:
            step, total = running.get("step"), running.get("total")
            if isinstance(step, int) and isinstance(total, int) and total > 0:
                progress = max(0.0, min(1.0, step / total))
            if running.get("stage"):
                detail = f"{running['stage']}"
        if waiting:
            detail += f", {waiting} waiting"
        return TrayState(BUSY, detail, progress, model, pid, restarts)
    return TrayState(IDLE, f"ready, {queue.get('completed', 0)} job(s) done", None, model, pid, restarts)


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
        out = subprocess.DEVNULL
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
            if out is not subprocess.DEVNULL:
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


# -- the icon ---------------------------------------------------------------------------------
def icon_image(state: TrayState, size: int = 64):
    """A filled circle in the state's colour; while busy, a white ring shows the progress."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    pad = max(1, size // 16)
    draw.ellipse((pad, pad, size - pad - 1, size - pad - 1), fill=COLOURS[state.phase] + (255,))
    if state.phase == BUSY and state.progress is not None:
        inner = size // 4
        box = (inner, inner, size - inner - 1, size - inner - 1)
        draw.pieslice(box, -90, -90 + 360 * state.progress, fill=(255, 255, 255, 255))
    return img


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


def popup_menu(
    items: list[tuple[str, str, bool]], keep: Callable[[subprocess.Popen], None] | None = None
) -> str | None:
    """Show ``items`` as a popup menu at the mouse pointer in a child process; the chosen id.

    ``keep`` receives the child so that quitting the tray can close an open menu.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "touchup.backend.tray", "--popup-menu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if keep is not None:
        keep(proc)
    try:
        out, _ = proc.communicate(json.dumps(items), timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out.strip() or None


def _popup_main() -> int:
    """Child side of :func:`popup_menu`: a Tk menu at the pointer, prints the chosen id."""
    import tkinter

    items = json.loads(sys.stdin.read())
    root = tkinter.Tk()
    root.withdraw()
    chosen: list[str] = []
    menu = tkinter.Menu(root, tearoff=False)
    for ident, label, enabled in items:
        if not ident:
            menu.add_separator()
            continue
        menu.add_command(
            label=label,
            state="normal" if enabled else "disabled",
            command=lambda i=ident: (chosen.append(i), root.quit()),
        )
    menu.bind("<Unmap>", lambda _e: root.after(50, root.quit))
    x, y = root.winfo_pointerxy()
    root.after(0, lambda: menu.tk_popup(x, y))
    root.mainloop()
    if chosen:
        print(chosen[0], flush=True)
    root.destroy()
    return 0


def _system_tray_available() -> tuple[bool, str]:
    """Whether pystray can show an icon here, and why not."""
    if os.environ.get("TOUCHUP_TRAY") == "none":
        return False, "disabled by TOUCHUP_TRAY=none"
    try:
        import pystray  # noqa: F401  (the import itself fails without a display)
    except Exception as exc:
        return False, f"no tray backend ({exc.__class__.__name__}: {exc})"
    if sys.platform.startswith(("win", "darwin")):
        return True, ""
    import pystray

    if pystray.Icon.__module__.endswith("_xorg"):
        try:
            import Xlib.display

            display = Xlib.display.Display()
            try:
                screen = display.get_default_screen()
                owner = display.get_selection_owner(display.intern_atom(f"_NET_SYSTEM_TRAY_S{screen}"))
            finally:
                display.close()
        except Exception as exc:
            return False, f"cannot talk to the X display ({exc})"
        if owner == 0 or getattr(owner, "id", 0) == 0:
            return False, "the desktop has no system tray"
    return True, ""


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
        available, why = _system_tray_available()
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
            _enable_xorg_clicks(self.icon)

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


def _enable_xorg_clicks(icon: Any) -> None:
    """pystray's X backend handles ButtonPress but never asks the X server for those events
    (its icon window selects only Exposure and StructureNotify), so a click would never reach
    the icon; add ButtonPress to the window's event mask."""
    window, display = getattr(icon, "_window", None), getattr(icon, "_display", None)
    if window is None or display is None:
        return
    try:
        import Xlib.X

        window.change_attributes(
            event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | Xlib.X.ButtonPressMask
        )
        display.flush()
    except Exception:  # clicks are a convenience; the icon works without them
        log.warning("cannot enable clicks on the tray icon", exc_info=True)


if __name__ == "__main__" and "--popup-menu" in sys.argv:
    sys.exit(_popup_main())
