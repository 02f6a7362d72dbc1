"""Writing and deleting inside a plugin folder without ever following a symbolic link.

The installer writes into folders that other programs (and people) also write to. A symlink
planted where a plugin file goes -- or in place of one of the plugin's folders -- must not
redirect a write or a delete elsewhere, and a tampered manifest must not make uninstall delete
files outside the plugin's folder or files the user changed. Every path is therefore checked
against the component's root: it lies inside it lexically, nothing between the root and the
path (the path included) is a symlink, and deletion also needs the recorded checksum to match.
Symlinks *above* the root (a resource folder kept on another disk) are the user's choice and
are left alone.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from enum import Enum
from pathlib import Path

from .manifest import sha256


class UnsafePath(RuntimeError):
    """A path leaves its root or passes through a symbolic link."""


class Removal(str, Enum):
    REMOVED = "removed"
    MISSING = "missing"
    CHANGED = "changed"  # content differs from what was installed: kept
    UNSAFE = "unsafe"  # outside the root or through a symlink: kept


def check(path: Path, root: Path) -> None:
    """Raise :class:`UnsafePath` unless ``path`` is inside ``root`` and no existing component from
    below ``root`` down to ``path`` itself is a symlink (nor a ``..`` step)."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise UnsafePath(f"{path} is outside {root}") from None
    if not rel.parts or ".." in rel.parts:
        raise UnsafePath(f"{path} is not a file inside {root}")
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePath(f"refusing to go through the symbolic link {current}")


def make_dirs(folder: Path, root: Path) -> list[str]:
    """Create ``folder`` (inside ``root``) and missing parents without following links; return the
    folders created, outermost first. Folders above ``root`` are created as needed too."""
    folder = Path(os.path.abspath(folder))
    if folder != Path(os.path.abspath(root)):
        check(folder, root)
    created = [str(p) for p in reversed([folder, *folder.parents]) if not p.exists() and not p.is_symlink()]
    folder.mkdir(parents=True, exist_ok=True)
    if folder != Path(os.path.abspath(root)):
        check(folder, root)  # nothing raced a link in while we created it
    return created


def write(path: Path, data: bytes, root: Path, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` as a new regular file: a temporary file beside it, renamed over
    it (a rename replaces a symlink itself, never what it points to)."""
    check(path, root)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        check(path, root)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(path: Path, root: Path, digest: str | None) -> Removal:
    """Delete ``path`` only if it is a regular file inside ``root`` reached without links and its
    sha256 is ``digest``; otherwise keep it and say why."""
    try:
        check(path, root)
    except UnsafePath:
        return Removal.UNSAFE if os.path.lexists(path) else Removal.MISSING
    if not path.exists():
        return Removal.MISSING
    if not path.is_file():
        return Removal.UNSAFE
    if digest is not None and sha256(path) != digest:
        return Removal.CHANGED
    path.unlink()
    return Removal.REMOVED
