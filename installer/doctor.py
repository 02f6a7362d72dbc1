"""``touchup doctor``: one table answering "why does Refine not work here?".

Every row is a check a user can act on: what was found, and when it is not right, the command
or step that fixes it. Nothing is changed. Exit code 1 when any row failed, so scripts (and
the troubleshooting docs) can rely on it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..shared import __version__
from . import editors
from .install import KRITA_PLUGIN, configured_endpoint, gimp_plugin_name
from .manifest import Manifest
from .paths import GIMP, KRITA, EditorLocation, find_locations

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "--"


@dataclass
class Row:
    check: str
    status: str
    detail: str
    fix: str = ""


def _python_row() -> Row:
    ver = platform.python_version()
    status = OK if sys.version_info >= (3, 10) else FAIL
    return Row(
        "Python", status, f"{ver} ({sys.executable})", "" if status == OK else "use Python 3.10 or newer"
    )


def _torch_rows() -> list[Row]:
    """torch and the compute device. torch is optional: the classic engine needs none."""
    if importlib.util.find_spec("torch") is None:
        return [
            Row(
                "torch",
                INFO,
                "not installed: only the CPU classic engine is available",
                "pip install 'touchup[diffusion]' (pick the torch build for your GPU first)",
            ),
            Row("device", OK, f"cpu, {_ram_text()}"),
        ]
    try:
        import torch
    except Exception as exc:  # a broken CUDA install raises all kinds of errors
        return [
            Row(
                "torch",
                FAIL,
                f"installed but does not import: {exc}",
                "reinstall torch for your CUDA version",
            )
        ]
    rows = [Row("torch", OK, f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")]
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        rows.append(Row("device", OK, f"cuda:0 {name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"))
    else:
        rows.append(
            Row(
                "device",
                WARN,
                f"no CUDA GPU visible; cpu, {_ram_text()}",
                "check `nvidia-smi`; diffusion engines are very slow on CPU",
            )
        )
    return rows


def _ram_text() -> str:
    try:
        import os

        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return f"{total / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        return "RAM unknown"


def _engine_rows() -> list[Row]:
    """Each engine's own availability check (weights present, libraries importable)."""
    from ..backend.config import load_config
    from ..backend.engines import ENGINES, engine_class

    try:
        config = load_config()
    except Exception as exc:
        return [Row("backend config", FAIL, str(exc), "fix or remove the config file named above")]
    rows = []
    for name in ENGINES:
        try:
            engine = engine_class(name)(config.engine_options(name))
            avail = engine.available()
        except Exception as exc:
            rows.append(
                Row(f"engine {name}", FAIL, f"cannot be loaded: {exc}", "pip install 'touchup[diffusion]'")
            )
            continue
        if avail.get("ok"):
            rows.append(Row(f"engine {name}", OK, str(avail.get("detail") or "ready")))
        else:
            reason = avail.get("reason") or avail.get("message") or "not available"
            fix = avail.get("fix") or f"touchup models download {name}"
            rows.append(Row(f"engine {name}", WARN, str(reason), str(fix)))
    return rows


def _plan_rows() -> list[Row]:
    """The memory plan of the first diffusion preset whose weights are here (or of the default
    preset): which policy it will use on this GPU and RAM, or what the machine lacks."""
    try:
        from ..backend import models
        from ..backend.engines.diffusion import memory
        from ..backend.engines.diffusion.presets import PRESETS

        name = models.first_present_preset() or next(iter(PRESETS))
        vram, ram, gpu = memory.this_machine()
        plan = memory.plan(PRESETS[name], vram, ram, quantisation=memory.quantisation_available())
    except Exception as exc:  # the doctor reports, it never fails on a check
        return [Row("memory plan", WARN, f"could not be worked out: {exc}")]
    detail = f"{name} on {gpu}: " + (f"{plan.policy.value} ({plan.reason})" if plan.policy else plan.reason)

    fix = "" if plan.fits else f"touchup models plan --preset {name} (or a lighter preset)"
    return [Row("memory plan", OK if plan.fits else WARN, detail, fix)]


def _backend_rows(endpoint: str | None) -> tuple[list[Row], str | None]:
    from ..shared.client import BackendError, Client

    endpoint = endpoint or configured_endpoint()
    try:
        with Client(endpoint, name="touchup-doctor") as client:
            hello = client.hello(timeout=2.0)
    except BackendError:
        return [
            Row(
                "backend",
                FAIL,
                f"nothing answers at {endpoint}",
                "start it: `touchup tray` (or `touchup serve`), or press Start in the plugin",
            )
        ], None
    version = str(hello.get("backend_version", "?"))
    caps = hello.get("capabilities") or {}
    rows = [Row("backend", OK, f"{version} at {endpoint}, device {caps.get('device', '?')}")]
    if version != __version__:
        rows.append(
            Row(
                "backend version",
                WARN,
                f"running backend is {version}, this install is {__version__}",
                "restart the backend (tray menu > Restart backend) after upgrading",
            )
        )
    return rows, version


def _plugin_version(lib: Path) -> str | None:
    init = lib / "touchup" / "shared" / "__init__.py"
    if not init.is_file():
        return None
    m = re.search(r'__version__\s*=\s*["\']([^"\']+)', init.read_text(errors="replace"))
    return m.group(1) if m else None


