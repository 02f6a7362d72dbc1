"""Installing the plugins into Krita and GIMP 3, and the tray into the login session.

For each target the installer first works out the complete set of files it wants in place
(plugin sources, a private copy of ``touchup.shared``, vendored wheels, the plugin's
``config.json`` naming this environment's backend command), then:

* refuses, before writing anything, when one of those paths holds a file it did not create
  (``--force`` takes such files over);
* writes only what changed, removes files a previous version installed that are no longer
  part of the plugin, and sets the editor settings it needs (Krita's ``enable_<plugin>``);
* records every file, created folder and changed setting in the manifest.

So a second run upgrades in place and reports "unchanged" for everything already current, and
``touchup uninstall`` can undo exactly what was done.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import platformdirs

from ..shared import __version__
from . import autostart as autostart_mod
from . import editors, inifile, safefs, wheels
from .manifest import Component, Manifest, Setting, make_dirs, remove_empty_dirs, sha256
from .paths import GIMP, KRITA, EditorLocation, find_locations

KRITA_PLUGIN = "touchup_krita"
#: Files that are build or runtime by-products and never part of a plugin.
_SKIP_NAMES = {"__pycache__", ".pytest_cache", "lib", "config.json", "connection.touchup"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


class InstallError(RuntimeError):
    """The install cannot proceed; the message tells the user what to do."""


@dataclass
class FileSpec:
    """One file the installer wants at ``dest``: copied from ``source`` or written from ``content``."""

    dest: Path
    source: Path | None = None
    content: bytes | None = None
    executable: bool = False

    def data(self) -> bytes:
        return self.content if self.content is not None else self.source.read_bytes()  # type: ignore[union-attr]

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(self.data()).hexdigest()


@dataclass
class Plan:
    """Everything one component needs; built without touching the target, applied by :func:`apply`."""

    component: str
    editor: str
    target: str
    files: list[FileSpec] = field(default_factory=list)
    settings: list[tuple[Path, str, str, str]] = field(default_factory=list)  # file, section, key, value
    registry: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    #: The folder every file of this component lives in; nothing below it is written through a link.
    root: Path | None = None


@dataclass
class Options:
    krita: bool = False
    gimp: bool = False
    autostart: bool = False
    dry_run: bool = False
    force: bool = False
    krita_dir: str | None = None
    gimp_dir: str | None = None
    krita_python: str | None = None
    gimp_python: str | None = None
    vendor: str = "auto"  # auto | always | never
    wheel_cache: str | None = None
    endpoint: str | None = None


# -- plugin sources ---------------------------------------------------------------------------
def _walk(root: Path) -> Iterator[Path]:
    """Plugin source files under ``root``, without caches, vendored libs or local config."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SKIP_NAMES for part in rel.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        if path.is_file():
            yield path


def _package_dir(stack: ExitStack, package: str) -> Path:
    """A real folder holding ``package``'s files (they ship as package data).

    The package's own folder when it is on disk (the usual case, also for editable installs,
    where the package may show up as a namespace package); otherwise (a zipped install) a
    temporary extracted copy that lives as long as ``stack``.
    """
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location).is_dir():
            return Path(location)
    return Path(stack.enter_context(resources.as_file(resources.files(package))))


def gimp_plugin_name(source: Path) -> str:
    """The GIMP plug-in folder in the package: the folder ``X`` holding ``X/X.py``."""
    for child in sorted(source.iterdir()):
        if child.is_dir() and (child / f"{child.name}.py").is_file():
            return child.name
    raise InstallError(f"no GIMP plug-in (a folder X holding X.py) found in {source}")


def configured_endpoint() -> str:
    """The endpoint in the backend's config (where ``touchup serve`` and the tray listen).

    A config that cannot be read gives the protocol's default: it must block neither
    installing the plugins nor ``touchup doctor``, which reports the config itself.
    """
    try:
        from ..backend.config import load_config

        return load_config().endpoint
    except Exception:
        from ..shared.protocol import DEFAULT_ENDPOINT

        return DEFAULT_ENDPOINT


