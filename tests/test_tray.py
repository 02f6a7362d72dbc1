"""The tray daemon: state reporting, crash recovery and clean shutdown.

* Logic: a backend's real ``status`` replies become the state a user sees (idle, busy with
  progress, loading); the supervisor, driving a scripted backend, reports the changes.
* Under Xvfb with a real system tray (trayer) and real ``touchup serve`` children, through both
  of pystray's Linux backends: the plain X one (XEmbed straight into trayer) and AppIndicator
  (a StatusNotifierItem on a private D-Bus session, shown by Debian's ``snixembed`` host the way
  GNOME and KDE panels show it; snixembed comes from a Debian sid chroot that
  ``scripts/setup_tray.sh`` builds). The icon docks and turns green when the backend is ready,
  a killed backend is restarted (new pid), the menu's Quit (clicked in the popup) stops the tray
  and leaves no process behind.
* Without any tray, ``touchup tray`` says so and runs as a plain daemon that still supervises.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_endpoint, skip_or_fail
from editor_releases import CHROOTS, chroot_command

from touchup.backend.app.tray import (
    BUSY,
    COLOURS,
    IDLE,
    STARTING,
    Supervisor,
    TrayState,
    icon_image,
    state_from_status,
)
from touchup.shared.client import Client


def _status(state: str, running: dict | None = None, engine: str | None = None, waiting: int = 0) -> dict:
    """A status reply shaped like the backend server's."""
    return {
        "kind": "status",
        "pid": 4242,
        "worker": {"state": state, "engine": engine, "preset": None},
        "queue": {"running": running, "waiting": [{}] * waiting, "completed": 3},
    }


def test_status_replies_become_what_the_tray_shows() -> None:
    idle = state_from_status(_status("idle", engine="classic"), None, 0)
    assert (idle.phase, idle.model, idle.pid) == (IDLE, "classic", 4242)
    assert "3 job(s) done" in idle.line()

    busy = state_from_status(
        _status("busy", {"stage": "denoise", "step": 3, "total": 12}, engine="classic", waiting=2), None, 0
    )
    assert busy.phase == BUSY and busy.progress == pytest.approx(0.25)
    assert busy.line() == "Touchup: busy 25% - denoise, 2 waiting"

    loading = state_from_status(_status("loading", engine="refine-anything"), None, 1)
    assert loading.phase == BUSY and "loading refine-anything" in loading.line()


def test_icon_colour_and_progress_ring_follow_the_state() -> None:
    for phase, colour in COLOURS.items():
        img = icon_image(TrayState(phase, ""), size=32)
        assert img.getpixel((16, 4))[:3] == colour  # the disc, above the ring
    half = icon_image(TrayState(BUSY, "", progress=0.5), size=64)
    assert half.getpixel((40, 26))[:3] == (255, 255, 255)  # right half of the ring: done
    assert half.getpixel((24, 38))[:3] == COLOURS[BUSY]  # left half: still to go


SCRIPTED_BACKEND = textwrap.dedent(
    """
    import sys, msgpack, zmq
    # Answers status with: starting... idle, then busy 1/4..4/4, then idle (one state per reply).
    states = [("idle", None)] * 2 + [("busy", {"stage": "refine", "step": i, "total": 4}) for i in (1, 2, 3, 4)]
    states += [("idle", None)] * 1000
    ctx = zmq.Context(); sock = ctx.socket(zmq.ROUTER); sock.bind(sys.argv[1])
    n = 0
    while True:
        peer, head = sock.recv_multipart()
        req = msgpack.unpackb(head)
        state, running = states[min(n, len(states) - 1)]
        n += 1
        reply = {"kind": "status", "v": [1, 0], "id": req["id"], "pid": 1,
                 "worker": {"state": state, "engine": "classic", "preset": None},
                 "queue": {"running": running, "waiting": [], "completed": 0}}
        sock.send_multipart([peer, msgpack.packb(reply)])
    """
)


def test_supervisor_reports_state_changes_from_its_backend(tmp_path: Path) -> None:
    script = tmp_path / "scripted_backend.py"
    script.write_text(SCRIPTED_BACKEND)
    endpoint = free_endpoint()
    seen: list[TrayState] = []
    sup = Supervisor([sys.executable, str(script), endpoint], endpoint, seen.append, poll_s=0.05)
    sup.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            seen and seen[-1].phase == IDLE and any(s.phase == BUSY for s in seen)
        ):
            time.sleep(0.05)
    finally:
        sup.stop()
    phases = [s.phase for s in seen]
    assert phases[0] == STARTING
    progress = [s.progress for s in seen if s.phase == BUSY]
    assert progress == [0.25, 0.5, 0.75, 1.0]
    assert phases.index(BUSY) > phases.index(IDLE) and phases[-1] == IDLE
    assert sup.child is None  # stop() ended the backend it started


