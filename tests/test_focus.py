"""Focus crop planning: islands, merging, working sizes, and the crops an engine receives."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from touchup.backend.engines.base import WorkingSize
from touchup.backend.pipeline.focus import (
    find_islands,
    focus_crop,
    merge_islands,
    plan_regions,
    resize,
    resize_part,
    working_size,
)
from touchup.backend.pipeline.imaging import rgb_float
from touchup.shared.geometry import Rect


def reference_islands(mask: np.ndarray) -> list[Rect]:
    """Islands by pixel labelling (8-connectivity), to check the outline tracing against."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    return [Rect(*map(int, s[:4])) for s in stats[1:count]]


def key(rects: list[Rect]) -> list[tuple[int, int, int, int]]:
    return sorted(tuple(r.as_list()) for r in rects)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    density=st.floats(0.0, 0.7),
    seed=st.integers(0, 2**32 - 1),
)
def test_islands_are_the_8_connected_components(h, w, density, seed):
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random((h, w)) < density, rng.random((h, w)).astype(np.float32) + 1e-6, 0)
    assert key(find_islands(mask.astype(np.float32))) == key(reference_islands(mask))


def test_island_shapes_that_outline_tracing_could_miss():
    mask = np.zeros((30, 30), np.float32)
    mask[0, 0] = 1e-7  # a faint single pixel in the corner still counts
    mask[5:20, 5:20] = 1
    mask[8:17, 8:17] = 0  # a ring...
    mask[12, 12] = 1  # ...with an island in its hole
    mask[25, 25] = mask[26, 26] = 1  # diagonal neighbours are one island
    mask[29, 10:30] = 0.5  # along the bottom border
    assert key(find_islands(mask)) == key(reference_islands(mask))
    assert len(find_islands(mask)) == 5
    assert find_islands(np.zeros((10, 10), np.float32)) == []


def test_far_islands_stay_apart_and_near_ones_merge():
    bounds = Rect(0, 0, 1000, 1000)
    a, b = Rect(100, 100, 10, 10), Rect(300, 100, 10, 10)
    # Context boxes 20 px apart: separate with a 10 px gap allowance, merged with 20.
    separate = merge_islands([a, b], margin=85, bounds=bounds, gap=10)
    assert [g[1] for g in separate] == [a, b]
    assert [g[0] for g in separate] == [a.grow(85), b.grow(85)]
    merged = merge_islands([a, b], margin=85, bounds=bounds, gap=20)
    assert merged == [(Rect(15, 15, 380, 180), Rect(100, 100, 210, 10), 2)]


def test_merging_cascades_until_no_regions_are_close():
    # a and b (diagonal neighbours) merge; c is close to neither alone, but lies inside the box
    # of their union -- so it must join too, or two crops would overlap.
    a, b, c = Rect(0, 0, 10, 10), Rect(12, 12, 10, 10), Rect(16, 0, 6, 5)
    groups = merge_islands([a, b, c], margin=0, bounds=Rect(0, 0, 100, 100), gap=5)
    assert groups == [(Rect(0, 0, 22, 22), Rect(0, 0, 22, 22), 3)]
    assert len(merge_islands([a, c], margin=0, bounds=Rect(0, 0, 100, 100), gap=5)) == 2


@settings(max_examples=40, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.integers(0, 190), st.integers(0, 190), st.integers(1, 20), st.integers(1, 20)),
        min_size=1,
        max_size=12,
    ),
    margin=st.integers(0, 30),
    gap=st.integers(0, 30),
)
def test_regions_never_overlap_and_cover_every_island(boxes, margin, gap):
    bounds = Rect(0, 0, 210, 210)
    islands = [Rect(x, y, w, h) for x, y, w, h in boxes]
    groups = merge_islands(islands, margin, bounds, gap)
    assert sum(g[2] for g in groups) == len(islands)
    for region, selection, _ in groups:
        assert region == selection.grow(margin).intersect(bounds)
    for i, (r1, _, _) in enumerate(groups):
        for r2, _, _ in groups[i + 1 :]:
            separation = max(r2.x - r1.x1, r1.x - r2.x1, r2.y - r1.y1, r1.y - r2.y1)
            assert separation > gap  # neither overlapping nor close
    for island in islands:  # each island lies in exactly one group's selection
        holders = [s for _, s, _ in groups if s.intersect(island) == island]
        assert len(holders) == 1


def test_speckled_mask_is_grouped_quickly_and_consistently():
    rng = np.random.default_rng(3)
    mask = (rng.random((400, 400)) < 0.01).astype(np.float32)  # ~1600 one-pixel islands
    regions = plan_regions(mask, margin=8, working=WorkingSize(target_area=64 * 64, min_side=16, multiple=8))
    covered = np.zeros(mask.shape, bool)
    for region in regions:
        s = region.selection
        covered[s.y : s.y1, s.x : s.x1] = True
    assert covered[mask > 0].all()
    assert len(regions) < 10


LOGO_WORK = WorkingSize(target_area=1024 * 1024, multiple=16, min_side=256, max_side=2048)


