"""The plugin in Krita's real window (``xvfb-run krita``), installed the way the installer lays
it out: it loads, registers its menu actions and docker, refines through the docker and the
Refine Selection… dialog, one Undo removes the result, and the docker is photographed. It runs
in every Krita release of ``editor_releases.KRITA`` (test ids name it: ``[krita-6.0-...]``); the
screenshot for the docs comes from the host's Krita.

Set ``TOUCHUP_UPDATE_SCREENSHOTS=1`` to refresh ``docs/img/krita-docker.png``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail
from editor_releases import KRITA, EditorRelease

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kritatest import (
    REPO,
    enable_plugins,
    install_plugin,
    krita_env,
    krita_missing_reason,
    read_results,
    run_in_session,
)

pytestmark = [pytest.mark.krita, pytest.mark.slow]

CHECKS = [
    "actions_and_menu",
    "docker_present",
    "refine_from_docker",
    "screenshot",
    "undo_removes_layer",
    "refine_selection_dialog",
    "refine_again_active_layer",
]
DRIVER = Path(__file__).resolve().parent / "gui_driver"


@pytest.fixture(scope="module", params=KRITA, ids=[r.id for r in KRITA])
def gui_results(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    release: EditorRelease = request.param
    reason = krita_missing_reason(release)
    if reason is None and not release.path("/usr/bin/xvfb-run").exists():
        reason = f"{release.id}: xvfb-run is not installed (apt-get install xvfb xauth)"
    if reason:
        skip_or_fail(reason)
    root = tmp_path_factory.mktemp(f"{release.id}-gui")
    home = root / "home"
    data_home, config_home = home / ".local" / "share", home / ".config"
    pykrita = install_plugin(data_home, root / "stage")
    shutil.copy2(DRIVER / "touchup_gui_check.desktop", pykrita)
    shutil.copytree(DRIVER / "touchup_gui_check", pykrita / "touchup_gui_check")
    enable_plugins(config_home, "touchup_krita", "touchup_gui_check")
    results, log, shot = root / "results.json", root / "krita.log", root / "krita-docker.png"
    env = krita_env(
        home,
        root / "stage" / "lib",
        TOUCHUP_ENDPOINT=backend,
        TOUCHUP_KRITA_RESULTS=str(results),
        TOUCHUP_KRITA_SCREENSHOT=str(shot),
    )
    env.pop("PYTHONPATH")  # the plugin must find everything through its own lib/ folder
    with log.open("w") as fh:
        run_in_session(
            release.command(
                ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"], [root]
            ),
            env,
            fh,
            300,
        )
    data = read_results(results, log)
    data["_log"] = log.read_text(errors="replace")
    data["_release"] = release.id
    if shot.exists() and release is KRITA[0] and os.environ.get("TOUCHUP_UPDATE_SCREENSHOTS") == "1":
        shutil.copy2(shot, REPO / "docs" / "img" / "krita-docker.png")
    return data


#: Known failures, strict: each must keep failing until fixed (then the entry goes).
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("name", CHECKS)
def test_gui(request: pytest.FixtureRequest, gui_results: dict, name: str) -> None:
    known = KNOWN_FAILURES.get((gui_results["_release"], name))
    if known:
        request.applymarker(pytest.mark.xfail(strict=True, reason=known))
    result = gui_results.get(name)
    assert result is not None, (
        f"GUI check {name} did not run; Krita's log ends with:\n{gui_results['_log'][-3000:]}"
    )
    assert result["ok"], result["detail"]


def test_plugin_loaded_without_python_errors(gui_results: dict) -> None:
    log = gui_results["_log"]
    assert "_done" in gui_results, "the driver did not finish"
    bad = [
        line
        for line in log.splitlines()
        if "Traceback" in line or ("touchup" in line.lower() and "Error" in line)
    ]
    assert not bad, "\n".join(bad[:20])