# -- under Xvfb ----------------------------------------------------------------------------
def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed (scripts/setup_tray.sh)")


@pytest.fixture
def xdisplay(tmp_path: Path):
    """A private Xvfb display with a system tray (trayer) on it."""
    _need("Xvfb", "trayer", "xdotool")
    if importlib.util.find_spec("pystray") is None:  # (importing it needs a display)
        pytest.skip("pystray is not installed (pip install 'touchup[tray]')")
    number = 70 + os.getpid() % 500
    xvfb = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(os.environ, DISPLAY=f":{number}")
    for _ in range(100):
        if subprocess.run(["xdotool", "getdisplaygeometry"], env=env, capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    tray_host = subprocess.Popen(
        [
            "trayer",
            "--edge",
            "top",
            "--align",
            "right",
            "--widthtype",
            "pixel",
            "--width",
            "80",
            "--height",
            "32",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        yield env
    finally:
        for proc in (tray_host, xvfb):
            proc.terminate()
            proc.wait(10)


def _wait_for(pattern: str, log: Path, timeout: float = 60, after: int = 0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        m = re.search(pattern, text[after:])
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(
        f"{pattern!r} never appeared in the tray log:\n{log.read_text(errors='replace') if log.exists() else ''}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of an exited child still "exists"; read its state.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _icon_colour(env: dict, window: str) -> tuple[int, int, int]:
    """The colour at the middle of the docked icon, as the X server shows it."""
    geo = subprocess.run(
        ["xdotool", "getwindowgeometry", "--shell", window], env=env, capture_output=True, text=True
    )
    g = dict(line.split("=") for line in geo.stdout.split())
    x, y = int(g["X"]) + int(g["WIDTH"]) // 2, int(g["Y"]) + int(g["HEIGHT"]) // 2
    from Xlib import X, display

    d = display.Display(env["DISPLAY"])
    try:
        raw = d.screen().root.get_image(x, y, 1, 1, X.ZPixmap, 0xFFFFFFFF).data
    finally:
        d.close()
    return raw[2], raw[1], raw[0]  # BGRX on little-endian 24-bit visuals


@dataclass(frozen=True)
class TrayBackend:
    """How a user meets the icon under one pystray backend: which window shows it, which click
    opens the menu, and what the menu's window is called."""

    name: str  # PYSTRAY_BACKEND
    icon_search: list[str]  # xdotool search arguments finding the docked icon
    menu_button: str  # "1" left click, "3" right click
    menu_class: str  # WM_CLASS of the popup menu
    quit_from_bottom: int  # pixels from the menu's bottom edge to the middle of "Quit"


XORG = TrayBackend("xorg", ["--name", "^Touchup: idle"], "1", "^Menu$", 8)
# snixembed re-embeds each StatusNotifierItem as an XEmbed icon whose class is the item's id,
# and opens the item's D-Bus menu as its own GTK menu on a right click.
APPINDICATOR = TrayBackend("appindicator", ["--class", "^touchup$"], "3", "^Snixembed$", 16)
SNIXEMBED_CHROOT = CHROOTS / "snixembed"


@pytest.fixture
def status_notifier_host(xdisplay: dict, tmp_path: Path):
    """A private D-Bus session with snixembed as its StatusNotifierWatcher/host, docking items
    into the display's trayer. snixembed runs in its chroot with the host's /tmp bind-mounted:
    the X socket, the bus socket and pystray's icon files all live there."""
    if os.geteuid() != 0 or not (SNIXEMBED_CHROOT / "usr" / "bin" / "snixembed").exists():
        skip_or_fail(f"no snixembed chroot at {SNIXEMBED_CHROOT} (scripts/setup_tray.sh builds it, as root)")
    _need("dbus-daemon", "dbus-send")
    bus = f"unix:path={tmp_path / 'bus'}"
    dbus = subprocess.Popen(
        ["dbus-daemon", "--session", f"--address={bus}", "--nofork", "--nopidfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(xdisplay, DBUS_SESSION_BUS_ADDRESS=bus)
    host = subprocess.Popen(
        chroot_command(SNIXEMBED_CHROOT, ["snixembed"], [Path("/tmp")]),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        watcher = ["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/"]
        watcher += ["org.freedesktop.DBus.NameHasOwner", "string:org.kde.StatusNotifierWatcher"]
        deadline = time.monotonic() + 30
        while "boolean true" not in subprocess.run(watcher, env=env, capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "snixembed never took the StatusNotifierWatcher name"
            assert host.poll() is None, "snixembed exited"
            time.sleep(0.2)
        yield env
    finally:
        os.killpg(host.pid, signal.SIGTERM)
        host.wait(10)
        dbus.terminate()
        dbus.wait(10)


@pytest.fixture(params=[XORG, APPINDICATOR], ids=lambda b: b.name)
def tray_desktop(request: pytest.FixtureRequest, xdisplay: dict) -> tuple[TrayBackend, dict]:
    backend: TrayBackend = request.param
    if backend is APPINDICATOR:
        env = request.getfixturevalue("status_notifier_host")
        if importlib.util.find_spec("gi") is None:
            skip_or_fail(
                "PyGObject is not installed, so pystray has no AppIndicator backend (scripts/setup_tray.sh)"
            )
    else:
        env = xdisplay
    return backend, dict(env, PYSTRAY_BACKEND=backend.name)


def _search(env: dict, *args: str) -> list[str]:
    return subprocess.run(
        ["xdotool", "search", *args], env=env, capture_output=True, text=True
    ).stdout.split()


@pytest.mark.slow
def test_tray_under_xvfb_restarts_killed_backend_and_quits_cleanly(
    tmp_path: Path, tray_desktop: tuple[TrayBackend, dict]
) -> None:
    backend, desktop = tray_desktop
    env = dict(desktop, HOME=str(tmp_path / "home"))
    endpoint = free_endpoint()
    log = tmp_path / "tray.log"
    tray = subprocess.Popen(
        [sys.executable, "-m", "touchup.backend", "tray", "--endpoint", endpoint, "--log-file", str(log)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(rf"tray icon shown \(pystray\._{backend.name}\)", log)
        first = int(_wait_for(r"started backend pid (\d+)", log).group(1))
        _wait_for(r"state Touchup: idle", log)
        deadline = time.monotonic() + 20
        window = _search(env, *backend.icon_search)
        while not window and time.monotonic() < deadline:
            time.sleep(0.2)
            window = _search(env, *backend.icon_search)
        assert window, f"no docked tray icon ({' '.join(backend.icon_search)})"
        deadline = time.monotonic() + 10  # the host may draw the new icon a moment later
        while _icon_colour(env, window[0]) != COLOURS[IDLE] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _icon_colour(env, window[0]) == COLOURS[IDLE]
        with Client(endpoint) as c:
            assert c.status()["pid"] == first

        os.kill(first, signal.SIGKILL)  # the backend crashes
        mark = len(log.read_text())
        _wait_for(r"backend exited with code -9; restarting", log, after=mark)
        second = int(_wait_for(r"started backend pid (\d+)", log, after=mark).group(1))
        _wait_for(r"state Touchup: idle", log, after=mark)
        assert second != first
        with Client(endpoint) as c:
            assert c.status()["pid"] == second  # a fresh backend answers at the same endpoint

        # Quit from the menu: a click on the icon opens it, "Quit" is its last entry.
        subprocess.run(
            ["xdotool", "mousemove", "--window", window[0], "5", "5", "click", backend.menu_button],
            env=env,
            check=True,
        )
        deadline = time.monotonic() + 20
        popup: list[str] = []
        while not popup and time.monotonic() < deadline:
            popup = _search(env, "--onlyvisible", "--class", backend.menu_class)
            time.sleep(0.2)
        assert popup, "the tray menu did not open"
        time.sleep(0.5)  # let it map
        geo = subprocess.run(
            ["xdotool", "getwindowgeometry", "--shell", popup[-1]], env=env, capture_output=True, text=True
        ).stdout
        g = dict(line.split("=") for line in geo.split())
        x, y = int(g["X"]) + int(g["WIDTH"]) // 2, int(g["Y"]) + int(g["HEIGHT"]) - backend.quit_from_bottom
        # Hover first: a GTK menu activates the item under the pointer only once it has seen it.
        subprocess.run(["xdotool", "mousemove", str(x), str(y)], env=env, check=True)
        time.sleep(0.3)
        subprocess.run(["xdotool", "click", "1"], env=env, check=True)
        tray.wait(30)
        assert tray.returncode == 0
        assert "menu: quit" in log.read_text()
        assert not _pid_alive(second), "the backend outlived the tray"
    finally:
        if tray.poll() is None:
            tray.kill()
            tray.wait(10)


@pytest.mark.slow
def test_without_a_tray_it_runs_as_plain_daemon(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["HOME"] = str(tmp_path / "home")
    endpoint = free_endpoint()
    log = tmp_path / "tray.log"
    tray = subprocess.Popen(
        [sys.executable, "-m", "touchup.backend", "tray", "--endpoint", endpoint, "--log-file", str(log)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(_wait_for(r"started backend pid (\d+)", log).group(1))
        _wait_for(r"state Touchup: idle", log)
        with Client(endpoint) as c:
            assert c.ping() < 5
        tray.send_signal(signal.SIGTERM)
        _out, err = tray.communicate(timeout=30)
        assert tray.returncode == 0
        assert "running as a plain daemon" in err
        assert not _pid_alive(pid)
    finally:
        if tray.poll() is None:
            tray.kill()
            tray.wait(10)
