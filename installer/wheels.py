"""Vendoring pyzmq and msgpack for an editor's embedded Python.

Krita and GIMP run plugins in their own Python (Krita 5.2 on Windows and macOS embeds 3.10;
AppImage and Flatpak builds are read-only), so ``pip install`` into that Python is not an
option. Instead the installer downloads *binary wheels built for that Python* -- chosen by its
version, ABI and platform, not by the Python running the installer -- and unpacks them into
the plugin's private ``lib`` folder, which the plugin puts on ``sys.path``.

Selection is done with :mod:`packaging.tags` (the same ordered tag lists pip uses), so the best
wheel for the target wins: e.g. a ``cp311-cp311-manylinux_2_28`` wheel over a ``cp312-abi3``
one for Python 3.11, and nothing at all for a platform with no binary wheel.
"""

from __future__ import annotations

import platform
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging import tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .manifest import sha256
from .wheel_pins import PINNED_VERSIONS, WHEEL_SHA256

#: What the plugins import besides the standard library (see ``touchup.shared``).
PLUGIN_REQUIREMENTS = ("pyzmq", "msgpack")
#: The import name of each requirement, to check whether a Python already has it.
IMPORT_NAMES = {"pyzmq": "zmq", "msgpack": "msgpack"}

#: Oldest glibc that manylinux wheels target (manylinux2014).
_MIN_GLIBC = (2, 17)
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}


@dataclass(frozen=True)
class WheelTarget:
    """The Python a plugin will run in: CPython ``python`` on ``system``/``machine``.

    ``glibc`` is the C library version of the Linux system (wheels built for a newer glibc
    do not load); ``macos`` is the oldest macOS release to support.
    """

    python: tuple[int, int]
    system: str  # linux | win32 | darwin
    machine: str = "x86_64"  # x86_64 | aarch64 | arm64 | AMD64 ...
    glibc: tuple[int, int] = (2, 28)
    macos: tuple[int, int] = (11, 0)

    @property
    def key(self) -> str:
        """A short name for logs and cache folders, e.g. ``cp311-linux-x86_64``."""
        return f"cp{self.python[0]}{self.python[1]}-{self.system}-{self.machine}"

    def platforms(self) -> list[str]:
        """Platform tags this target accepts, best first."""
        arch = _normalise_machine(self.system, self.machine)
        if self.system == "win32":
            return [{"x86_64": "win_amd64", "arm64": "win_arm64", "x86": "win32"}.get(arch, f"win_{arch}")]
        if self.system == "darwin":
            return list(tags.mac_platforms(self.macos, arch))
        out: list[str] = []
        major, minor = self.glibc
        for m in range(minor, 4, -1):
            if (major, m) < (2, 5):
                break
            out.append(f"manylinux_{major}_{m}_{arch}")
            if (major, m) in _LEGACY_MANYLINUX:
                out.append(f"{_LEGACY_MANYLINUX[(major, m)]}_{arch}")
        return out

    def abis(self) -> list[str]:
        return [f"cp{self.python[0]}{self.python[1]}", "abi3", "none"]

    def tags(self) -> list[tags.Tag]:
        """Every wheel tag this target can load, in pip's order of preference."""
        platforms = self.platforms()
        ordered = list(tags.cpython_tags(self.python, [f"cp{self.python[0]}{self.python[1]}"], platforms))
        ordered += list(tags.compatible_tags(self.python, f"cp{self.python[0]}{self.python[1]}", platforms))
        return ordered


def _normalise_machine(system: str, machine: str) -> str:
    m = machine.lower()
    if m in ("amd64", "x64", "x86_64"):
        return "x86_64"
    if m in ("arm64", "aarch64"):
        return "arm64" if system in ("darwin", "win32") else "aarch64"
    if m in ("i386", "i686", "x86"):
        return "x86" if system == "win32" else "i686"
    return m


def host_target(python: tuple[int, int]) -> WheelTarget:
    """A target for an editor Python of version ``python`` on this machine's platform."""
    system = (
        "win32" if sys.platform.startswith("win") else ("darwin" if sys.platform == "darwin" else "linux")
    )
    glibc = (2, 17)
    if system == "linux":
        name, version = platform.libc_ver()
        m = re.match(r"(\d+)\.(\d+)", version or "")
        if name == "glibc" and m:
            glibc = (int(m.group(1)), int(m.group(2)))
    return WheelTarget(python=python, system=system, machine=platform.machine() or "x86_64", glibc=glibc)


def select_wheels(
    candidates: list[Path], target: WheelTarget, projects: Sequence[str] = PLUGIN_REQUIREMENTS
) -> dict[str, Path]:
    """The best wheel file for each project among ``candidates`` (missing projects are absent).

    Among wheels the target can load, a newer release wins; within one release, the tag pip
    would prefer wins.
    """
    rank = {tag: i for i, tag in enumerate(target.tags())}
    wanted = {canonicalize_name(p) for p in projects}
    best: dict[str, tuple[tuple, Path]] = {}
    for path in candidates:
        try:
            name, version, _build, wheel_tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if name not in wanted:
            continue
        ranks = [rank[t] for t in wheel_tags if t in rank]
        if not ranks:
            continue
        score = (version, -min(ranks))
        if name not in best or score > best[name][0]:
            best[name] = (score, path)
    return {name: path for name, (_score, path) in best.items()}


