"""Host side of the GIMP tests: find a GIMP chroot, install the plug-in, run GIMP in batch.

GIMP 3 is not packaged for the host's Debian release, so ``scripts/setup_gimp.sh`` builds
Debian chroots with it: trixie for GIMP 3.0, sid for GIMP 3.2 (``editor_releases.GIMP``). The chroot shares the host's network namespace, so GIMP inside
it reaches a backend on the host's loopback. Each test session gets an isolated GIMP profile
(``GIMP3_DIRECTORY``) with the plug-in installed the way the installer lays it out: the
plug-in folder, and a copy of ``shared/`` as ``lib/touchup/shared`` beside the script.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from conftest import skip_or_fail
from editor_releases import GIMP, EditorRelease, chroot_command

from touchup.shared.protocol import Kind, decode

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugin_gimp" / "touchup-refine"
DRIVER = Path(__file__).with_name("gimp_driver.py")
DIALOG_DRIVER = Path(__file__).with_name("gimp_dialog_driver.py")
GUI_KEYS = Path(__file__).with_name("gimp_gui_keys.py")


def gimp_binaries(root: Path) -> tuple[str, str] | None:
    """(console binary, GUI binary) of the GIMP in ``root`` -- named for its release
    (``gimp-console-3.0``, ``gimp-console-3.2``) -- or None when there is none."""
    consoles = sorted((root / "usr" / "bin").glob("gimp-console-3.*"))
    if not consoles:
        return None
    suffix = consoles[-1].name.removeprefix("gimp-console-")
    return consoles[-1].name, f"gimp-{suffix}"


class GimpChroot:
    """One test session's GIMP: a work folder and a profile inside the chroot.

    ``install``: put the plug-in from this checkout into the profile (the installer's tests
    leave that to ``touchup install``).
    """

    def __init__(self, root: Path, install: bool = True, release: EditorRelease = GIMP[0]) -> None:
        self.root = root
        self.release = release
        self.console, self.gui = gimp_binaries(root) or ("gimp-console-3.0", "gimp-3.0")
        self.inner = Path("/root/touchup-tests") / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.host = root / self.inner.relative_to("/")
        self.profile = self.inner / "profile"
        if install:
            self._install()

    def path(self, inner: Path | str) -> Path:
        """Host path of a path inside the chroot."""
        return self.root / Path(inner).relative_to("/")

    def _install(self) -> None:
        plugins = self.path(self.profile) / "plug-ins"
        target = plugins / PLUGIN.name
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "lib")
        shutil.copytree(PLUGIN, target, ignore=ignore)
        shutil.copytree(REPO / "shared", target / "lib" / "touchup" / "shared", ignore=ignore)
        # GIMP silently skips a plug-in whose script is not executable.
        script = target / f"{PLUGIN.name}.py"
        script.chmod(0o755)

    def case_dir(self, name: str) -> tuple[Path, Path]:
        """(host path, path inside the chroot) of a fresh folder for one GIMP launch."""
        inner = self.inner / name
        host = self.path(inner)
        host.mkdir(parents=True, exist_ok=True)
        return host, inner

    def run(
        self, name: str, spec: dict[str, Any], driver: Path = DRIVER, gui: bool = False, timeout: float = 240
    ) -> tuple[list[dict[str, Any]], str]:
        """Run ``driver`` inside GIMP with ``spec``; returns (results.json, GIMP's output).

        ``gui``: the GUI binary under Xvfb (plug-in dialogs need a display) instead of
        ``gimp-console-3.0``. Xvfb writes its screen to ``<folder>/fb/Xvfb_screen0`` (XWD).
        """
        host, inner = self.case_dir(name)
        shutil.copy(driver, host / "driver.py")
        shutil.copy(GUI_KEYS, host / GUI_KEYS.name)  # the GUI drivers' keyboard helpers
        (host / "spec.json").write_text(json.dumps(spec))
        env = [
            "env",
            "HOME=/root",
            "LANG=C.UTF-8",
            f"GIMP3_DIRECTORY={self.profile}",
            f"TOUCHUP_GIMP_SPEC={inner / 'spec.json'}",
        ]
        gimp = [
            "--batch-interpreter=python-fu-eval",
            "-b",
            f"exec(open({str(inner / 'driver.py')!r}).read())",
            "--quit",
        ]
        if gui:
            (host / "fb").mkdir(exist_ok=True)
            screen = f"-screen 0 1280x900x24 -fbdir {inner / 'fb'}"
            cmd = [*env, "xvfb-run", "-a", "-s", screen, self.gui, *gimp]
        else:
            cmd = [*env, self.console, "-i", *gimp]
        # With /proc and /dev mounted (chroot_command): GIMP 3.2's image loaders (glycin) start
        # sandboxed helper processes that fail without them, and GTK aborts on a missing icon.
        proc = subprocess.run(
            chroot_command(self.root, cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        output = proc.stdout + proc.stderr
        results_file = host / "results.json"
        if not results_file.exists():
            raise AssertionError(f"GIMP wrote no results (exit {proc.returncode}):\n{output[-6000:]}")
        return json.loads(results_file.read_text()), output

    def plugin_pids(self) -> list[int]:
        """Processes running this session's installed plug-in (the chroot shares the host's PIDs)."""
        script = str(self.profile / "plug-ins" / PLUGIN.name / f"{PLUGIN.name}.py")
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:  # not a process, or it just ended
                continue
            if proc.name.isdigit() and script.encode() in argv:
                pids.append(int(proc.name))
        return pids

    def cleanup(self) -> None:
        """Remove the session's folder (kept with TOUCHUP_KEEP_GIMP_FILES=1, to look at the pixels)."""
        if os.environ.get("TOUCHUP_KEEP_GIMP_FILES") != "1":
            shutil.rmtree(self.host, ignore_errors=True)