def _import_check(python: Path, lib: Path, extra: list[Path]) -> tuple[bool, str]:
    """Import what the plugin needs in the editor's own interpreter, with the plugin's lib first."""
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "import zmq, msgpack, touchup.shared.client\n"
        "print(zmq.__version__, msgpack.version, touchup.shared.__version__)\n"
    )
    proc = subprocess.run(
        [str(python), "-c", code, str(lib), *map(str, extra)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    return False, (proc.stderr.strip().splitlines() or ["failed"])[-1]


def _editor_rows(
    editor: str, override: str | None, manifest: Manifest, backend_version: str | None
) -> list[Row]:
    label = "Krita" if editor == KRITA else "GIMP 3"
    locations = find_locations(editor, override)
    rows: list[Row] = [_release_row(editor, label)]
    install_hint = f"touchup install --{editor}"
    for loc in locations:
        name = f"{label} ({loc.variant})"
        if not loc.exists and override is None:
            rows.append(
                Row(
                    name,
                    INFO,
                    f"not found ({loc.resource_dir})",
                    f"start {label} once, then run `{install_hint}`; or pass --{editor}-dir",
                )
            )
            continue
        plugin = _plugin_folder(loc)
        if plugin is None or not plugin.is_dir():
            rows.append(Row(name, FAIL, f"found, plugin not installed in {loc.plugin_dir}", install_hint))
            continue
        ours = any(c.target == str(loc.plugin_dir) for c in manifest.components.values())
        rows.append(
            Row(name, OK, f"plugin in {plugin}" + ("" if ours else " (not installed by touchup install)"))
        )
        if editor == KRITA and loc.config_file is not None:
            from . import inifile

            enabled = inifile.get_value(loc.config_file, "python", f"enable_{KRITA_PLUGIN}")
            if enabled != "true":
                rows.append(
                    Row(
                        f"{name} enabled",
                        FAIL,
                        f"not enabled in {loc.config_file}",
                        "Settings > Configure Krita > Python Plugin Manager > tick Touchup, restart Krita "
                        f"(or `{install_hint}` while Krita is closed)",
                    )
                )
        lib = plugin / "lib"
        py = editors.detect(loc)
        if py.interpreter is not None:
            ok, detail = _import_check(py.interpreter, lib, [])
            rows.append(
                Row(
                    f"{name} imports",
                    OK if ok else FAIL,
                    f"Python {py.version_text}: {detail}",
                    "" if ok else f"{install_hint} --vendor always",
                )
            )
        else:
            vendored = (lib / "zmq").is_dir() and (lib / "msgpack").is_dir()
            rows.append(
                Row(
                    f"{name} imports",
                    OK if vendored else WARN,
                    f"{py.how}; vendored pyzmq/msgpack: {'yes' if vendored else 'no'}",
                    "" if vendored else f"{install_hint} --{editor}-python X.Y --vendor always",
                )
            )
        pv = _plugin_version(lib)
        want = backend_version or __version__
        if pv != want:
            rows.append(
                Row(
                    f"{name} version",
                    FAIL,
                    f"plugin protocol package {pv or 'missing'}, backend {want}",
                    f"{install_hint} (upgrades in place)",
                )
            )
        else:
            rows.append(
                Row(
                    f"{name} version",
                    OK,
                    f"plugin {pv} matches {'backend' if backend_version else 'this install'}",
                )
            )
    return rows


def _release_row(editor: str, label: str) -> Row:
    """The editor release on PATH and whether the plugin is tested in it."""
    release = editors.editor_release(editor)
    tested = ", ".join(editors.TESTED_RELEASES[editor])
    if release.version is None:
        return Row(f"{label} release", INFO, f"no {label} on PATH answered --version (tested: {tested})")
    if release.tested:
        return Row(f"{label} release", OK, f"{release.version}, a tested release ({release.program})")
    return Row(
        f"{label} release",
        WARN,
        f"{release.version} is not a tested release (tested: {tested}); the plugin may still work",
        f"use {label} {editors.TESTED_RELEASES[editor][-1]} if Refine misbehaves",
    )


def _plugin_folder(loc: EditorLocation) -> Path | None:
    if loc.editor == KRITA:
        return loc.plugin_dir / KRITA_PLUGIN
    try:
        from contextlib import ExitStack

        from .install import _package_dir

        with ExitStack() as stack:
            return loc.plugin_dir / gimp_plugin_name(_package_dir(stack, "touchup.plugin_gimp"))
    except Exception:
        return None


def collect(
    endpoint: str | None = None, krita_dir: str | None = None, gimp_dir: str | None = None
) -> list[Row]:
    rows = [_python_row(), Row("touchup", OK, __version__)]
    rows += _torch_rows()
    rows += _engine_rows()
    rows += _plan_rows()
    backend, version = _backend_rows(endpoint)
    rows += backend
    try:
        manifest = Manifest.load()
    except ValueError as exc:
        rows.append(Row("install manifest", WARN, str(exc), "touchup install (writes a fresh manifest)"))
        manifest = Manifest(Path("-"))
    rows += _editor_rows(KRITA, krita_dir, manifest, version)
    rows += _editor_rows(GIMP, gimp_dir, manifest, version)
    return rows


def format_table(rows: list[Row]) -> str:
    w_check = max(len(r.check) for r in rows)
    w_status = max(len(r.status) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r.check:<{w_check}}  {r.status:<{w_status}}  {r.detail}")
        if r.fix and r.status != OK:
            lines.append(f"{'':<{w_check}}  {'':<{w_status}}  -> {r.fix}")
    return "\n".join(lines)


def doctor(
    endpoint: str | None = None,
    krita_dir: str | None = None,
    gimp_dir: str | None = None,
    say: Callable[[str], None] = print,
) -> int:
    rows = collect(endpoint, krita_dir, gimp_dir)
    say(format_table(rows))
    failed = [r for r in rows if r.status == FAIL]
    say("")
    say(f"{len(failed)} problem(s) found" if failed else "everything needed is in place")
    return 1 if failed else 0


__all__ = ["Row", "collect", "doctor", "format_table"]
