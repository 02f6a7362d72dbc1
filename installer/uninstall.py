"""``touchup uninstall``: remove exactly what the manifest says ``touchup install`` wrote.

Files are removed, settings get their previous value back (or are deleted when there was
none), and the folders the installer created are removed when nothing but Python's own
``__pycache__`` remains in them -- a folder holding anything else (a user's file) is kept and
named in the output.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from . import autostart as autostart_mod
from . import inifile
from .manifest import Component, Manifest, remove_empty_dirs


def _is_bytecode_cache(path: Path) -> bool:
    """A ``__pycache__`` folder holding only compiled files: what importing our files left."""
    return (
        path.name == "__pycache__"
        and path.is_dir()
        and all(p.is_file() and p.suffix in (".pyc", ".pyo") for p in path.iterdir())
    )


def remove_component(comp: Component, say: Callable[[str], None], dry_run: bool = False) -> list[Path]:
    """Undo one component; returns the folders it created, for the caller to remove once empty."""
    verb = "would remove" if dry_run else "removed"
    removed = 0
    for name in sorted(comp.files):
        path = Path(name)
        if path.is_file() or path.is_symlink():
            removed += 1
            if not dry_run:
                path.unlink()
    say(f"  {verb} {removed} file(s)")
    for s in comp.settings:
        file = Path(s.file)
        if inifile.get_value(file, s.section, s.key) is None:
            continue
        say(f"  {'would restore' if dry_run else 'restored'} [{s.section}] {s.key} in {file}")
        if dry_run:
            continue
        inifile.set_value(file, s.section, s.key, s.previous)
        if s.file_created and file.exists() and not file.read_text(errors="replace").strip():
            file.unlink()
    for reg in comp.registry:
        say(f"  {'would remove' if dry_run else 'removed'} HKCU\\{reg['key']}\\{reg['name']}")
        if not dry_run:
            if reg.get("previous"):
                autostart_mod.write_registry(reg["key"], reg["name"], reg["previous"])
            else:
                autostart_mod.delete_registry(reg["key"], reg["name"])
    if dry_run:
        return []
    # Bytecode caches can sit in any folder that held our modules, including the deepest ones.
    for folder in {Path(f).parent for f in comp.files}:
        cache = folder / "__pycache__"
        if _is_bytecode_cache(cache) and _owned_cache(cache, comp):
            shutil.rmtree(cache)
    return [Path(d) for d in comp.dirs]


def _owned_cache(cache: Path, comp: Component) -> bool:
    """Every compiled file in ``cache`` belongs to a module we installed (``mod.cpython-311.pyc``)."""
    ours = {Path(f).stem for f in comp.files if Path(f).parent == cache.parent and f.endswith(".py")}
    return all(p.name.split(".", 1)[0] in ours for p in cache.iterdir())


def uninstall(
    say: Callable[[str], None] = print,
    manifest_path: Path | None = None,
    only: list[str] | None = None,
    dry_run: bool = False,
) -> int:
    """Remove every recorded component (or those whose name starts with one of ``only``)."""
    manifest = Manifest.load(manifest_path)
    if not manifest.components:
        say("touchup uninstall: nothing is installed (no install manifest found)")
        return 0
    folders: list[str] = []
    for name in sorted(manifest.components):
        if only and not any(name == o or name.startswith(o + ":") for o in only):
            continue
        comp = manifest.components[name]
        say(f"{'[dry run] ' if dry_run else ''}{name}: {comp.target}")
        folders += [str(d) for d in remove_component(comp, say, dry_run)]
        if not dry_run:
            del manifest.components[name]
    if not dry_run:
        # The manifest goes first: its folder may be one the components' folders sit in.
        manifest.save()
        kept = remove_empty_dirs(folders)
        # Report only the innermost kept folders: their parents are kept because of them.
        for k in [k for k in kept if not any(o != k and k in o.parents for o in kept)]:
            say(f"kept {k}: it holds files Touchup did not install")
    return 0