def plugin_config(opts: Options) -> bytes:
    """``config.json`` for the plugins: how their Start button launches this environment's
    backend (absolute interpreter path; ``{endpoint}`` is filled in by the plugin)."""
    from ..backend.app.launch import backend_command

    data = {
        "backend_command": shlex.join(backend_command("{endpoint}")),
        "endpoint": opts.endpoint or configured_endpoint(),
        "installed_version": __version__,
    }
    return (json.dumps(data, indent=2) + "\n").encode()


# -- planning ---------------------------------------------------------------------------------
#: ``lib/touchup/__init__.py``: a regular package wins over any other ``touchup`` namespace
#: portion later on the editor's sys.path, so the plugin always gets the protocol it shipped with.
_LIB_PACKAGE_INIT = (
    b'"""Private copy of Touchup\'s protocol package for this plugin (written by touchup install)."""\n'
)


def _shared_files(stack: ExitStack, lib: Path) -> list[FileSpec]:
    shared = _package_dir(stack, "touchup.shared")
    files = [FileSpec(lib / "touchup" / "__init__.py", content=_LIB_PACKAGE_INIT)]
    return files + [FileSpec(lib / "touchup" / "shared" / p.relative_to(shared), p) for p in _walk(shared)]


def _vendored_files(
    stack: ExitStack, opts: Options, loc: EditorLocation, lib: Path, plan: Plan, flag: str | None
) -> list[FileSpec]:
    """Wheels for the editor's Python, unpacked into a staging folder, as files to place in ``lib``."""
    py = editors.from_flag(flag) if flag else editors.detect(loc)
    plan.info["python"] = {"version": py.version_text, "has_deps": py.has_deps, "how": py.how}
    if opts.vendor == "never":
        plan.notes.append(
            f"editor Python {py.version_text} ({py.how}); not vendoring pyzmq/msgpack (--vendor never)"
        )
        return []
    if opts.vendor == "auto" and py.has_deps:
        plan.notes.append(f"editor Python {py.version_text} already imports zmq and msgpack ({py.how})")
        return []
    if py.version is None:
        plan.notes.append(
            f"WARNING: cannot tell which Python {loc.editor} uses ({py.how}); pyzmq/msgpack not vendored. "
            f"Pass --{loc.editor}-python X.Y (or a path to that Python) if the plugin reports them missing."
        )
        return []
    target = wheels.host_target(py.version)
    cache = Path(opts.wheel_cache) if opts.wheel_cache else wheel_cache_dir()
    try:
        chosen = wheels.fetch_wheels(target, cache)
    except wheels.WheelError as exc:
        raise InstallError(str(exc)) from None
    staging = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="touchup-wheels-")))
    wheels.unpack_wheels(chosen, staging)
    plan.info["vendored"] = sorted(p.name for p in chosen.values())
    plan.notes.append(f"vendoring {', '.join(plan.info['vendored'])} for Python {py.version_text} ({py.how})")
    return [
        FileSpec(lib / p.relative_to(staging), p, executable=bool(p.stat().st_mode & stat.S_IXUSR))
        for p in sorted(staging.rglob("*"))
        if p.is_file()
    ]


def wheel_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("touchup", appauthor=False)) / "wheels"


def plan_krita(stack: ExitStack, opts: Options, loc: EditorLocation) -> Plan:
    source = _package_dir(stack, "touchup.plugin_krita")
    desktop = source / f"{KRITA_PLUGIN}.desktop"
    if not desktop.is_file():
        raise InstallError(f"the Krita plugin is missing from this Touchup build ({desktop})")
    pkg = loc.plugin_dir / KRITA_PLUGIN
    plan = Plan(f"krita:{loc.variant}", KRITA, str(loc.plugin_dir), root=loc.plugin_dir)
    plan.files.append(FileSpec(loc.plugin_dir / desktop.name, desktop))
    plan.files += [
        FileSpec(pkg / p.relative_to(source / KRITA_PLUGIN), p) for p in _walk(source / KRITA_PLUGIN)
    ]
    # The .action file (default shortcuts) ships inside the plugin folder, where Krita finds it;
    # a second copy in the resource folder's actions/ would register every action twice.
    plan.files += _shared_files(stack, pkg / "lib")
    plan.files += _vendored_files(stack, opts, loc, pkg / "lib", plan, opts.krita_python)
    plan.files.append(FileSpec(pkg / "config.json", content=plugin_config(opts)))
    if loc.config_file is not None:
        plan.settings.append((loc.config_file, "python", f"enable_{KRITA_PLUGIN}", "true"))
    return plan


