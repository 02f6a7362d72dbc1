"""The evaluation's metrics on hand-made images with known answers, and its dataset generator."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from touchup.backend.tools.eval import metrics
from touchup.backend.tools.eval.datasets import (
    CATEGORIES,
    COMBINED,
    DEGRADATIONS,
    SIZES,
    DatasetError,
    builtin_cases,
    load_folder,
    make_case,
    save_case_folder,
)
from touchup.backend.tools.eval.metrics import PSNR_CAP, Regions, score

H, W = 96, 128


def flat(level: int | tuple[int, int, int]) -> np.ndarray:
    return np.full((H, W, 3), level, np.uint8)


def square_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[28:68, 40:88] = 255
    return mask


def textured(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 216, (H // 4, W // 4, 3)).astype(np.uint8)
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_CUBIC)


def srgb_lightness(level: int) -> float:
    """CIE L* of a neutral sRGB grey, from the sRGB and CIELAB definitions."""
    c = level / 255.0
    y = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return 116.0 * y ** (1 / 3) - 16.0 if y > (6 / 29) ** 3 else y * (29 / 3) ** 3


def test_identical_images_score_perfectly():
    truth = textured()
    regions = Regions.from_selection(square_mask())
    s = score(truth.copy(), truth, truth, regions)
    assert s["out_changed"] == 0
    assert s["out_psnr"] == PSNR_CAP and s["in_psnr"] == PSNR_CAP
    assert s["out_ssim"] == pytest.approx(1.0) and s["in_ssim"] == pytest.approx(1.0)
    assert s["in_mse"] == 0.0
    assert s["seam"] == pytest.approx(0.0, abs=1e-6)
    assert s["color_shift"] == pytest.approx(0.0, abs=1e-6)
    assert s["sharpness"] == pytest.approx(1.0)


def test_one_changed_pixel_outside_is_counted_and_costs_psnr():
    image = textured()
    mask = square_mask()
    result = image.copy()
    result[5, 7, 1] += 10  # one channel of one pixel far from the selection
    regions = Regions.from_selection(mask)
    s = score(result, image, image, regions)
    assert s["out_changed"] == 1
    outside = int((mask == 0).sum())
    expected_mse = (10 / 255) ** 2 / (3 * outside)
    assert s["out_psnr"] == pytest.approx(10 * math.log10(1 / expected_mse), rel=1e-4)
    assert s["out_ssim"] < 1.0
    # Inside nothing changed.
    assert s["in_psnr"] == PSNR_CAP and s["in_mse"] == 0.0


def test_change_inside_never_counts_as_outside():
    image = textured()
    mask = square_mask()
    result = image.copy()
    result[mask > 0] = 255 - result[mask > 0]
    s = score(result, image, image, Regions.from_selection(mask))
    assert s["out_changed"] == 0
    assert s["out_psnr"] == PSNR_CAP
    assert s["out_ssim"] == 1.0  # windows at the edge do not see the (allowed) change inside


def test_known_offset_inside_gives_known_mse_and_psnr():
    truth = flat(100)
    mask = square_mask()
    result = truth.copy()
    result[mask > 0] += 10
    s = score(result, truth, truth, Regions.from_selection(mask))
    assert s["in_mse"] == pytest.approx((10 / 255) ** 2, rel=1e-5)
    assert s["in_psnr"] == pytest.approx(20 * math.log10(25.5), rel=1e-5)


def test_known_colour_shift_matches_ciede2000_lightness_formula():
    # For neutral greys a* = b* = 0, so CIEDE2000 reduces to dL / S_L (Sharma et al. 2005).
    truth = flat(128)
    mask = square_mask()
    result = truth.copy()
    result[mask > 0] = 140
    l1, l2 = srgb_lightness(128), srgb_lightness(140)
    l_mean = (l1 + l2) / 2
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    expected = abs(l2 - l1) / s_l
    shift = metrics.color_shift(result, truth, Regions.from_selection(mask))
    assert shift == pytest.approx(expected, rel=1e-3)


def test_colour_shift_only_looks_at_the_band_inside_the_edge():
    truth = flat(128)
    mask = square_mask()
    result = truth.copy()
    result[38:58, 50:78] = 200  # the centre of the selection, more than COLOR_BAND px inside
    regions = Regions.from_selection(mask)
    assert metrics.color_shift(result, truth, regions) == pytest.approx(0.0, abs=1e-9)
    assert metrics.masked_mse(result, truth, regions.inside) > 0


def test_hard_seam_scores_the_step_and_a_feathered_one_much_less():
    truth = flat(128)
    mask = square_mask()
    regions = Regions.from_selection(mask)
    hard = truth.copy()
    hard[mask > 0] += 20
    # No natural step across the edge of a flat photo, so the floor (one grey level) applies:
    # the added RGB step of 20 levels per channel is 20 * sqrt(3) levels.
    assert metrics.seam_score(hard, truth, regions) == pytest.approx(20 * math.sqrt(3), rel=1e-3)
    # The same offset ramped in over 8 px inside the edge (what paste-back's feather does).
    dist = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 5)
    ramp = np.clip(dist / 8.0, 0, 1)[:, :, None]
    soft = np.rint(truth + 20 * ramp).astype(np.uint8)
    assert metrics.seam_score(soft, truth, regions) < 0.3 * metrics.seam_score(hard, truth, regions)


def test_seam_is_relative_to_the_photos_own_contrast_across_the_edge():
    mask = square_mask()
    regions = Regions.from_selection(mask)
    busy = textured()  # a busy photo: its own tone varies across any contour
    hard = busy.copy()
    hard[mask > 0] = np.clip(hard[mask > 0].astype(int) + 20, 0, 255).astype(np.uint8)
    on_flat = flat(128)
    hard_flat = on_flat.copy()
    hard_flat[mask > 0] += 20
    # The same step is far less visible on the busy photo than on a flat wall.
    assert metrics.seam_score(hard, busy, regions) < 0.5 * metrics.seam_score(hard_flat, on_flat, regions)


def test_sharpness_is_one_for_the_truth_below_for_blur_above_for_noise():
    truth = textured()
    mask = square_mask()
    regions = Regions.from_selection(mask)
    blurred = truth.copy()
    blurred[mask > 0] = cv2.GaussianBlur(truth, (0, 0), 2.0)[mask > 0]
    noisy = np.clip(truth + np.random.default_rng(1).normal(0, 12, truth.shape), 0, 255).astype(np.uint8)
    assert metrics.sharpness(truth, truth, regions) == pytest.approx(1.0)
    assert metrics.sharpness(blurred, truth, regions) < 0.5
    assert metrics.sharpness(noisy, truth, regions) > 2.0


def test_ssim_inside_drops_for_structure_damage():
    truth = textured()
    mask = square_mask()
    regions = Regions.from_selection(mask)
    damaged = truth.copy()
    damaged[mask > 0] = cv2.GaussianBlur(truth, (0, 0), 3.0)[mask > 0]
    assert metrics.ssim(damaged, truth, regions.inside) < 0.95
    assert metrics.ssim(truth, truth, regions.inside) == 1.0


# -- datasets --------------------------------------------------------------------------------


def test_dataset_generator_is_deterministic():
    a, b = make_case(5, seed=3), make_case(5, seed=3)
    for name in ("image", "mask", "truth"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert len(a.references) == len(b.references)
    for ra, rb in zip(a.references, b.references, strict=True):
        assert np.array_equal(ra, rb)
    assert a.name == b.name
    other = make_case(5, seed=4)
    assert not np.array_equal(a.image, other.image) or not np.array_equal(a.mask, other.mask)


def test_builtin_cases_cover_the_design_and_only_damage_the_selection():
    cases = builtin_cases(24)
    assert {c.category for c in cases} == set(CATEGORIES)
    assert {c.size for c in cases} == set(SIZES)
    assert {c.degradation for c in cases} == set(DEGRADATIONS) | set(COMBINED)
    assert {c.reference_kind for c in cases} == {"none", "match", "unrelated"}
    for kind in ("blur", "downsample", "jpeg"):  # each with and without a matching reference
        assert {c.reference_kind for c in cases if kind in c.degradation} >= {"none", "match"}
    for case in cases:
        outside = case.mask == 0
        assert np.array_equal(case.image[outside], case.truth[outside]), case.name
        assert not np.array_equal(case.image[~outside], case.truth[~outside]), case.name
        assert case.image.dtype == np.uint8 and case.image.shape == case.truth.shape
        # The selection is the damaged region grown a little: near its nominal size.
        nominal = SIZES[case.size]
        assert 0.6 * nominal < case.selected_fraction < 1.8 * nominal, (case.name, case.selected_fraction)
        for ref in case.references:
            assert ref.dtype == np.uint8 and ref.ndim == 3 and ref.shape[2] == 3


def test_dataset_folder_round_trip_and_clear_errors(tmp_path):
    cases = builtin_cases(2)
    for case in cases:
        save_case_folder(case, tmp_path / case.name)
    loaded = load_folder(tmp_path)
    assert [c.name for c in loaded] == [c.name for c in cases]
    for orig, back in zip(cases, loaded, strict=True):
        assert np.array_equal(orig.image, back.image)
        assert np.array_equal(orig.mask, back.mask)
        assert np.array_equal(orig.truth, back.truth)
        assert back.category == orig.category and back.prompt == orig.prompt
        assert len(back.references) == len(orig.references)
    (tmp_path / cases[0].name / "truth.png").unlink()
    with pytest.raises(DatasetError, match="missing truth"):
        load_folder(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder(tmp_path / "nope")
