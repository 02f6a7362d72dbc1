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
from . import inifile, safefs
from .manifest import Component, Manifest, remove_empty_dirs


def component_root(comp: Component, path: Path) -> Path | None:
    """The folder ``path`` must lie in to be removed, or None when it may not be touched.

    The root is recorded at install (older manifests: the plugin folder in ``target``, else the
    file's own folder). Whatever the manifest says, the file's first step below the root must be
    named for Touchup -- a tampered manifest cannot send uninstall to ``~/.bashrc``.
    """
    root = (
        Path(comp.root)
        if comp.root
        else Path(comp.target)
        if Path(comp.target).is_absolute()
        else path.parent
    )
    try:
        first = path.relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None
    return root if first.lower().startswith(("touchup", "org.touchup")) else None


def _is_bytecode_cache(path: Path) -> bool:
    """A ``__pycache__`` folder holding only compiled files: what importing our files left."""
    return (
        path.name == "__pycache__"
        and not path.is_symlink()
        and path.is_dir()
        and all(p.is_file() and p.suffix in (".pyc", ".pyo") for p in path.iterdir())
    )


def remove_component(comp: Component, say: Callable[[str], None], dry_run: bool = False) -> list[Path]:
    """Undo one component; returns the folders it created, for the caller to remove once empty."""
    verb = "would remove" if dry_run else "removed"
    removed = 0
    kept: list[tuple[Path, safefs.Removal]] = []
    for name in sorted(comp.files):
        path = Path(name)
        root = component_root(comp, path)
        if root is None:
            kept.append((path, safefs.Removal.UNSAFE))
            continue
        if dry_run:
            removed += path.is_file() and not path.is_symlink()
            continue
        outcome = safefs.remove(path, root, comp.files[name])
        if outcome == safefs.Removal.REMOVED:
            removed += 1
        elif outcome != safefs.Removal.MISSING:
            kept.append((path, outcome))
    say(f"  {verb} {removed} file(s)")
    for path, outcome in kept:
        why = (
            "changed since it was installed"
            if outcome == safefs.Removal.CHANGED
            else "outside the plugin folder or a link"
        )
        say(f"  kept {path}: {why}")
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
        previous = reg.get("previous")
        if not dry_run:
            if previous:
                autostart_mod.write_registry(reg["key"], reg["name"], previous)
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