def open_gimp(install: bool = True, release: EditorRelease = GIMP[0]) -> GimpChroot:
    """The session's GIMP, or skip (fail in CI) when the chroot or root rights are missing.
    A GIMP whose Python cannot load GObject introspection for GIMP fails here, loudly."""
    root = release.chroot
    assert root is not None
    if gimp_binaries(root) is None:
        skip_or_fail(f"no {release.id} chroot at {root}; run scripts/setup_gimp.sh")
    if os.geteuid() != 0:
        skip_or_fail(f"the GIMP tests need root to enter the {release.id} chroot")
    probe = subprocess.run(
        ["chroot", str(root), "python3", "-c", "import zmq, msgpack, gi; gi.require_version('Gimp', '3.0')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        skip_or_fail(
            f"{release.id}: GIMP's Python cannot import zmq, msgpack and GObject introspection:\n{probe.stderr[-800:]}"
        )
    return GimpChroot(root, install, release)


class RecordingProxy:
    """Stands between the plug-in and the backend, forwarding every message both ways and
    keeping each request's header, so a test sees what the plug-in really sent.

    One DEALER per plug-in connection keeps the replies routed to the right peer.
    """

    def __init__(self, backend: str) -> None:
        self._context = zmq.Context()
        self._front = self._context.socket(zmq.ROUTER)
        self.endpoint = f"tcp://127.0.0.1:{self._front.bind_to_random_port('tcp://127.0.0.1')}"
        self._backend = backend
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._forward, daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        links: dict[bytes, zmq.Socket] = {}
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _event in poller.poll(100):
                if sock is self._front:
                    peer, *parts = self._front.recv_multipart()
                    if peer not in links:
                        links[peer] = self._context.socket(zmq.DEALER)
                        links[peer].connect(self._backend)
                        poller.register(links[peer], zmq.POLLIN)
                    self.requests.append(decode(parts).header)
                    links[peer].send_multipart(parts)
                else:
                    peer = next(p for p, link in links.items() if link is sock)
                    self._front.send_multipart([peer, *sock.recv_multipart()])
        for link in links.values():
            link.close(0)
        self._front.close(0)

    def refines(self) -> list[dict[str, Any]]:
        return [h for h in self.requests if h.get("kind") == Kind.REFINE]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._context.term()


def read_xwd(path: Path) -> np.ndarray:
    """An XWD screen dump (what ``Xvfb -fbdir`` keeps up to date) as uint8 RGB.

    Xvfb's 24-bit screens are ZPixmaps of 32-bit pixels with the masks in the header; that is
    the only layout handled here.
    """
    data = path.read_bytes()
    fields = struct.unpack(">25I", data[:100])
    header_size, _version, pixmap_format, _depth, width, height = fields[:6]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    red_mask, green_mask, blue_mask, ncolors = fields[14], fields[15], fields[16], fields[19]
    if pixmap_format != 2 or bits_per_pixel != 32:
        raise ValueError(f"unsupported XWD layout (format {pixmap_format}, {bits_per_pixel} bpp)")
    start = header_size + 12 * ncolors
    rows = np.frombuffer(
        data, np.dtype("<u4" if byte_order == 0 else ">u4"), height * bytes_per_line // 4, start
    )
    pixels = rows.reshape(height, bytes_per_line // 4)[:, :width]

    def channel(mask: int) -> np.ndarray:
        shift = (mask & -mask).bit_length() - 1
        return ((pixels & mask) >> shift).astype(np.uint8)

    return np.dstack([channel(red_mask), channel(green_mask), channel(blue_mask)])
