"""Running scripts inside real Krita for the tests: staging the plugin, kritarunner, the GUI.

The plugin runs in Krita's own Python, not the test venv, so the tests stage what the installer
would place beside it -- ``touchup/shared`` -- and put it on ``PYTHONPATH`` together with the
plugin package and the in-Krita check scripts. ``kritarunner`` always exits 0, so every script
writes a JSON result file that the tests read; a missing file is a failure.

Every Krita release in :data:`editor_releases.KRITA` runs the same checks: the host's own Krita
directly, the newer ones in their Debian chroots (see ``editor_releases``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from editor_releases import KRITA, EditorRelease

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PLUGIN_DIR = REPO / "plugin_krita"


def krita_missing_reason(release: EditorRelease = KRITA[0]) -> str | None:
    """Why this Krita cannot run here, or None when it can. A Krita whose Python lacks the Qt
    binding it embeds (PyQt6 for Krita 6) is reported here, so the tests fail loudly instead of
    every check failing with an import error deep inside Krita."""
    reason = release.missing_reason()
    if reason:
        return reason
    if not release.path("/usr/bin/kritarunner").exists():
        return f"{release.id}: kritarunner is missing (scripts/setup_krita.sh installs it)"
    qt = "PyQt6" if release.version.startswith("6") else "PyQt5"
    probe = release.python(f"import zmq, msgpack, {qt}.QtWidgets")
    if probe.returncode != 0:
        return f"{release.id}: Krita's Python cannot import zmq, msgpack and {qt}:\n{probe.stderr[-800:]}"
    return None


def stage(root: Path) -> Path:
    """A folder holding ``touchup/shared`` the way the installer lays it out beside the plugin."""
    lib = root / "lib"
    pkg = lib / "touchup"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copytree(REPO / "shared", pkg / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    return lib


def krita_env(home: Path, lib: Path, **extra: str) -> dict[str, str]:
    """Environment for a Krita process: isolated HOME, the staged libs, the plugin, the scripts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TOUCHUP_"))}
    # Krita's Python is the system one; keep the venv's bin dir off PATH so nothing mixes.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(home / "run"),
        PYTHONPATH=os.pathsep.join([str(lib), str(PLUGIN_DIR), str(HERE)]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    (home / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    env.update(extra)
    return env


def run_kritarunner(
    module: str,
    function: str,
    env: dict[str, str],
    log: Path,
    timeout: float = 240,
    release: EditorRelease = KRITA[0],
    binds: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess:
    """``kritarunner -s module -f function`` offscreen in ``release``; ``binds``: host folders
    (results, HOME) the chrooted Krita must see at the same paths."""
    env = dict(env, QT_QPA_PLATFORM="offscreen")
    with log.open("w") as fh:
        return subprocess.run(
            release.command(["kritarunner", "-s", module, "-f", function], list(binds)),
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )


def read_results(path: Path, log: Path) -> dict[str, Any]:
    if not path.exists():
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
        raise AssertionError(f"the script inside Krita wrote no results; Krita's output ends with:\n{tail}")
    return json.loads(path.read_text())


def install_plugin(data_home: Path, lib_root: Path) -> Path:
    """Lay the plugin out in a Krita resource folder exactly as the installer does:
    ``pykrita/touchup_krita.desktop`` and ``pykrita/touchup_krita/`` with ``lib/touchup/shared``
    inside (Krita finds the ``.action`` shortcut file inside the plugin folder)."""
    pykrita = data_home / "krita" / "pykrita"
    pkg = pykrita / "touchup_krita"
    if pkg.exists():
        shutil.rmtree(pkg)
    pykrita.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PLUGIN_DIR / "touchup_krita.desktop", pykrita)
    shutil.copytree(PLUGIN_DIR / "touchup_krita", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    stage(lib_root)
    shutil.copytree(lib_root / "lib", pkg / "lib")
    return pykrita


def enable_plugins(config_home: Path, *names: str) -> None:
    """Krita loads a Python plugin only when ``kritarc`` enables it."""
    config_home.mkdir(parents=True, exist_ok=True)
    lines = ["[python]", *(f"enable_{name}=true" for name in names)]
    (config_home / "kritarc").write_text("\n".join(lines) + "\n")


def run_in_session(argv: list[str], env: dict[str, str], out: Any, timeout: float) -> int | None:
    """Run ``argv`` in its own process group; on timeout end the whole group (xvfb-run leaves
    Krita and Xvfb behind otherwise). Returns the exit code, None after a timeout."""
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return None
