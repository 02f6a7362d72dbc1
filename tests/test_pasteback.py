"""Paste-back pieces: drift estimate, inward feather, and writing into the layer and image."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from touchup.backend.pipeline.pasteback import blend_region, drift_field, feather_alpha, new_layer
from touchup.shared.geometry import Rect


def disc_mask(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (((y - cy) ** 2 + (x - cx) ** 2) <= r * r).astype(np.float32)


def picture(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.dstack([x / w, y / h, 0.5 + 0.2 * np.sin(x / 5) * np.cos(y / 7)]).astype(np.float32)


def test_constant_drift_is_measured_and_extrapolated_into_the_selection():
    before = picture(128, 160)
    mask = disc_mask(128, 160, 64, 80, 40)
    after = before + np.float32([0.05, -0.03, 0.1])
    after[mask > 0] = 0.9  # what the engine made inside must not bias the estimate
    field, meta = drift_field(before, after, mask)
    assert field.shape == before.shape and field.dtype == np.float32
    np.testing.assert_allclose(field[64, 80], [0.05, -0.03, 0.1], atol=1e-3)  # the disc's centre
    np.testing.assert_allclose(field[0, 0], [0.05, -0.03, 0.1], atol=1e-3)
    assert meta["color_correct"] is True and meta["drift_mean"] == pytest.approx([0.05, -0.03, 0.1], abs=1e-3)


def test_smooth_drift_follows_its_gradient():
    before = picture(128, 128)
    mask = disc_mask(128, 128, 64, 64, 20)
    _y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    ramp = (0.1 * x / 128)[:, :, None]  # drift growing from left to right
    after = before + ramp
    field, _ = drift_field(before, after, mask)
    err = np.abs(field - ramp)
    assert err[mask > 0].max() < 0.01  # interpolated across the selection
    assert field[64, 20, 0] < field[64, 108, 0] - 0.05


def test_engine_changes_only_near_the_selection_edge_are_not_drift():
    before = picture(128, 128)
    mask = disc_mask(128, 128, 64, 64, 30)
    after = before + np.float32(0.02)
    ring = disc_mask(128, 128, 64, 64, 32) > 0  # the engine bled 2 px past the selection
    after[ring] += 0.3
    field, _ = drift_field(before, after, mask)
    np.testing.assert_allclose(field, np.full_like(field, 0.02), atol=1e-3)


def test_negligible_drift_is_not_applied():
    before = picture(64, 64)
    mask = disc_mask(64, 64, 32, 32, 10)
    field, meta = drift_field(before, before + np.float32(0.001), mask, negligible=0.5 / 255)
    assert field is None and meta["color_correct"] is False
    field, meta = drift_field(before, before + np.float32(0.001), mask, negligible=0.5 / 65535)
    assert field is not None and meta["color_correct"] is True


def test_drift_cannot_be_measured_without_context():
    before = picture(32, 32)
    field, meta = drift_field(before, before + 0.2, np.ones((32, 32), np.float32))
    assert field is None and meta["color_correct"] is False


def test_feather_ramps_inward_from_the_selection_edge():
    mask = np.zeros((60, 60), np.float32)
    mask[10:50, 10:50] = 1.0
    alpha = feather_alpha(mask, Rect(10, 10, 40, 40), feather=8, strength=1.0, islands=1)
    row = alpha[20]  # tile row 30, from x=10 to x=49
    assert row[0] == pytest.approx(1 / 8)  # the edge pixel: one pixel from the unselected
    assert row[3] == pytest.approx(4 / 8)
    assert (row[7:33] == 1).all()
    assert row[-1] == pytest.approx(1 / 8)
    assert np.all(np.diff(row[:8]) > 0)


def test_feather_respects_strength_and_soft_values():
    mask = np.zeros((40, 40), np.float32)
    mask[5:35, 5:35] = 0.5
    alpha = feather_alpha(mask, Rect(5, 5, 30, 30), feather=4, strength=0.6, islands=1)
    assert alpha[15, 15] == pytest.approx(0.3)
    assert alpha[0, 15] == pytest.approx(0.3 / 4)
    assert feather_alpha(mask, Rect(5, 5, 30, 30), feather=0, strength=1, islands=1)[0, 0] == 0.5


def test_canvas_border_is_not_a_selection_edge():
    mask = np.zeros((30, 30), np.float32)
    mask[:12, :12] = 1.0
    alpha = feather_alpha(mask, Rect(0, 0, 12, 12), feather=6, strength=1.0, islands=1)
    assert alpha[0, 0] == 1.0 and alpha[0, 5] == 1.0 and alpha[11, 0] == pytest.approx(1 / 6)


@pytest.mark.parametrize("islands", [1, 3])
def test_thin_strokes_and_single_pixels_reach_full_weight(islands):
    mask = np.zeros((40, 60), np.float32)
    mask[20, 5] = 1.0  # single pixel
    mask[10:13, 20:50] = 1.0  # 3 px stroke
    mask[25:40, 20:50] = 1.0  # big block (reaches the full feather)
    window = Rect(5, 10, 45, 30)
    alpha = feather_alpha(mask, window, feather=8, strength=1.0, islands=islands)
    local = lambda y, x: alpha[y - window.y, x - window.x]  # noqa: E731
    if islands == 3:  # each island capped at its own depth
        assert local(20, 5) == 1.0
        assert local(11, 30) == 1.0 and local(10, 30) == pytest.approx(0.5)
    else:  # all treated as one island: the block's depth rules
        assert local(20, 5) == pytest.approx(1 / 8)
    assert local(39, 35) == 1.0 and local(25, 35) == pytest.approx(1 / 8)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 30),
    w=st.integers(2, 30),
    seed=st.integers(0, 2**32 - 1),
    feather=st.sampled_from([0.0, 1.0, 2.5, 8.0]),
)
def test_alpha_is_zero_exactly_where_nothing_is_selected(h, w, seed, feather):
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random((h, w)) < 0.3, rng.random((h, w)) + 1e-6, 0).astype(np.float32)
    alpha = feather_alpha(mask, Rect(0, 0, w, h), feather=feather, strength=1.0)
    assert ((alpha > 0) == (mask > 0)).all()
    assert alpha.max() <= 1.0 and (alpha <= mask + 1e-6).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_blend_writes_only_where_alpha_is_positive(dtype, channels):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1.0
    source = (rng.random((20, 30, channels)) * top).astype(dtype)
    layer, composite = new_layer(source), source.copy()
    assert (layer[:, :, 3] == 0).all()
    window = Rect(5, 4, 10, 8)
    alpha = np.zeros((8, 10), np.float32)
    alpha[2:6, 2:8] = 1.0
    alpha[3, 3] = 0.5
    refined = np.full((8, 10, 3), 0.25, np.float32)
    blend_region(source, refined, alpha, window, layer, composite)
    unchanged = np.ones((20, 30), bool)
    unchanged[window.y : window.y1, window.x : window.x1] = alpha == 0
    np.testing.assert_array_equal(composite[unchanged], source[unchanged])
    assert (layer[:, :, 3][unchanged] == 0).all()
    got = composite[window.y + 2, window.x + 2, :3].astype(np.float64) / top
    np.testing.assert_allclose(got, 0.25, atol=2e-3)
    half = composite[window.y + 3, window.x + 3, 0].astype(np.float64) / top
    src = source[window.y + 3, window.x + 3, 0].astype(np.float64) / top
    assert half == pytest.approx((src + 0.25) / 2, abs=2e-3)
    if channels == 4:
        np.testing.assert_array_equal(composite[:, :, 3], source[:, :, 3])
        own = source[window.y + 2, window.x + 2, 3] / top
        assert layer[window.y + 2, window.x + 2, 3] / top == pytest.approx(own, abs=2e-3)
    else:
        assert layer[window.y + 2, window.x + 2, 3] == top
