"""Which Python an editor runs its plugins in, and whether it already has pyzmq and msgpack.

The answer decides whether the installer vendors wheels, and for which CPython version:

* Linux distribution builds of Krita link the system ``libpython3.N`` (the version is written
  in ``kritapykrita.so``) and see the system site-packages, so if ``/usr/bin/python3.N`` imports
  zmq and msgpack (``apt install python3-zmq python3-msgpack``), nothing needs vendoring.
* GIMP 3 names its interpreter in ``lib/gimp/3.0/interpreters/pygimp.interp``.
* Windows and macOS Krita bundle their own Python (3.10 for Krita 5.2), which has neither.
* Flatpak, Snap and AppImage Pythons cannot be probed from outside or are read-only: the
  packages are always vendored for them.

A user can always say it directly: ``--krita-python 3.10`` or ``--krita-python /path/python3``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .paths import GIMP, KRITA, EditorLocation, current_system
from .wheels import python_can_import, python_version_of

#: The releases the plugins are tested in (inside the real editors, by the project's test suite).
TESTED_RELEASES = {KRITA: ("5.1", "5.2", "5.3", "6.0"), GIMP: ("3.0", "3.2")}

#: Python versions bundled by official Windows/macOS builds when nothing better is known.
BUNDLED_DEFAULTS = {KRITA: (3, 10), GIMP: (3, 12)}


@dataclass(frozen=True)
class EditorPython:
    """What we know of an editor's plugin Python."""

    version: tuple[int, int] | None
    interpreter: Path | None = None  # a runnable interpreter equivalent to the editor's
    has_deps: bool | None = None  # None: unknown (cannot probe)
    how: str = ""  # how we found out, for the dry-run and doctor output

    @property
    def version_text(self) -> str:
        return "unknown" if self.version is None else f"{self.version[0]}.{self.version[1]}"


def from_flag(value: str) -> EditorPython:
    """``--krita-python``/``--gimp-python``: either ``3.11`` or a path to an interpreter."""
    m = re.fullmatch(r"(\d+)\.(\d+)", value.strip())
    if m:
        return EditorPython((int(m.group(1)), int(m.group(2))), None, False, "given on the command line")
    return probe_interpreter(Path(value), "given on the command line")


def probe_interpreter(python: Path, how: str) -> EditorPython:
    version = python_version_of(python)
    if version is None:
        return EditorPython(None, None, None, f"{how}: {python} does not run")
    return EditorPython(version, python, python_can_import(python), f"{how}: {python}")


def detect(location: EditorLocation, system: str | None = None) -> EditorPython:
    """Best knowledge of the Python the editor at ``location`` will run the plugin in."""
    system = system or current_system()
    if location.variant in ("flatpak", "snap"):
        return EditorPython(
            None,
            None,
            False,
            f"the {location.variant} Python cannot be probed; pass --{location.editor}-python X.Y",
        )
    if location.editor == KRITA:
        return _krita_python(system)
    return _gimp_python(system)


def _krita_python(system: str) -> EditorPython:
    if system == "linux":
        lib = find_kritapykrita()
        if lib is not None:
            m = re.search(rb"libpython3\.(\d+)", lib.read_bytes())
            if m:
                version = (3, int(m.group(1)))
                interp = Path(f"/usr/bin/python3.{version[1]}")
                if interp.exists():
                    probed = probe_interpreter(interp, f"{lib.name} links libpython3.{version[1]}")
                    return EditorPython(version, interp, probed.has_deps, probed.how)
                return EditorPython(version, None, False, f"{lib.name} links libpython3.{version[1]}")
        return EditorPython(None, None, None, "no Krita with Python scripting found (kritapykrita)")
    return EditorPython(BUNDLED_DEFAULTS[KRITA], None, False, "Krita 5.2 bundles Python 3.10")


def find_kritapykrita() -> Path | None:
    """Krita's Python scripting plugin on Linux, near the ``krita`` on PATH or in the usual lib dirs."""
    roots: list[Path] = []
    exe = shutil.which("krita")
    if exe:
        prefix = Path(os.path.realpath(exe)).parent.parent
        roots += [prefix / "lib", prefix / "lib64"]
    roots += [Path("/usr/lib"), Path("/usr/lib64"), Path("/usr/local/lib")]
    for root in roots:
        for pattern in ("kritaplugins/kritapykrita.so", "*/kritaplugins/kritapykrita.so"):
            hits = sorted(root.glob(pattern))
            if hits:
                return hits[0]
    return None


