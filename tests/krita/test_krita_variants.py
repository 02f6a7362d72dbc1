"""The retoucher's loop in Krita's real window (``xvfb-run krita``): Refine x4 with the
``seeded`` test engine shows the live preview while it runs and four thumbnails; previewing
one changes no layer and adds nothing to the undo history, yet shows the result on the canvas;
Compare flips back to the original; Apply adds exactly one layer that one Undo removes, with no
preview left behind; Discard leaves the document as it was (``gui_driver/.../variants.py``).

One Krita launch per release, one test each; the full loop runs in the oldest and newest
release (``editor_releases.FULL``), which cover both Qt bindings. The host's Krita photographs
its window for the README: ``TOUCHUP_UPDATE_SCREENSHOTS=1`` refreshes ``docs/img/krita-variants.png``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import BackendProcess, skip_or_fail
from editor_releases import FULL, KRITA, EditorRelease

from touchup.backend.tools.bench_engines import IDENTITY, SEEDED

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

DRIVER = Path(__file__).resolve().parent / "gui_driver"
STEPS = [
    "setup",
    "refine_x4_live_preview_four_thumbnails",
    "preview_changes_nothing",
    "compare_flips",
    "screenshot",
    "apply_one_layer_one_undo",
    "discard_leaves_document",
    "float_document_variants",
]


@pytest.mark.parametrize("release", [r for r in KRITA if r.id in FULL], ids=lambda r: r.id)
def test_variants_loop(release: EditorRelease, tmp_path: Path) -> None:
    reason = krita_missing_reason(release)
    if reason is None and not release.path("/usr/bin/xvfb-run").exists():
        reason = f"{release.id}: xvfb-run is not installed (apt-get install xvfb xauth)"
    if reason:
        skip_or_fail(reason)
    # 6 steps of 0.15 s per variant: long enough for the docker to show the live preview.
    backend = BackendProcess(
        tmp_path / "backend",
        engine="classic",
        extra_engines={"identity": IDENTITY, "seeded": SEEDED},
        engines={"seeded": {"step_s": 0.15}},
    )
    try:
        home = tmp_path / "home"
        pykrita = install_plugin(home / ".local" / "share", tmp_path / "stage")
        shutil.copy2(DRIVER / "touchup_gui_check.desktop", pykrita)
        shutil.copytree(DRIVER / "touchup_gui_check", pykrita / "touchup_gui_check")
        enable_plugins(home / ".config", "touchup_krita", "touchup_gui_check")
        results, log, shot = (
            tmp_path / "results.json",
            tmp_path / "krita.log",
            tmp_path / "krita-variants.png",
        )
        env = krita_env(
            home,
            tmp_path / "stage" / "lib",
            TOUCHUP_ENDPOINT=backend.endpoint,
            TOUCHUP_KRITA_RESULTS=str(results),
            TOUCHUP_KRITA_SCREENSHOT=str(shot),
            TOUCHUP_KRITA_CHECKS="variants",
        )
        env.pop("PYTHONPATH")  # the plugin must find everything through its own lib/ folder
        with log.open("w") as fh:
            run_in_session(
                release.command(
                    ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"], [tmp_path]
                ),
                env,
                fh,
                300,
            )
        data = read_results(results, log)
    finally:
        backend.stop()
    if shot.exists() and release is KRITA[0] and os.environ.get("TOUCHUP_UPDATE_SCREENSHOTS") == "1":
        shutil.copy2(shot, REPO / "docs" / "img" / "krita-variants.png")
    tail = log.read_text(errors="replace")[-3000:]
    failed = {name: data[name]["detail"] for name in STEPS if name in data and not data[name]["ok"]}
    missing = [name for name in STEPS if name not in data]
    assert not failed and not missing, f"failed: {failed}\nnot run: {missing}\nKrita's log ends with:\n{tail}"
    assert "_done" in data, "the driver did not finish"
    for name in STEPS:  # what each step saw and how long it took (pytest -s shows it)
        print(f"{release.id} {name} {data[name]['seconds']} s: {str(data[name]['detail'])[:300]}")
    errors = [line for line in tail.splitlines() if "Traceback" in line]
    assert not errors, tail