def pip_download_command(
    target: WheelTarget, dest: Path, projects: Sequence[str] = PLUGIN_REQUIREMENTS, offline: bool = False
) -> list[str]:
    """The ``pip download`` that fetches binary wheels for ``target`` (never builds anything)."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
    cmd += ["--only-binary=:all:", "--implementation", "cp"]
    cmd += ["--python-version", f"{target.python[0]}.{target.python[1]}"]
    for abi in target.abis():
        cmd += ["--abi", abi]
    for plat in target.platforms():
        cmd += ["--platform", plat]
    cmd += ["--dest", str(dest)]
    if offline:
        cmd += ["--no-index", "--find-links", str(dest)]
    return cmd + [f"{p}=={PINNED_VERSIONS[p]}" if p in PINNED_VERSIONS else p for p in projects]


class WheelError(RuntimeError):
    """No usable wheel could be obtained; the message says what to do."""


def pinned(paths: list[Path], pins: dict[str, str] | None = None) -> list[Path]:
    """Those of ``paths`` that are pinned wheels whose content matches the pinned hash."""
    pins = WHEEL_SHA256 if pins is None else pins
    return [p for p in paths if p.name in pins and sha256(p) == pins[p.name]]


def fetch_wheels(
    target: WheelTarget,
    cache_dir: Path,
    projects: Sequence[str] = PLUGIN_REQUIREMENTS,
    pins: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Pinned wheels for ``target`` from ``cache_dir``, downloading what is missing with pip.

    The cache is tried first without network, so a second install (or an offline machine with
    a filled cache) never touches the index. Only wheels listed in :mod:`.wheel_pins` whose
    sha256 matches are ever chosen: anything else in the cache is ignored, and a pinned name
    with other content is reported.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    chosen = select_wheels(pinned(sorted(cache_dir.glob("*.whl")), pins), target, projects)
    if len(chosen) == len(projects):
        return chosen
    proc = subprocess.run(pip_download_command(target, cache_dir, projects), capture_output=True, text=True)
    cached = sorted(cache_dir.glob("*.whl"))
    chosen = select_wheels(pinned(cached, pins), target, projects)
    missing = sorted({canonicalize_name(p) for p in projects} - set(chosen))
    if missing:
        tampered = [p.name for p in cached if p.name in (pins or WHEEL_SHA256) and p not in pinned([p], pins)]
        if tampered:
            raise WheelError(
                f"{', '.join(tampered)} in {cache_dir} does not match its pinned sha256: delete it and run the "
                "install again"
            )
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise WheelError(
            f"no pinned binary wheel of {', '.join(missing)} for {target.key} ({detail[0]}); "
            "this platform's wheels are not in Touchup's pin list (installer/wheel_pins.py)"
        )
    return chosen


def unpack_wheels(wheels: dict[str, Path] | list[Path], lib_dir: Path) -> list[Path]:
    """Unpack wheels into ``lib_dir`` (a plain sys.path folder) and return the top-level
    entries written, so the caller can record exactly what it placed there.

    A wheel is a zip whose root is meant for site-packages, so extraction is all "installing"
    means here; ``.data`` folders (scripts, headers) are skipped because a plugin needs none.
    """
    files = list(wheels.values()) if isinstance(wheels, dict) else list(wheels)
    lib_dir.mkdir(parents=True, exist_ok=True)
    root = lib_dir.resolve()
    written: set[Path] = set()
    for wheel in files:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                top = info.filename.split("/", 1)[0]
                if top.endswith(".data"):
                    continue
                # Resolved containment, not a string prefix: "../lib-evil/x" starts with ".../lib"
                # as text but lies beside it. Absolute names and symlink entries are refused too.
                target = (root / info.filename).resolve()
                link = stat.S_ISLNK(info.external_attr >> 16)
                if (
                    link
                    or Path(info.filename).is_absolute()
                    or not target.is_relative_to(root)
                    or target == root
                ):
                    raise WheelError(f"{wheel.name} holds a path outside its folder: {info.filename}")
                written.add(lib_dir / top)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    target.chmod(mode | 0o200)
    return sorted(written)


def python_can_import(python: str | Path, modules: tuple[str, ...] | None = None) -> bool:
    """Whether the interpreter at ``python`` imports every module in ``modules`` (default: the plugins' needs)."""
    modules = modules or tuple(IMPORT_NAMES.values())
    code = "import " + ", ".join(modules)
    try:
        return subprocess.run([str(python), "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def python_version_of(python: str | Path) -> tuple[int, int] | None:
    """``(major, minor)`` of the interpreter at ``python``, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    return (int(m.group(1)), int(m.group(2))) if out.returncode == 0 and m else None
