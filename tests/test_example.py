"""The bundled example and its sheet: ``touchup example make`` and ``touchup example sheet``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from touchup.backend.app.cli import main
from touchup.backend.tools.example import make_example, make_sheet, read_image

FILES = ["input.png", "mask.png", "reference.png", "clean.png", "unrelated_reference.png"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("example")
    assert main(["example", "make", "--out", str(out)]) == 0
    return out


def test_make_writes_the_files_and_prints_them(made, capsys):
    assert main(["example", "make", "--out", str(made / "again")]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in printed] == FILES
    for name in FILES:  # deterministic: byte-identical on a second run
        assert (made / name).read_bytes() == (made / "again" / name).read_bytes()


def test_damage_is_inside_the_mask_only(made):
    image, clean, mask = (read_image(made / n) for n in ("input.png", "clean.png", "mask.png"))
    assert mask.dtype == np.uint8 and mask.ndim == 2 and mask.shape == image.shape[:2]
    assert np.array_equal(image[mask == 0], clean[mask == 0])
    inside = np.abs(image.astype(int) - clean.astype(int))[mask == 255]
    assert inside.mean() > 10  # visibly broken


def test_reference_is_a_separate_transformed_photo(made):
    ex = make_example()
    ref, unrelated = read_image(made / "reference.png"), read_image(made / "unrelated_reference.png")
    ys, xs = np.nonzero(ex.mask)
    box = (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    assert ref.shape[0] > box[0] and ref.shape[1] > box[1]  # a bit more than the selection
    # Not a copy of the clean region: other scale and lighting.
    region = ex.clean[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert ref.shape[:2] != region.shape[:2]
    # ...and other lighting: its colour balance differs from the clean region's.
    assert np.abs(ref.reshape(-1, 3).mean(0) - region.reshape(-1, 3).mean(0)).max() > 2
    assert unrelated.shape[2] == 3 and not np.array_equal(unrelated[:20, :20], ref[:20, :20])


def test_sheet_cli_writes_labelled_panels(made, tmp_path, capsys):
    sheet_path = tmp_path / "sheet.png"
    args = ["example", "sheet", "--input", str(made / "input.png"), "--output", str(made / "clean.png")]
    args += ["--clean", str(made / "clean.png"), "--mask", str(made / "mask.png"), "--out", str(sheet_path)]
    assert main(args) == 0
    assert "after inf dB" in capsys.readouterr().out
    sheet = cv2.imread(str(sheet_path))
    assert sheet is not None
    # Two rows (whole image, zoom) of four columns (before, after, difference, clean).
    assert sheet.shape[1] > 3 * sheet.shape[0] / 2


def test_sheet_difference_panel_shows_the_change():
    before = np.zeros((64, 64, 3), np.uint8)
    after = before.copy()
    after[20:30, 20:30] = 40
    sheet = make_sheet(before, after, side=64, gain=4.0)
    diff_panel = sheet[28:92, 2 * 68 : 2 * 68 + 64]
    assert diff_panel.max() == 160  # |40 - 0| x 4
    assert sheet[28:92, 0:64].max() == 0


def test_sheet_cli_reports_missing_file(tmp_path, capsys):
    code = main(
        [
            "example",
            "sheet",
            "--input",
            str(tmp_path / "nope.png"),
            "--output",
            str(tmp_path / "x.png"),
            "--out",
            str(tmp_path / "s.png"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "nope.png" in err[0]
