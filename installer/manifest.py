"""The record of everything ``touchup install`` wrote, so ``uninstall`` removes exactly that.

One JSON file in Touchup's user data folder. It is organised by *component* (``krita:native``,
``gimp:flatpak``, ``autostart`` ...) so that installing GIMP later does not forget Krita, and a
re-install of one component replaces only that component's record.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from ..backend.config import data_dir

MANIFEST_VERSION = 1


def default_manifest_path() -> Path:
    """``<user data dir>/touchup/install-manifest.json``; ``TOUCHUP_MANIFEST`` overrides it."""
    override = os.environ.get("TOUCHUP_MANIFEST")
    if override:
        return Path(override)
    return data_dir() / "install-manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Setting:
    """One key we set in a settings file, with what was there before (None: absent)."""

    file: str
    section: str
    key: str
    value: str
    previous: str | None = None
    file_created: bool = False


class RegistryValue(TypedDict):
    """A Windows Run-key value written by the installer, and the value it replaced."""

    key: str
    name: str
    previous: str | None


@dataclass
class Component:
    """What one install target holds: files (path -> sha256), folders we created, settings."""

    name: str
    editor: str
    target: str  # the plugin folder, or the autostart entry, for display
    files: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    registry: list[RegistryValue] = field(default_factory=list)  # Windows Run-key values

    info: dict[str, Any] = field(default_factory=dict)
    root: str = ""  # the folder every file lives in (older manifests: empty, see uninstall)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Component:
        data = dict(data)
        data["settings"] = [Setting(**s) for s in data.get("settings", [])]
        return cls(**data)


@dataclass
class Manifest:
    path: Path
    components: dict[str, Component] = field(default_factory=dict)
    #: Folders created to hold the manifest itself, removed with it.
    own_dirs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None) -> Manifest:
        path = path or default_manifest_path()
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(
                f"{path} was written by another Touchup version (manifest v{data.get('version')})"
            )
        comps = {name: Component.from_json(c) for name, c in data.get("components", {}).items()}
        return cls(path, comps, list(data.get("own_dirs", [])))

    def owned_files(self) -> set[str]:
        return {f for c in self.components.values() for f in c.files}

    def save(self) -> None:
        """Write atomically; an empty manifest is removed, so uninstall leaves no file behind."""
        if not self.components:
            if self.path.exists():
                self.path.unlink()
            remove_empty_dirs(self.own_dirs)
            return
        self.own_dirs += make_dirs(self.path.parent)
        data = {
            "version": MANIFEST_VERSION,
            "own_dirs": self.own_dirs,
            "components": {name: asdict(c) for name, c in sorted(self.components.items())},
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def make_dirs(folder: Path) -> list[str]:
    """Create ``folder`` and missing parents; return those created, outermost first."""
    created = [str(p) for p in reversed([folder, *folder.parents]) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty_dirs(dirs: list[str]) -> list[Path]:
    """Remove each folder that is empty, deepest first; return those kept because not empty."""
    kept: list[Path] = []
    for d in sorted(set(dirs), key=lambda p: -len(Path(p).parts)):
        path = Path(d)
        if not path.is_dir():
            continue
        try:
            path.rmdir()
        except OSError:
            kept.append(path)
    return kept
