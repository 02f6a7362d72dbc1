"""`touchup install --krita` into a fresh HOME, then real Krita's GUI (under Xvfb) loads it.

A tiny check plugin, enabled beside ours, waits for the main window, records what a user would
see -- the Touchup actions with their menu texts, the Touchup docker -- and where zmq, msgpack
and the protocol package were imported from, then quits Krita. The installer is run with
``--vendor always`` so the vendored pyzmq/msgpack wheels (picked for Krita's Python 3.x from
``kritapykrita.so``) are what Krita imports. Afterwards ``touchup uninstall`` must leave the
pykrita folder exactly as it was and drop our kritarc key.

It runs for every Krita release in ``editor_releases.KRITA``; a chrooted release gets
``--krita-python X.Y`` (its own Python, e.g. 3.14 for Krita 6), because the installer on the
host cannot see inside the chroot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail
from editor_releases import KRITA, EditorRelease

from touchup.installer import inifile
from touchup.installer.install import tree_snapshot

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "krita"))
from kritatest import run_in_session  # noqa: E402

WHEEL_CACHE = REPO / ".cache" / "wheels"

pytestmark = [pytest.mark.krita, pytest.mark.slow]

CHECK_DESKTOP = """[Desktop Entry]
Type=Service
ServiceTypes=Krita/PythonPlugin
X-KDE-Library=touchup_install_check
X-Python-2-Compatible=false
Name=Touchup install check
"""

CHECK_PLUGIN = r"""
import json, os, sys, traceback
from krita import Extension, Krita

ACTIONS = ["touchup_refine_selection", "touchup_refine_again", "touchup_cancel"]


class Check(Extension):
    def setup(self):
        Krita.instance().notifier().windowCreated.connect(self.later)

    def later(self):
        try:  # Krita 6 embeds PyQt6 and refuses PyQt5
            from PyQt6.QtCore import QTimer
        except ImportError:
            from PyQt5.QtCore import QTimer
        QTimer.singleShot(1500, self.check)

    def createActions(self, window):
        pass

    def check(self):
        app = Krita.instance()
        out = {}
        try:
            out["plugin_module"] = getattr(sys.modules.get("touchup_krita"), "__file__", None)
            out["actions"] = {a: (app.action(a).text() if app.action(a) else None) for a in ACTIONS}
            sel = app.action("touchup_refine_selection")
            out["shortcut"] = sel.shortcut().toString() if sel else None
            out["dockers"] = [d.objectName() for d in app.dockers()]
            out["docker_titles"] = [d.windowTitle() for d in app.dockers()]
            import msgpack, zmq
            import touchup.shared
            from touchup_krita.config import load_config
            out["zmq"] = zmq.__file__
            out["msgpack"] = msgpack.__file__
            out["shared"] = touchup.shared.__file__
            out["python"] = "%d.%d" % sys.version_info[:2]
            out["backend_command"] = load_config().command()
        except Exception:
            out["error"] = traceback.format_exc()
        with open(os.environ["TOUCHUP_CHECK_OUT"], "w") as fh:
            json.dump(out, fh)
        app.action("file_quit").trigger()


Krita.instance().addExtension(Check(Krita.instance()))
"""


def _require_krita(release: EditorRelease) -> None:
    reason = release.missing_reason()
    if reason:
        skip_or_fail(reason)
    missing = [t for t in ("krita", "xvfb-run") if not release.path(f"/usr/bin/{t}").exists()]
    if missing:
        skip_or_fail(f"{release.id}: {', '.join(missing)} not installed (scripts/setup_krita.sh)")


def _env(home: Path) -> dict[str, str]:
    """An isolated HOME; the test venv kept off PATH so Krita and its Python see only the system."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TOUCHUP_", "XDG_"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["HOME"] = str(home)
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    return env