def find_pygimp_interp(system: str | None = None) -> Path | None:
    """GIMP 3's interpreter registry for Python plug-ins, where a GIMP 3 is installed."""
    system = system or current_system()
    if system == "win32":
        bases = [
            Path(os.environ.get(v, "")) / "GIMP 3"
            for v in ("ProgramFiles", "LOCALAPPDATA")
            if os.environ.get(v)
        ]
        bases = [b / "lib" for b in bases]
    elif system == "darwin":
        bases = [Path("/Applications/GIMP.app/Contents/Resources/lib")]
    else:
        bases = [Path("/usr/lib"), Path("/usr/local/lib"), *Path("/usr/lib").glob("*-linux-gnu")]
    for base in bases:
        hit = base / "gimp" / "3.0" / "interpreters" / "pygimp.interp"
        if hit.is_file():
            return hit
    return None


def _gimp_python(system: str) -> EditorPython:
    interp_file = find_pygimp_interp(system)
    if interp_file is not None:
        for line in interp_file.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "python3" and value.strip():
                python = Path(value.strip())
                if not python.is_absolute():  # Windows builds name it relative to the install
                    python = interp_file.parents[4] / python
                return probe_interpreter(python, f"{interp_file}")
    if system == "linux":
        # Debian's GIMP ships no pygimp.interp: plug-ins run by their ``#!/usr/bin/env python3``
        # line, i.e. the python3 on PATH (outside any virtualenv), which then is the one to vendor for.
        venv = os.environ.get("VIRTUAL_ENV") or "\0"
        path = os.pathsep.join(
            p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
        )
        found = shutil.which("python3", path=path)
        if found and editor_release(GIMP).version:
            return probe_interpreter(Path(found), "GIMP 3 runs Python plug-ins with python3 from PATH")

        return EditorPython(None, None, None, "no GIMP 3 found (pygimp.interp)")
    return EditorPython(BUNDLED_DEFAULTS[GIMP], None, False, "GIMP 3 bundles its own Python")


@dataclass(frozen=True)
class InstalledRelease:
    """The editor release found on PATH (``version`` None: none found or it did not say)."""

    editor: str
    version: str | None
    program: str | None = None

    @property
    def series(self) -> str | None:
        """``major.minor``, the granularity the plugins are tested at."""
        m = re.match(r"(\d+)\.(\d+)", self.version or "")
        return f"{m.group(1)}.{m.group(2)}" if m else None

    @property
    def tested(self) -> bool:
        return self.series in TESTED_RELEASES[self.editor]


def _version_output(argv: list[str], env: dict[str, str] | None = None) -> str | None:
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+\.\d+\.\d+)", out.stdout + out.stderr)
    return m.group(1) if m else None


def editor_release(editor: str) -> InstalledRelease:
    """Which release of ``editor`` is installed where this runs, asked of the editor itself.

    Krita: ``kritarunner --version`` (Krita 5.1's ``krita`` needs a display even for that; the
    runner starts offscreen), else ``krita --version`` (5.3 and 6's runner prints no number).
    GIMP: ``gimp-console-3.N --version`` for the newest 3.N on PATH.
    """
    if editor == KRITA:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        for program in ("kritarunner", "krita"):
            exe = shutil.which(program)
            version = _version_output([exe, "--version"], env) if exe else None
            if version:
                return InstalledRelease(KRITA, version, exe)
        return InstalledRelease(KRITA, None)
    names: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and os.path.isdir(folder):
            names.update(n for n in os.listdir(folder) if re.fullmatch(r"gimp-console(-3\.\d+)?(\.exe)?", n))
    for name in sorted(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)], reverse=True):
        exe = shutil.which(name)
        if exe:
            version = _version_output([exe, "--version"])
            if version and version.startswith("3."):
                return InstalledRelease(GIMP, version, exe)
    return InstalledRelease(GIMP, None)