def plan_gimp(stack: ExitStack, opts: Options, loc: EditorLocation) -> Plan:
    source = _package_dir(stack, "touchup.plugin_gimp")
    name = gimp_plugin_name(source)
    dest = loc.plugin_dir / name
    plan = Plan(f"gimp:{loc.variant}", GIMP, str(loc.plugin_dir), root=loc.plugin_dir)
    for p in _walk(source / name):
        rel = p.relative_to(source / name)
        # GIMP silently ignores a plug-in whose main file is not executable.
        plan.files.append(FileSpec(dest / rel, p, executable=rel == Path(f"{name}.py")))
    plan.files += _shared_files(stack, dest / "lib")
    plan.files += _vendored_files(stack, opts, loc, dest / "lib", plan, opts.gimp_python)
    plan.files.append(FileSpec(dest / "config.json", content=plugin_config(opts)))
    return plan


def plan_autostart(opts: Options) -> Plan:
    entry = autostart_mod.autostart_entry(autostart_mod.tray_command())
    plan = Plan("autostart", "tray", entry.description)
    if entry.path is not None:
        plan.root = entry.path.parent
        plan.files.append(FileSpec(entry.path, content=entry.content))
    if entry.registry is not None:
        plan.registry.append(entry.registry)
    return plan


def build_plans(stack: ExitStack, opts: Options) -> list[Plan]:
    krita, gimp = opts.krita, opts.gimp
    if not (krita or gimp):
        krita = gimp = True  # no editor named: every editor
    plans: list[Plan] = []
    if krita:
        plans += [plan_krita(stack, opts, loc) for loc in find_locations(KRITA, opts.krita_dir)]
    if gimp:
        plans += [plan_gimp(stack, opts, loc) for loc in find_locations(GIMP, opts.gimp_dir)]
    if opts.autostart:
        plans.append(plan_autostart(opts))
    return plans


# -- applying ---------------------------------------------------------------------------------
def plan_root(plan: Plan) -> Path:
    return plan.root if plan.root is not None else Path(plan.target)


def conflicts(plan: Plan, manifest: Manifest) -> list[Path]:
    """Paths the plan would write that hold something the installer did not create, or that
    lie outside the component's folder or behind a symbolic link (never written, even with --force)."""
    owned = manifest.owned_files()
    out = []
    for spec in plan.files:
        if spec.dest.is_dir() or (os.path.lexists(spec.dest) and str(spec.dest) not in owned):
            out.append(spec.dest)
    return out


def unsafe_paths(plan: Plan) -> list[str]:
    out = []
    for spec in plan.files:
        try:
            safefs.check(spec.dest, plan_root(plan))
        except safefs.UnsafePath as exc:
            out.append(str(exc))
    return out