def _touchup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real CLI with this test's Python, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "touchup.backend", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("release", KRITA, ids=[r.id for r in KRITA])
def test_install_into_real_krita_loads_plugin_and_uninstall_restores(
    tmp_path: Path, release: EditorRelease
) -> None:
    _require_krita(release)
    python: list[str] = []
    if release.chroot is not None:
        probe = release.python("import sys; print('%d.%d' % sys.version_info[:2])")
        assert probe.returncode == 0, probe.stderr
        python = ["--krita-python", probe.stdout.strip()]
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    kritarc = home / ".config" / "kritarc"
    # A user's own plugin that must survive install and uninstall untouched.
    (pykrita / "someone_else").mkdir(parents=True)
    (pykrita / "someone_else" / "__init__.py").write_text("# not ours\n")
    inifile.set_value(kritarc, "python", "enable_someone_else", "false")
    before = tree_snapshot(pykrita)
    kritarc_before = kritarc.read_text()

    done = _touchup(
        env, "install", "--krita", *python, "--vendor", "always", "--wheel-cache", str(WHEEL_CACHE)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vendoring" in done.stdout and "Python 3." in done.stdout
    assert inifile.get_value(kritarc, "python", "enable_touchup_krita") == "true"
    assert inifile.get_value(kritarc, "python", "enable_someone_else") == "false"

    # The check plugin is the test's, not the installer's: it is removed again before comparing.
    (pykrita / "touchup_install_check.desktop").write_text(CHECK_DESKTOP)
    (pykrita / "touchup_install_check").mkdir()
    (pykrita / "touchup_install_check" / "__init__.py").write_text(CHECK_PLUGIN)
    inifile.set_value(kritarc, "python", "enable_touchup_install_check", "true")
    out_file = tmp_path / "check.json"
    env_run = dict(env, TOUCHUP_CHECK_OUT=str(out_file))
    log = tmp_path / "krita.log"
    with log.open("w") as fh:
        run_in_session(
            release.command(["xvfb-run", "-a", "krita", "--nosplash"], [tmp_path]), env_run, fh, 300
        )
    assert out_file.exists(), "Krita never ran the check plugin:\n" + log.read_text(errors="replace")[-3000:]
    seen = json.loads(out_file.read_text())
    assert "error" not in seen, seen.get("error")
    if python:
        assert seen["python"] == python[1]
    plugin_dir = pykrita / "touchup_krita"
    assert Path(seen["plugin_module"]).parent == plugin_dir
    assert seen["actions"] == {
        "touchup_refine_selection": "Refine Selection…",
        "touchup_refine_again": "Refine Again",
        "touchup_cancel": "Cancel Refine",
    }
    assert "touchup_docker" in seen["dockers"], seen["dockers"]
    assert seen["shortcut"] == "Ctrl+Alt+R"  # the .action file was found inside the plugin folder
    assert "Duplicated action name" not in log.read_text(errors="replace")
    # Vendored wheels and the protocol copy are what Krita's Python actually imported.
    lib = plugin_dir / "lib"
    for key in ("zmq", "msgpack", "shared"):
        assert Path(seen[key]).is_relative_to(lib), (key, seen[key])
    # The Start button runs this environment's backend.
    assert seen["backend_command"][:4] == [sys.executable, "-m", "touchup.backend", "serve"]

    shutil.rmtree(pykrita / "touchup_install_check")
    (pykrita / "touchup_install_check.desktop").unlink()
    inifile.set_value(kritarc, "python", "enable_touchup_install_check", None)
    done = _touchup(env, "uninstall")
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree_snapshot(pykrita) == before
    assert inifile.get_value(kritarc, "python", "enable_touchup_krita") is None
    assert inifile.get_value(kritarc, "python", "enable_someone_else") == "false"
    assert not (home / ".local" / "share" / "krita" / "actions" / "touchup_krita.action").exists()
    assert kritarc_before  # (Krita rewrote kritarc while running; only our key must be gone)
