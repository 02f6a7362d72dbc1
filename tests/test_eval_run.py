"""``touchup eval`` end to end: the classic engine on a few built-in cases, and the baselines."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from touchup.backend.app.cli import main
from touchup.backend.engines import create_engine
from touchup.backend.engines.base import (
    Engine,
    EngineOutput,
    EngineRequest,
    Preset,
    RefineParams,
    WorkingSize,
)
from touchup.backend.tools.eval.baselines import METHODS, fit_fill, padded_crop_region, run_method
from touchup.backend.tools.eval.datasets import builtin_cases, save_case_folder
from touchup.backend.tools.eval.runner import run_eval

#: The first nine built-in cases: each of blur, downsampling and JPEG (alone or combined) with
#: and without a matching reference, noise, and one unrelated reference (case 8).
CI_CASES = 9


@pytest.fixture(scope="module")
def classic_eval(tmp_path_factory):
    """One small run of the real command on the classic engine, shared by the tests below."""
    out = tmp_path_factory.mktemp("eval-classic")
    rc = main(
        [
            "eval",
            "--engine",
            "classic",
            "--out",
            str(out),
            "--cases",
            str(CI_CASES),
            "--quiet",
            "--no-perceptual",
        ]
    )
    assert rc == 0
    report = json.loads((out / "eval-classic-default.json").read_text(encoding="utf-8"))
    return out, report


def _summary(report: dict, method: str) -> dict:
    return next(e for e in report["summary"] if e["method"] == method)


def test_classic_eval_changes_no_pixel_outside_the_selection(classic_eval):
    _, report = classic_eval
    ours = [r for r in report["cases"] if r["method"] == "ours"]
    assert len(ours) == CI_CASES
    assert all(r["error"] == "" for r in ours)
    assert [r["out_changed"] for r in ours] == [0] * CI_CASES
    assert all(r["out_psnr"] == 100.0 and r["out_ssim"] == 1.0 for r in ours)


def test_classic_eval_beats_naive_paste_on_seam_and_colour_shift(classic_eval):
    _, report = classic_eval
    ours, naive = _summary(report, "ours"), _summary(report, "naive")
    assert ours["seam"] < naive["seam"]
    assert ours["color_shift"] < naive["color_shift"]
    # And the engine does something: the regions get closer to the truth than the input.
    assert ours["in_ssim"] > _summary(report, "nothing")["in_ssim"]


def _ours(report: dict) -> list[dict]:
    return [r for r in report["cases"] if r["method"] == "ours"]


def test_classic_eval_gains_with_a_matching_reference(classic_eval):
    """Registered under another pose, scale and light, the reference's detail restores the
    region: several dB on every case, not merely "not worse"."""
    _, report = classic_eval
    rows = [r for r in _ours(report) if r["reference_kind"] == "match"]
    assert len(rows) == 4
    gains = [r["gain"] for r in rows]
    print("\nmatching reference gains:", [f"{g:+.2f}" for g in gains])
    assert all(r["reference_status"] == "used" for r in rows), [r["reference_status"] for r in rows]
    assert min(gains) >= 1.5 and float(np.median(gains)) >= 4.0


def test_classic_eval_restores_without_a_reference_and_never_harms(classic_eval):
    """Blur, downsampling and JPEG without a reference: never worse than the damaged input,
    and the blurred region visibly sharper (a do-nothing restore gains 0.0 dB and fails)."""
    _, report = classic_eval
    rows = {r["degradation"]: r for r in _ours(report) if r["reference_kind"] == "none"}
    gains = {k: round(r["gain"], 2) for k, r in rows.items()}
    print("\nreference-free gains:", gains)
    assert set(rows) >= {"blur", "jpeg", "downsample", "blur+jpeg"}
    assert min(gains.values()) >= -0.3
    assert gains["blur"] >= 1.0
    assert sum(gains.values()) / len(gains) >= 0.3


def test_classic_eval_refuses_an_unrelated_reference_and_says_why(classic_eval):
    _, report = classic_eval
    [row] = [r for r in _ours(report) if r["reference_kind"] == "unrelated"]
    assert row["reference_status"].startswith("rejected: ")
    assert row["gain"] >= -0.3


def test_classic_eval_writes_tables_csv_json_and_pictures(classic_eval):
    out, report = classic_eval
    md = (out / "eval-classic-default.md").read_text(encoding="utf-8")
    assert "| method | n | changed px outside |" in md
    assert METHODS["ours"] in md and "## By category" in md
    assert "## Gain by reference" in md and "| blur | none |" in md
    assert "## Gain by damage family" in md and "| blur/downsample/jpeg | none |" in md
    assert set(report["methods"]) == set(METHODS)
    with (out / "eval-classic-default-cases.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == CI_CASES * len(METHODS)
    with (out / "eval-classic-default-categories.csv").open(encoding="utf-8") as fh:
        categories = {r["category"] for r in csv.DictReader(fh)}
    assert categories == {"text", "logo", "face", "texture"}
    pytest.importorskip("matplotlib")
    for name in ("contact", "metrics"):
        img = cv2.imread(str(out / f"eval-classic-default-{name}.png"))
        assert img is not None and min(img.shape[:2]) > 300, name


# -- baselines with engines whose behaviour is known ----------------------------------------


class DriftEngine(Engine):
    """Brightens and tints the whole crop, as a VAE round trip does: paste-back must hide it."""

    name = "drift"

    def make_presets(self) -> dict[str, Preset]:
        return {"default": Preset("default", working=WorkingSize(target_area=256 * 256, min_side=64))}

    def refine(self, request: EngineRequest) -> EngineOutput:
        return EngineOutput(np.clip(request.crop * 0.92 + np.float32([0.1, 0.06, 0.02]), 0, 1))


class ConstantEngine(DriftEngine):
    """Paints the crop one colour, so where each method pastes is visible."""

    name = "constant"

    def refine(self, request: EngineRequest) -> EngineOutput:
        return EngineOutput(np.full_like(request.crop, 0.25))


def test_paste_back_hides_an_engines_colour_drift_that_naive_paste_shows():
    cases = builtin_cases(4)
    result = run_eval(cases, DriftEngine(), methods=["ours", "naive", "overlay"], keep=0)
    by = {m: [r for r in result.rows if r["method"] == m] for m in result.methods}
    for m in ("ours", "naive", "overlay"):
        assert all(r["out_changed"] == 0 for r in by[m]), m
    for ours, naive in zip(by["ours"], by["naive"], strict=True):
        assert ours["seam"] < naive["seam"], ours["case"]
        assert ours["color_shift"] < naive["color_shift"], ours["case"]


def test_overlay_baseline_pastes_hard_inside_and_keeps_the_outside():
    case = builtin_cases(2)[1]
    out = run_method("overlay", case, ConstantEngine(), RefineParams())
    inside = case.mask == 255
    assert np.array_equal(out.image[~inside], case.image[~inside])
    assert np.all(out.image[inside] == 64)  # 0.25 * 255, no feather, no colour correction


def test_padded_crop_region_contains_the_selection_at_the_models_aspect():
    mask = np.zeros((300, 500), np.uint8)
    mask[100:140, 200:220] = 255
    r = padded_crop_region(mask, 512, 256, pad=32)
    assert r.x <= 200 - 32 and r.x1 >= 220 + 32 and r.y <= 100 - 32 and r.y1 >= 140 + 32
    assert r.width / r.height == pytest.approx(2.0, abs=0.02)
    # Near the border the crop is shifted back inside the image, not cut.
    mask[:] = 0
    mask[0:20, 480:500] = 255
    r = padded_crop_region(mask, 256, 256, pad=32)
    assert r.x >= 0 and r.y >= 0 and r.x1 <= 500 and r.y1 <= 300
    assert r.width == r.height


def test_fit_fill_keeps_the_picture_and_fills_the_rest():
    img = np.arange(40 * 20 * 3, dtype=np.float32).reshape(20, 40, 3)
    out, where = fit_fill(img, 64, 64)
    assert out.shape == (64, 64, 3)
    assert (where.width, where.height) == (64, 32)
    assert np.array_equal(out[: where.y], np.repeat(out[where.y : where.y + 1], where.y, axis=0))


def test_nofocus_runs_the_engine_on_the_whole_image():
    case = builtin_cases(1)[0]  # a tiny region: focus upsamples it, no-focus does not
    engine = create_engine("identity")
    ours = run_method("ours", case, engine, RefineParams())
    whole = run_method("nofocus", case, engine, RefineParams())
    assert max(ours.meta["scales"]) > 2 * max(whole.meta["scales"])
    for res in (ours, whole):
        assert np.array_equal(res.image[case.mask == 0], case.image[case.mask == 0])


# -- the command -----------------------------------------------------------------------------


def test_eval_command_on_a_dataset_folder(tmp_path, capsys):
    for case in builtin_cases(2):
        save_case_folder(case, tmp_path / "data" / case.name)
    rc = main(
        ["eval", "--engine", "identity", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
         "--methods", "ours,nothing", "--quiet", "--no-perceptual"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "out" / "eval-identity-default.json").read_text(encoding="utf-8"))
    assert {r["case"] for r in report["cases"]} == {c.name for c in builtin_cases(2)}
    assert "Touchup (focus + paste-back)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--engine", "nosuch"], "unknown engine 'nosuch'"),
        (["--engine", "identity", "--preset", "nosuch"], "has no preset 'nosuch'"),
        (["--engine", "identity", "--methods", "ours,magic"], "unknown method(s) magic"),
        (["--engine", "identity", "--dataset", "/nonexistent/eval-set"], "does not exist"),
    ],
)
def test_eval_command_rejects_bad_input_clearly(tmp_path, capsys, argv, message):
    assert main(["eval", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