def apply(plan: Plan, manifest: Manifest, dry_run: bool, say: Callable[[str], None]) -> None:
    old = manifest.components.get(plan.component)
    root = plan_root(plan)
    comp = Component(plan.component, plan.editor, plan.target, info=dict(plan.info), root=str(root))
    comp.dirs = [d for d in (old.dirs if old else []) if Path(d).is_dir()]
    counts = {"new": 0, "updated": 0, "unchanged": 0, "removed": 0}
    wanted = {str(s.dest) for s in plan.files}
    for spec in plan.files:
        digest = spec.digest()
        exists = spec.dest.is_file() and not spec.dest.is_symlink()
        state = "new" if not exists else ("unchanged" if sha256(spec.dest) == digest else "updated")
        counts[state] += 1
        if not dry_run:
            comp.dirs += safefs.make_dirs(spec.dest.parent, root)
            mode = None
            if spec.executable:
                mode = 0o755
            if state != "unchanged":
                safefs.write(spec.dest, spec.data(), root, mode=mode if mode is not None else 0o644)
            elif mode is not None:
                spec.dest.chmod(spec.dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        elif state != "unchanged":
            say(f"  would write {spec.dest} ({state})")
        comp.files[str(spec.dest)] = digest
    for stale in sorted(set(old.files) - wanted if old else ()):
        assert old is not None
        counts["removed"] += 1
        if dry_run:
            say(f"  would remove {stale} (no longer part of Touchup)")
            continue
        outcome = safefs.remove(Path(stale), Path(old.root) if old.root else root, old.files[stale])
        if outcome in (safefs.Removal.CHANGED, safefs.Removal.UNSAFE):
            counts["removed"] -= 1
            why = (
                "it was changed after install"
                if outcome == safefs.Removal.CHANGED
                else "not a plain file here"
            )
            say(f"  kept {stale}: {why}")
    for file, section, key, value in plan.settings:
        prior = next((s for s in (old.settings if old else []) if (s.file, s.key) == (str(file), key)), None)
        previous = prior.previous if prior else inifile.get_value(file, section, key)
        created = prior.file_created if prior else not file.exists()
        say(f"  {'would set' if dry_run else 'set'} [{section}] {key}={value} in {file}")
        if not dry_run:
            comp.dirs += make_dirs(file.parent)
            inifile.set_value(file, section, key, value)
        comp.settings.append(Setting(str(file), section, key, value, previous, created))
    for key, name, command in plan.registry:
        say(f"  {'would set' if dry_run else 'set'} HKCU\\{key}\\{name} = {command}")
        previous = None
        if not dry_run:
            previous = autostart_mod.write_registry(key, name, command)
        earlier = next((r for r in (old.registry if old else []) if r["name"] == name), None)
        comp.registry.append(
            {"key": key, "name": name, "previous": earlier["previous"] if earlier else previous}
        )

    if not dry_run:
        remove_empty_dirs(comp.dirs)  # folders we created that an upgrade left empty
        comp.dirs = [d for d in comp.dirs if Path(d).is_dir()]
        manifest.components[plan.component] = comp
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    say(f"  files: {summary or 'none'}")


def install(opts: Options, say: Callable[[str], None] = print, manifest_path: Path | None = None) -> int:
    """Run the install; returns a process exit code (0 ok, 1 refused or failed)."""
    manifest = Manifest.load(manifest_path)
    with ExitStack() as stack:
        try:
            plans = build_plans(stack, opts)
        except InstallError as exc:
            say(f"touchup install: {exc}")
            return 1
        unsafe = [reason for p in plans for reason in unsafe_paths(p)]
        if unsafe:  # never, not even with --force: a link would send our files elsewhere
            say("touchup install: refusing to write through symbolic links or outside the plugin folders:")
            for reason in unsafe[:10]:
                say(f"  {reason}")
            say("Remove those links (or point the editor's folder option at a plain folder) and run again.")
            return 1
        blocked = {p.component: conflicts(p, manifest) for p in plans}
        blocked = {k: v for k, v in blocked.items() if v}
        if blocked and not opts.force:
            say("touchup install: refusing to overwrite files that Touchup did not install:")
            for paths in blocked.values():
                for path in paths[:10]:
                    say(f"  {path}")
                if len(paths) > 10:
                    say(f"  ... and {len(paths) - 10} more")
            say("Move them away (a plugin copied by hand?) and run again, or pass --force to take them over.")
            return 1
        for plan in plans:
            say(f"{'[dry run] ' if opts.dry_run else ''}{plan.component}: {plan.target}")
            for note in plan.notes:
                say(f"  {note}")
            apply(plan, manifest, opts.dry_run, say)
        if not opts.dry_run:
            manifest.save()
            say(f"recorded in {manifest.path}")
            if any(p.editor == KRITA for p in plans):
                say("Restart Krita to load the plugin (Settings > Dock Windows > Touchup).")
            if any(p.editor == GIMP for p in plans):
                say("Restart GIMP 3 to load the plug-in (Filters > Touchup > Refine Selection...).")
    return 0


def tree_snapshot(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (tests and doctor compare these)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
