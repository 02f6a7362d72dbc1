"""The plug-in in the GIMP 3 GUI (under Xvfb): dialog, OK, one-step undo, Repeat.

Only the GUI can exercise undo (GIMP has no undo procedure in the PDB), so this test presses
Ctrl+Z in GIMP's window the way a user does. The dialog screenshot it takes is the one in the
documentation: set TOUCHUP_SCREENSHOT_DIR to write ``gimp-dialog.png`` there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from editor_releases import GIMP
from gimp_harness import DIALOG_DRIVER, GimpChroot, RecordingProxy, open_gimp, read_xwd
from PIL import Image
from test_gimp_plugin import SELECTION, H, W, damaged, textured, to_dtype

pytestmark = [pytest.mark.gimp, pytest.mark.slow]


@pytest.fixture(scope="module", params=GIMP, ids=[r.id for r in GIMP])
def gimp(request: pytest.FixtureRequest) -> GimpChroot:
    g = open_gimp(release=request.param)
    yield g
    g.cleanup()


def test_dialog_ok_undo_and_repeat(gimp: GimpChroot, backend: str, tmp_path: Path) -> None:
    host, _ = gimp.case_dir("dialog")
    (host / "input.raw").write_bytes(to_dtype(damaged(textured(1)), "u8").tobytes())
    proxy = RecordingProxy(backend)
    spec = {
        "width": W,
        "height": H,
        "input_raw": "input.raw",
        "ellipse": list(SELECTION),
        "args": {
            "endpoint": proxy.endpoint,
            "instruction": "sharpen the stripes",
            "preset": "classic/default",
        },
    }
    try:
        [r], output = gimp.run("dialog", spec, driver=DIALOG_DRIVER, gui=True)
    finally:
        proxy.close()
    assert "error" not in r, r["error"]
    assert "watch_error" not in r, r["watch_error"]
    assert "Traceback" not in output, output[-4000:]

    # The dialog opened, OK refined with the dialog's values: one new layer above the photo.
    assert r["pressed_ok"]
    assert r["interactive"][0] == "success", r["interactive"]
    name = "Touchup: sharpen the stripes"
    assert r["after_ok"] == [r["before"][0], name, *r["before"][1:]] or r["after_ok"] == [name, *r["before"]]
    assert r["after_ok"].index(name) == r["after_ok"].index("Background") - 1

    # One Ctrl+Z removes exactly that layer.
    assert r["undo_window"], "Ctrl+Z did not change the image"
    assert r["after_undo"] == r["before"]

    # Filters > Repeat (WITH_LAST_VALS) reuses what the dialog stored, without asking.
    assert r["repeat"][0] == "success", r["repeat"]
    assert r["after_repeat"] == r["after_ok"]

    # Both refines sent the reference layer (W x H) given to the dialog, Repeat included:
    # GIMP keeps no drawable among the last values, the plug-in finds it again by name.
    refines = proxy.refines()
    assert len(refines) == 2, refines
    for header in refines:
        sizes = [(f["width"], f["height"]) for f in header["frames"] if f["role"] == "reference"]
        assert sizes == [(W, H)], header["frames"]
    # The Variants field, not set by the caller, showed the preset's default from hello
    # (classic: 1) and the refines asked for exactly that.
    assert [h["params"].get("variants") for h in refines] == [1, 1], refines

    # The screenshot shows the dialog (not an empty screen).
    g = {k: int(v) for k, v in r["geometry"].items() if k in ("X", "Y", "WIDTH", "HEIGHT")}
    screen = read_xwd(host / "screen.xwd")
    dialog = screen[g["Y"] : g["Y"] + g["HEIGHT"], g["X"] : g["X"] + g["WIDTH"]]
    assert dialog.shape[0] > 200 and dialog.shape[1] > 250
    assert float(dialog.std()) > 10.0
    # The reference chooser shows the chosen layer's thumbnail: the colourful test image is
    # the only saturated thing in GIMP's grey dialog.
    chroma = dialog.max(axis=2).astype(int) - dialog.min(axis=2)
    assert (chroma > 60).sum() > 400, "the reference chooser shows no thumbnail"
    out_dir = Path(os.environ.get("TOUCHUP_SCREENSHOT_DIR") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(dialog)).save(out_dir / "gimp-dialog.png", optimize=True)
