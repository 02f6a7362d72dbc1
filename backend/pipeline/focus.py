"""Focus crop: which parts of a tile an engine refines, and at what resolution.

Generative models lose fine detail in small regions (their autoencoders see a 90x60 logo as a
few latent cells). Focus-and-Refine therefore crops each selected area with some context and
*upsamples* it to the engine's working size before refining. Selected islands far apart get
their own crops (each upsampled on its own, instead of one huge mostly-empty crop); islands
close together share one crop so their context stays consistent and no two crops overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ...shared.geometry import Rect
from ..engines.base import SizeRule, WorkingSize, pipeline_area_size
from .imaging import rgb_float

#: Above this many islands (a speckled soft mask) neighbours are pre-grouped with one dilation
#: so that the pairwise box merge stays cheap.
_PREGROUP_ISLANDS = 256


@dataclass(frozen=True)
class FocusRegion:
    """One crop of a tile handed to the engine.

    ``rect``: the crop in tile coordinates (selected pixels plus context, clamped to the tile).
    ``selection``: bounding box of the selected pixels inside it (where paste-back blends).
    ``work_width``/``work_height``: the size the crop is resized to for the engine.
    """

    rect: Rect
    selection: Rect
    work_width: int
    work_height: int
    #: How many islands of the selection this region holds (paste-back's feather uses it).
    islands: int = 1

    @property
    def scale(self) -> float:
        """Linear scale factor from tile pixels to engine pixels (geometric mean of both axes)."""
        return math.sqrt(self.work_width * self.work_height / max(self.rect.area, 1))

    @property
    def work_size(self) -> tuple[int, int]:
        return self.work_width, self.work_height


def find_islands(mask: np.ndarray) -> list[Rect]:
    """Bounding boxes of the 8-connected components of ``mask > 0`` (every non-zero pixel counts).

    Traces component outlines (``findContours``) inside the selection's bounding box instead of
    labelling every pixel of the tile: a tile is mostly context, and outlines are all a bounding
    box needs. Islands inside another island's hole are found too (two-level hierarchy).
    """
    selected = (mask > 0).view(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(selected)
    if bw == 0 or bh == 0:
        return []
    # A zero frame so that components touching the tile's border are traced like any other.
    framed = cv2.copyMakeBorder(
        selected[by : by + bh, bx : bx + bw], 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0
    )
    contours, hierarchy = cv2.findContours(framed, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outer = [c for c, h in zip(contours, hierarchy[0], strict=True) if h[3] < 0]
    boxes = []
    for contour in outer:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append(Rect(x + bx - 1, y + by - 1, w, h))
    return boxes


def _pregroup(mask: np.ndarray, reach: int) -> list[Rect]:
    """Selection bounding boxes of groups of islands within ``2 * reach`` px of each other.

    Used only for speckled masks with very many islands: any two islands joined here would
    also be merged by the box rule, so this only speeds the merge up.
    """
    selected = (mask > 0).view(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
    count, labels = cv2.connectedComponents(cv2.dilate(selected, kernel), connectivity=8)
    ys, xs = np.nonzero(selected)
    lab = labels[ys, xs]
    x0 = np.full(count, np.iinfo(np.int64).max)
    y0 = x0.copy()
    x1 = np.full(count, -1)
    y1 = x1.copy()
    np.minimum.at(x0, lab, xs)  # type: ignore[arg-type]  # OpenCV: labels typed as any number
    np.minimum.at(y0, lab, ys)  # type: ignore[arg-type]  # OpenCV: labels typed as any number
    np.maximum.at(x1, lab, xs)  # type: ignore[arg-type]  # OpenCV: labels typed as any number
    np.maximum.at(y1, lab, ys)  # type: ignore[arg-type]  # OpenCV: labels typed as any number
    return [
        Rect.from_corners(int(x0[i]), int(y0[i]), int(x1[i]) + 1, int(y1[i]) + 1)
        for i in range(1, count)
        if x1[i] >= 0
    ]


def merge_islands(
    islands: list[Rect], margin: int, bounds: Rect, gap: int, counts: list[int] | np.ndarray | None = None
) -> list[tuple[Rect, Rect, int]]:
    """Group islands whose context boxes overlap or lie within ``gap`` px of each other.

    Returns ``(region, selection, count)``: ``selection`` the union of the group's island boxes,
    ``region`` that grown by ``margin`` and clamped to ``bounds``, ``count`` how many islands
    (``counts`` gives the islands per input box when those are already groups). Merging
    repeats until no two regions are close, so the regions returned never overlap (each
    selected pixel is refined and pasted exactly once).
    """
    sel = np.array([[r.x, r.y, r.x1, r.y1] for r in islands], dtype=np.int64).reshape(-1, 4)
    counts = np.ones(len(sel), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    clamp_lo = np.array([bounds.x, bounds.y, bounds.x, bounds.y])
    clamp_hi = np.array([bounds.x1, bounds.y1, bounds.x1, bounds.y1])
    grow = np.array([-margin, -margin, margin, margin])
    while True:
        reg = np.clip(sel + grow, clamp_lo, clamp_hi)
        n = len(reg)
        if n <= 1:
            break
        # Chebyshev gap between boxes: negative when they overlap, 0 when they touch.
        gx = np.maximum(reg[None, :, 0] - reg[:, None, 2], reg[:, None, 0] - reg[None, :, 2])
        gy = np.maximum(reg[None, :, 1] - reg[:, None, 3], reg[:, None, 1] - reg[None, :, 3])
        i, j = np.nonzero(np.maximum(gx, gy) <= gap)
        n_groups, labels = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)))
        if n_groups == n:
            break
        merged = np.empty((n_groups, 4), dtype=np.int64)
        merged[:, :2] = np.iinfo(np.int64).max
        merged[:, 2:] = np.iinfo(np.int64).min
        np.minimum.at(merged[:, 0], labels, sel[:, 0])
        np.minimum.at(merged[:, 1], labels, sel[:, 1])
        np.maximum.at(merged[:, 2], labels, sel[:, 2])
        np.maximum.at(merged[:, 3], labels, sel[:, 3])
        counts = np.bincount(labels, weights=counts, minlength=n_groups).astype(np.int64)
        sel = merged
    reg = np.clip(sel + grow, clamp_lo, clamp_hi)
    groups = [
        (Rect.from_corners(*map(int, r)), Rect.from_corners(*map(int, s)), int(c))
        for r, s, c in zip(reg, sel, counts, strict=True)
    ]
    # Reading order (top to bottom, left to right) so progress "region k of n" is predictable.
    return sorted(groups, key=lambda g: (g[1].y, g[1].x))


def working_size(width: int, height: int, working: WorkingSize) -> tuple[int, int]:
    """The engine-side size of a ``width`` x ``height`` crop under ``working``'s rules.

    One uniform scale brings the area to ``target_area`` (never below 1 when downscaling is not
    allowed), limited so the long side fits ``max_side`` and, where that leaves room, the short
    side reaches ``min_side``. Sides are then rounded to ``multiple`` and clamped to
    ``[min_side, max_side]`` -- those limits are hard (a model cannot run outside them), so a
    crop of extreme aspect ratio is stretched along its short side rather than rejected.
    """
    if working.rule == SizeRule.PIPELINE_AREA:
        return pipeline_area_size(width, height, working.target_area, working.multiple)
    mult = max(1, int(working.multiple))
    lo = max(mult, math.ceil(working.min_side / mult) * mult)
    hi = max(lo, (int(working.max_side) // mult) * mult)
    scale = math.sqrt(working.target_area / max(width * height, 1))
    if not working.allow_downscale:
        scale = max(scale, 1.0)
    scale = min(scale, hi / max(width, height))
    scale = max(scale, min(lo / min(width, height), hi / max(width, height)))

    def side(n: int) -> int:
        return int(min(hi, max(lo, round(n * scale / mult) * mult)))

    return side(width), side(height)


def plan_regions(
    mask: np.ndarray, margin: int, working: WorkingSize, gap: int | None = None
) -> list[FocusRegion]:
    """The focus regions of a tile's selection ``mask`` (``HxW``; > 0 means selected).

    ``margin`` is the context in tile pixels (already scaled to the document); ``gap`` is how
    far apart two context boxes may be and still be merged (default: ``margin``, so islands
    within three margins share a crop). An empty mask yields no regions.
    """
    h, w = mask.shape[:2]
    bounds = Rect(0, 0, w, h)
    gap = margin if gap is None else gap
    islands = find_islands(mask)
    counts = None
    if len(islands) > _PREGROUP_ISLANDS:
        islands = _pregroup(mask, max(1, margin + (gap + 1) // 2))
        counts = [2] * len(islands)  # groups of (possibly) several islands
    regions = []
    for rect, selection, count in merge_islands(islands, margin, bounds, gap, counts):
        ww, wh = working_size(rect.width, rect.height, working)
        regions.append(FocusRegion(rect, selection, ww, wh, count))
    return regions


def resize(image: np.ndarray, width: int, height: int, *, smooth: bool = False) -> np.ndarray:
    """Resize an image (or a mask, ``smooth=True``) with the interpolation fit for the direction.

    Pictures shrink by area averaging (no aliasing) and grow bicubic (sharp). Masks grow
    bilinear (no overshoot outside [0, 1]) and shrink bilinear too while the factor is below 2
    -- every source pixel still weighs on some output pixel, so no selected pixel vanishes --
    and by area averaging beyond. Same size returns the input untouched.
    """
    ih, iw = image.shape[:2]
    if (iw, ih) == (width, height):
        return image
    shrink = width * height < iw * ih
    if smooth:
        mild = width * 2 > iw and height * 2 > ih
        interp = cv2.INTER_AREA if shrink and not mild else cv2.INTER_LINEAR
    else:
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = cv2.resize(image, (width, height), interpolation=interp)
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing single channel
        out = out[:, :, None]
    return out


def _aligned_span(n_in: int, n_out: int, a0: int, a1: int, pad: int) -> tuple[int, int, int, int]:
    """Input and output index ranges, covering output ``[a0, a1)`` plus ``pad`` input pixels of
    margin, whose ends fall on the same sampling grid as a resize of the whole axis."""
    g = math.gcd(n_in, n_out)
    p, q = n_out // g, n_in // g  # every p output pixels span exactly q input pixels
    margin = math.ceil(pad * n_out / n_in) + 1
    start = max(0, a0 - margin) // p
    end = min(n_out, -(-(a1 + margin) // p) * p)
    return start * q, (end // p) * q if end < n_out else n_in, start * p, end


def resize_part(image: np.ndarray, width: int, height: int, part: Rect) -> np.ndarray:
    """``resize(image, width, height)`` cropped to ``part``, computing little more than ``part``.

    Resizing the engine's output back to a big region only to keep the selection's window wastes
    most of the work. An input sub-image whose edges fall on the resize's own sampling grid
    (same scale, same pixel centres), with a few pixels of margin for the interpolation kernel,
    resizes to the same pixels as the whole (up to float32 rounding). Falls back to the whole when no such grid is
    close (awkward size ratios) or the part is most of the image.
    """
    ih, iw = image.shape[:2]
    pad = max(3, math.ceil(max(iw / width, ih / height)) + 1)
    x0, x1, ox0, ox1 = _aligned_span(iw, width, part.x, part.x1, pad)
    y0, y1, oy0, oy1 = _aligned_span(ih, height, part.y, part.y1, pad)
    if (ox1 - ox0) * (oy1 - oy0) > 0.8 * width * height:
        sub, ox0, oy0 = resize(image, width, height), 0, 0
    else:
        sub = resize(image[y0:y1, x0:x1], ox1 - ox0, oy1 - oy0)
    return crop(sub, part.translate(-ox0, -oy0))


def crop(image: np.ndarray, rect: Rect) -> np.ndarray:
    """A view of ``image`` inside ``rect`` (tile coordinates)."""
    return image[rect.y : rect.y1, rect.x : rect.x1]


def focus_crop(image: np.ndarray, mask: np.ndarray, region: FocusRegion) -> tuple[np.ndarray, np.ndarray]:
    """The engine's inputs for ``region``: float32 RGB crop and float32 mask at the working size.

    ``image`` is the tile in its own dtype (``HxWxC``), ``mask`` the tile's float32 selection.
    Only the region is converted, never the whole tile, and the returned arrays never share
    memory with the inputs, so engines may work in place.
    """
    ww, wh = region.work_size
    part = crop(image, region.rect)
    rw, rh = region.rect.width, region.rect.height
    if image.dtype.kind == "u" and rw % ww == 0 and rh % wh == 0 and (rw, rh) != (ww, wh):
        # Shrinking by a whole factor: averaging integer samples first is several times
        # faster than converting the big crop to float (and as exact as the samples).
        img = rgb_float(resize(part, ww, wh))
    else:
        img = resize(rgb_float(part), ww, wh)
    msk = resize(crop(mask, region.rect), ww, wh, smooth=True)
    # Clip a fresh resize in place, but copy an unresized crop: the tile's mask is never aliased.
    return img, np.clip(msk, 0.0, 1.0, out=msk if (ww, wh) != (rw, rh) else None)
