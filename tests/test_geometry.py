"""Region geometry shared by every client: rectangles, the context margin, the tile to send."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from touchup.shared.geometry import (
    DEFAULT_CONTEXT,
    Rect,
    context_tile,
    mask_bounds,
    scaled_margin,
)


def test_rect_basics():
    r = Rect(2, 3, 10, 5)
    assert (r.x1, r.y1, r.area, r.empty) == (12, 8, 50, False)
    assert Rect.from_corners(2, 3, 12, 8) == r
    assert r.grow(2) == Rect(0, 1, 14, 9)
    assert r.translate(-2, 4) == Rect(0, 7, 10, 5)
    assert r.as_list() == [2, 3, 10, 5]
    assert Rect(0, 0, 0, 4).empty and Rect(0, 0, 3, -1).empty
    assert Rect(5, 5, -3, 2).area == 0


def test_intersection_and_union():
    a, b = Rect(0, 0, 10, 10), Rect(5, 6, 10, 10)
    assert a.intersect(b) == Rect(5, 6, 5, 4)
    assert a.union(b) == Rect(0, 0, 15, 16)
    assert a.intersect(Rect(20, 20, 5, 5)).empty  # disjoint: an empty rectangle, no negative size
    assert a.intersect(Rect(20, 20, 5, 5)).area == 0
    empty = Rect(100, 100, 0, 0)
    assert a.union(empty) == a and empty.union(a) == a  # an empty box does not stretch a union


rects = st.builds(Rect, st.integers(-50, 50), st.integers(-50, 50), st.integers(0, 40), st.integers(0, 40))


@settings(max_examples=100, deadline=None)
@given(a=rects, b=rects)
def test_intersection_and_union_agree_with_pixel_sets(a, b):
    def pixels(r: Rect) -> set[tuple[int, int]]:
        return {(x, y) for x in range(r.x, r.x1) for y in range(r.y, r.y1)}

    assert pixels(a.intersect(b)) == pixels(a) & pixels(b)
    union = a.union(b)
    assert pixels(union) >= pixels(a) | pixels(b)
    if not a.empty and not b.empty:  # and it is the smallest such box
        assert union.x == min(a.x, b.x) and union.y1 == max(a.y1, b.y1)


def test_margin_is_given_at_one_megapixel_and_scales_with_the_document():
    assert scaled_margin(64, 1024, 1024) == 64
    assert scaled_margin(64, 2048, 2048) == 128  # 4 MP: the same fraction of the image
    assert scaled_margin(64, 8192, 8192) == 512
    assert scaled_margin(64, 512, 512) == 32
    assert scaled_margin(64, 4000, 3000) == round(64 * (12e6 / 2**20) ** 0.5)
    assert scaled_margin(0, 4000, 3000) == 0  # context switched off
    assert scaled_margin(0.01, 64, 64) == 1  # a tiny margin is at least one pixel


def test_context_tile_grows_and_clamps():
    # 1 MP document: the default margin is 64 px.
    assert context_tile(Rect(400, 300, 90, 60), 1024, 1024) == Rect(336, 236, 218, 188)
    assert context_tile(Rect(400, 300, 90, 60), 1024, 1024, context=0) == Rect(400, 300, 90, 60)
    # Near the corner the tile stops at the canvas.
    assert context_tile(Rect(10, 20, 30, 30), 1024, 1024) == Rect(0, 0, 104, 114)
    assert context_tile(Rect(1000, 1000, 24, 24), 1024, 1024) == Rect(936, 936, 88, 88)
    # A selection covering the whole canvas, and none at all (regenerate): the whole canvas.
    assert context_tile(Rect(0, 0, 800, 600), 800, 600) == Rect(0, 0, 800, 600)
    assert context_tile(Rect(0, 0, 0, 0), 800, 600) == Rect(0, 0, 800, 600)
    assert DEFAULT_CONTEXT == 64


@settings(max_examples=100, deadline=None)
@given(
    doc=st.tuples(st.integers(1, 5000), st.integers(1, 5000)),
    data=st.data(),
    context=st.sampled_from([0, 16, 64, 200]),
)
def test_context_tile_always_holds_the_selection_inside_the_canvas(doc, data, context):
    w, h = doc
    x = data.draw(st.integers(0, w - 1))
    y = data.draw(st.integers(0, h - 1))
    sel = Rect(x, y, data.draw(st.integers(1, w - x)), data.draw(st.integers(1, h - y)))
    tile = context_tile(sel, w, h, context)
    assert tile.intersect(sel) == sel  # the whole selection is sent
    assert tile.intersect(Rect(0, 0, w, h)) == tile  # and nothing outside the canvas
    margin = scaled_margin(context, w, h)
    assert tile.x == max(0, sel.x - margin) and tile.y1 == min(h, sel.y1 + margin)


def mask_bytes(mask: np.ndarray) -> bytes:
    return np.ascontiguousarray(mask, dtype=np.uint8).tobytes()


def test_mask_bounds():
    mask = np.zeros((40, 50), np.uint8)
    assert mask_bounds(mask_bytes(mask), 50, 40) == Rect(0, 0, 0, 0)
    assert mask_bounds(mask_bytes(mask), 50, 40).empty
    mask[7, 9] = 1  # one faint pixel counts
    assert mask_bounds(mask_bytes(mask), 50, 40) == Rect(9, 7, 1, 1)
    mask[39, 0] = 255
    mask[0, 49] = 3
    assert mask_bounds(memoryview(mask_bytes(mask)), 50, 40) == Rect(0, 0, 50, 40)


@settings(max_examples=100, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    density=st.floats(0, 0.2),
    seed=st.integers(0, 2**32 - 1),
)
def test_mask_bounds_matches_the_nonzero_pixels(h, w, density, seed):
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random((h, w)) < density, rng.integers(1, 256, (h, w)), 0).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    want = (
        Rect(0, 0, 0, 0)
        if len(xs) == 0
        else Rect.from_corners(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    )
    assert mask_bounds(bytearray(mask_bytes(mask)), w, h) == want


@pytest.mark.parametrize("context", [0, 64])
def test_tile_of_a_mask_round_trip(context):
    """What a plugin does: bounds of its selection mask, then the tile to read and send."""
    mask = np.zeros((300, 400), np.uint8)
    mask[100:120, 390:400] = 128  # touching the right border
    sel = mask_bounds(mask_bytes(mask), 400, 300)
    tile = context_tile(sel, 400, 300, context)
    margin = scaled_margin(context, 400, 300)
    assert tile == Rect(390 - margin, 100 - margin, 10 + margin, 20 + 2 * margin)


def test_context_tile_of_a_selection_off_the_canvas_is_the_canvas():
    from touchup.shared.geometry import Rect, context_tile

    assert context_tile(Rect(194, 194, 10, 10), 100, 100) == Rect(0, 0, 100, 100)
    # partly off the canvas: only the part inside counts
    assert context_tile(Rect(90, 90, 50, 50), 100, 100, context=0) == Rect(90, 90, 10, 10)


def test_mask_bounds_rejects_a_short_buffer():
    import pytest

    from touchup.shared.geometry import mask_bounds

    with pytest.raises(ValueError, match="expected 4x4"):
        mask_bounds(b"\x00" * 10, 4, 4)
