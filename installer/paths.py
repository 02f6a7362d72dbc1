"""Where Krita and GIMP 3 keep their per-user resources, on Linux, Windows and macOS.

Both editors load user plugins from a folder inside their per-user resource folder, and both
move that folder when they are packaged as Flatpak or Snap (the sandbox gets its own "home").
Nothing here writes anything: the functions return candidate locations and say which ones
exist, so the installer (and ``touchup doctor``) can decide where to put the plugins.

Documented locations used here:

* Krita: resource folder ``<user data dir>/krita`` (``~/.local/share/krita`` on Linux,
  ``%APPDATA%\\krita`` on Windows, ``~/Library/Application Support/krita`` on macOS), Python
  plugins in its ``pykrita`` subfolder; settings in ``kritarc`` (``~/.config/kritarc``,
  ``%LOCALAPPDATA%\\kritarc``, ``~/Library/Preferences/kritarc``). Flatpak ``org.kde.krita``
  keeps both under ``~/.var/app/org.kde.krita/{data,config}``; the Snap under
  ``~/snap/krita/current/{.local/share,.config}``.
* GIMP 3: profile folder ``<user config dir>/GIMP/<major.minor>`` (``~/.config/GIMP/3.0``,
  ``%APPDATA%\\GIMP\\3.0``, ``~/Library/Application Support/GIMP/3.0``), plug-ins in its
  ``plug-ins`` subfolder; ``GIMP3_DIRECTORY`` overrides the profile folder. Flatpak
  ``org.gimp.GIMP`` uses ``~/.var/app/org.gimp.GIMP/config/GIMP/3.0``; the Snap
  ``~/snap/gimp/current/.config/GIMP/3.0``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from platformdirs import macos, unix, windows
from platformdirs.api import PlatformDirsABC

KRITA = "krita"
GIMP = "gimp"
#: GIMP 3 profile folder used when no existing 3.x profile is found.
GIMP_DEFAULT_SERIES = "3.0"


@dataclass(frozen=True)
class EditorLocation:
    """One place an editor may read user plugins from.

    ``resource_dir`` is Krita's resource folder or GIMP's profile folder; ``plugin_dir`` is the
    folder plugins go in; ``config_file`` is Krita's ``kritarc`` (GIMP needs none).
    """

    editor: str
    variant: str  # "native", "flatpak", "snap" or "custom"
    resource_dir: Path
    plugin_dir: Path
    config_file: Path | None = None

    @property
    def exists(self) -> bool:
        """Whether the editor has ever run from here (its resource folder exists)."""
        return self.resource_dir.is_dir()

    def describe(self) -> str:
        return f"{self.editor} ({self.variant}) {self.plugin_dir}"


def current_system() -> str:
    """``linux``, ``win32`` or ``darwin`` (other Unixes are treated like Linux)."""
    if sys.platform.startswith("win"):
        return "win32"
    if sys.platform == "darwin":
        return "darwin"
    return "linux"


def _dirs(system: str, app: str) -> PlatformDirsABC:
    """The platformdirs implementation for ``system`` (not necessarily this machine's)."""
    if system == "win32":
        return windows.Windows(app, appauthor=False, roaming=True)
    if system == "darwin":
        return macos.MacOS(app, appauthor=False)
    return unix.Unix(app, appauthor=False)


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())


def krita_locations(system: str | None = None, env: Mapping[str, str] | None = None) -> list[EditorLocation]:
    """Every place Krita may keep user plugins on ``system``, native first."""
    system = system or current_system()
    env = os.environ if env is None else env
    with _Environ(env):
        data = Path(_dirs(system, "krita").user_data_dir)
        if system == "win32":
            kritarc = Path(windows.Windows(roaming=False).user_data_dir) / "kritarc"
        elif system == "darwin":
            kritarc = _home(env) / "Library" / "Preferences" / "kritarc"
        else:
            kritarc = Path(unix.Unix().user_config_dir) / "kritarc"
    out = [EditorLocation(KRITA, "native", data, data / "pykrita", kritarc)]
    if system == "linux":
        home = _home(env)
        flat = home / ".var" / "app" / "org.kde.krita"
        snap = home / "snap" / "krita" / "current"
        out.append(
            EditorLocation(
                KRITA,
                "flatpak",
                flat / "data" / "krita",
                flat / "data" / "krita" / "pykrita",
                flat / "config" / "kritarc",
            )
        )
        snap_data = snap / ".local" / "share" / "krita"
        out.append(
            EditorLocation(KRITA, "snap", snap_data, snap_data / "pykrita", snap / ".config" / "kritarc")
        )
    return out