def test_small_logo_is_upsampled_to_about_a_megapixel():
    w, h = working_size(90 + 128, 60 + 128, LOGO_WORK)
    assert w % 16 == 0 and h % 16 == 0
    assert abs(w * h - 1024 * 1024) / (1024 * 1024) < 0.05
    assert abs(w / h - 218 / 188) < 0.02


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    target=st.sampled_from([64 * 64, 512 * 512, 1024 * 1024]),
    multiple=st.sampled_from([1, 8, 16, 64]),
    min_side=st.sampled_from([1, 64, 256]),
    max_side=st.sampled_from([512, 2048]),
    allow_downscale=st.booleans(),
)
def test_working_size_rules(width, height, target, multiple, min_side, max_side, allow_downscale):
    rules = WorkingSize(target, multiple, min_side, max_side, allow_downscale)
    w, h = working_size(width, height, rules)
    lo = max(multiple, math.ceil(min_side / multiple) * multiple)
    hi = max(lo, max_side // multiple * multiple)
    for side in (w, h):  # hard limits the engine relies on
        assert side % multiple == 0 and lo <= side <= hi
    if not allow_downscale and max(width, height) <= hi:  # a CPU engine keeps its resolution
        assert w >= width - multiple / 2 and h >= height - multiple / 2
    if max(width, height) * lo / min(width, height) <= hi:  # one scale can meet both limits
        assert abs(math.log((w / h) / (width / height))) <= multiple / w + multiple / h


def test_extreme_aspect_is_stretched_within_limits():
    w, h = working_size(4000, 10, LOGO_WORK)
    assert (w, h) == (2048, 256)


@pytest.mark.parametrize(
    ("dtype", "top"), [(np.uint8, 255), (np.uint16, 65535), (np.float16, 1.0), (np.float32, 1.0)]
)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_colour_float_converts_every_sample_type(dtype, top, channels):
    image = np.zeros((3, 4, channels), dtype)
    image[..., 0] = top if np.dtype(dtype).kind == "u" else 2.5  # HDR floats stay as they are
    out = rgb_float(image)
    assert out.dtype == np.float32 and out.shape == (3, 4, 3)
    want = 1.0 if np.dtype(dtype).kind == "u" else 2.5
    assert out[0, 0, 0] == pytest.approx(want)
    assert not np.may_share_memory(out, image)


def test_focus_crop_gives_the_engine_the_region_at_working_size():
    y, x = np.mgrid[0:120, 0:160]
    tile = np.dstack([x, y, x * 0, x * 0 + 255]).astype(np.uint8)
    mask = np.zeros((120, 160), np.float32)
    mask[50:60, 70:90] = 0.6
    working = WorkingSize(target_area=160 * 120, multiple=8, min_side=8)
    (region,) = plan_regions(mask, margin=10, working=working)
    assert region.rect == Rect(60, 40, 40, 30)
    image, crop_mask = focus_crop(tile, mask, region)
    assert image.shape == (region.work_height, region.work_width, 3)
    assert crop_mask.shape == (region.work_height, region.work_width)
    assert region.scale == pytest.approx(4.0, rel=0.05)
    # Upsampled, not re-positioned: the crop spans the region's x range, in [0, 1].
    assert image[:, 0, 0].mean() == pytest.approx(60 / 255, abs=2 / 255)
    assert image[:, -1, 0].mean() == pytest.approx(99 / 255, abs=2 / 255)
    assert crop_mask.min() >= 0.0 and crop_mask.max() == pytest.approx(0.6)
    assert crop_mask[crop_mask.shape[0] // 2, crop_mask.shape[1] // 2] == pytest.approx(0.6)
    assert crop_mask[0, 0] == 0


def test_big_region_is_downscaled_with_area_averaging():
    tile = np.zeros((600, 600, 3), np.uint8)
    tile[::2] = 255  # one-pixel stripes: aliasing would turn them into bands
    mask = np.ones((600, 600), np.float32)
    (region,) = plan_regions(
        mask, margin=0, working=WorkingSize(target_area=300 * 300, multiple=1, min_side=1)
    )
    image, _ = focus_crop(tile, mask, region)
    assert image.shape == (300, 300, 3)
    assert np.allclose(image, 0.5, atol=0.01)


@settings(max_examples=60, deadline=None)
@given(
    q=st.integers(1, 6),
    p=st.integers(1, 6),
    unit=st.integers(3, 40),
    data=st.data(),
)
def test_resizing_part_of_an_image_matches_resizing_all_of_it(q, p, unit, data):
    """Paste-back resizes only the selection's window back; it must equal the full resize."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    image = rng.random((q * unit, q * unit + q, 3)).astype(np.float32)
    width, height = p * unit + p, p * unit
    x = data.draw(st.integers(0, width - 1))
    y = data.draw(st.integers(0, height - 1))
    part = Rect(x, y, data.draw(st.integers(1, width - x)), data.draw(st.integers(1, height - y)))
    got = resize_part(image, width, height, part)
    want = resize(image, width, height)[part.y : part.y1, part.x : part.x1]
    # Same sampling grid, same pixels -- up to float32 rounding: OpenCV's vectorised and scalar
    # paths may round one sample an ulp apart when the sub-image puts it in another lane. A
    # misaligned grid shows as differences of a percent, far above this bound.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
