"""The words a retoucher reads are the same in Krita and GIMP: one table, one layer-name rule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from touchup.shared.protocol import ErrorCode
from touchup.shared.texts import ERROR_TEXT, LAYER_LABEL_MAX, error_text, layer_name, stage_text

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str):
    """A plugin module that imports no editor API, loaded from its file as the editor would."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"under_test_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_error_code_a_job_can_end_with_has_advice():
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, str)}
    # Protocol-level codes a plugin never shows (it sends well-formed messages) need none.
    internal = {
        "malformed",
        "unknown_kind",
        "frame_count",
        "frame_size",
        "bad_frame",
        "internal",
        "unknown_job",
    }
    assert codes - internal - set(ERROR_TEXT) == set()


def test_error_text_puts_advice_first_and_the_backends_reason_after():
    text = error_text(ErrorCode.TOO_LARGE, "tile 9000x9000 is over 67108864 pixels")
    assert text.startswith(ERROR_TEXT[ErrorCode.TOO_LARGE])
    assert text.endswith("(tile 9000x9000 is over 67108864 pixels)")
    assert error_text("brand_new_code", "it broke") == "The backend reported an error: it broke"


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("denoise", "Refining"),
        ("refine 2/3", "Refining (region 2/3)"),
        ("paste", "Blending into the image"),
        ("", "Working"),
        ("new_stage", "New stage"),
    ],
)
def test_stage_labels(stage, expected):
    assert stage_text(stage) == expected


def test_krita_and_gimp_name_the_new_layer_alike():
    """The same instruction gives the same layer name in both editors, capped at one length."""
    RefineSettings = _load("plugin_krita/touchup_krita/config.py").RefineSettings  # noqa: N806 - a class
    gimp = _load("plugin_gimp/touchup-refine/touchup_transport.py")
    long = "make the embossed lettering on the left bottle crisp and readable again, keep the gold"
    for instruction in ("crisp   edges", long):
        krita = RefineSettings(instruction=instruction).layer_name()
        assert krita == gimp.result_layer_name(instruction) == layer_name(instruction)
    assert len(layer_name(long)) == len("Touchup: ") + LAYER_LABEL_MAX
    assert layer_name(long).endswith("…")
    assert gimp.result_layer_name("", "Logo") == "Touchup: from Logo"
    assert gimp.progress_text("denoise") == "Touchup: Refining…"