def gimp_locations(system: str | None = None, env: Mapping[str, str] | None = None) -> list[EditorLocation]:
    """Every place GIMP 3 may keep user plug-ins on ``system``, native first.

    ``GIMP3_DIRECTORY`` (GIMP's own override) replaces the native profile. Where several 3.x
    profiles exist (3.0, 3.2 ...) the newest one is used, as that is the GIMP that runs.
    """
    system = system or current_system()
    env = os.environ if env is None else env
    with _Environ(env):
        config = Path(_dirs(system, "GIMP").user_config_dir)
    override = env.get("GIMP3_DIRECTORY")
    native = Path(override) if override else _newest_series(config)
    out = [_gimp_location("native", native)]
    if system == "linux":
        home = _home(env)
        out.append(_gimp_location("flatpak", _newest_series(home / ".var/app/org.gimp.GIMP/config/GIMP")))
        out.append(_gimp_location("snap", _newest_series(home / "snap/gimp/current/.config/GIMP")))
    return out


def _gimp_location(variant: str, profile: Path) -> EditorLocation:
    return EditorLocation(GIMP, variant, profile, profile / "plug-ins")


def _newest_series(gimp_root: Path) -> Path:
    """``<root>/3.N`` for the highest N that exists, else ``<root>/3.0``."""
    series: list[tuple[int, Path]] = []
    if gimp_root.is_dir():
        for child in gimp_root.iterdir():
            m = re.fullmatch(r"3\.(\d+)", child.name)
            if m and child.is_dir():
                series.append((int(m.group(1)), child))
    return max(series)[1] if series else gimp_root / GIMP_DEFAULT_SERIES


def custom_location(editor: str, directory: str | Path, system: str | None = None) -> EditorLocation:
    """A location given on the command line: Krita's resource folder or GIMP's profile folder.

    Accepting the plugin folder itself too (``.../pykrita`` or ``.../plug-ins``) saves users
    from guessing which level the flag means. For Krita, kritarc is looked up beside a known
    variant (a Flatpak resource folder keeps its kritarc in the Flatpak), else the native one.
    """
    path = Path(directory).expanduser()
    if editor == KRITA:
        if path.name == "pykrita":
            path = path.parent
        kritarc = krita_locations(system)[0].config_file
        for loc in krita_locations(system):
            if loc.resource_dir == path:
                kritarc = loc.config_file
        # A resource folder that is not a known one (a test HOME, a portable Krita): kritarc
        # goes where Krita looks for it relative to that HOME when the layout is XDG-like.
        if path.parent.name == "share" and path.parent.parent.name == ".local":
            kritarc = path.parent.parent.parent / ".config" / "kritarc"
        return EditorLocation(KRITA, "custom", path, path / "pykrita", kritarc)
    if path.name == "plug-ins":
        path = path.parent
    return _gimp_location("custom", path)


def find_locations(
    editor: str,
    override: str | Path | None = None,
    system: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[EditorLocation]:
    """Where to install for ``editor``: the override, else every existing location, else the native one.

    Installing into every existing variant matters on Linux, where a user may have both the
    distribution's Krita and the Flatpak; each only sees its own folder.
    """
    if override:
        return [custom_location(editor, override, system)]
    candidates = krita_locations(system, env) if editor == KRITA else gimp_locations(system, env)
    found = [c for c in candidates if c.exists]
    return found or candidates[:1]


class _Environ:
    """Temporarily make ``os.environ`` equal ``env`` (platformdirs reads the process environment)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.saved: dict[str, str] | None = None

    def __enter__(self) -> None:
        if self.env is os.environ:
            return
        self.saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            os.environ.clear()
            os.environ.update(self.saved)
