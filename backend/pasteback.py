"""Paste-back: put an engine's refined crop into the tile without touching anything unselected.

Three steps, each for a reason a retoucher would notice:

* **Drift correction.** Generative engines shift colour and tone slightly over the whole crop
  (VAE round trips, guidance). Outside the selection the engine should have changed nothing,
  so whatever changed there *is* the drift: it is measured on those context pixels, spread
  into the selection as a smooth field, and subtracted. Without it the refined region shows
  as a faint patch of different colour.
* **Inward feather.** The blend weight ramps from 0 at the selection's edge to 1 at
  ``feather`` px inside, so no seam appears; it never spreads outward, so pixels outside the
  selection keep alpha 0.
* **Exact copy outside.** Pixels whose selection value is 0 are copied from the source, not
  recomputed, so they stay bit-identical whatever the dtype.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ..shared.geometry import Rect
from .focus import crop

#: Long side, in cells, of the grid the drift is estimated on: drift is low-frequency by nature,
#: and a coarse grid makes the estimate cheap and ignores the engine's legitimate fine changes.
DRIFT_GRID = 48
#: Fewer context pixels than this (fraction of the crop) give no trustworthy drift estimate.
MIN_CONTEXT_FRACTION = 0.01
#: A cell whose context fraction reaches this is trusted fully; sparser cells lean on coarser
#: levels of the push-pull pyramid.
_FULL_TRUST = 0.25
_F16_MAX = float(np.finfo(np.float16).max)


def _push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill a sparse, weighted field everywhere (``values`` premultiplied by ``weights``).

    Push: average values and weights down a pyramid until one cell is left. Pull: from the
    coarsest level up, each cell keeps its own estimate in proportion to how much data it had
    and takes the upsampled coarser estimate for the rest. Cells far from any data thus get a
    smooth extrapolation of the nearest data, which is what a drift field inside a large
    selection needs.
    """
    levels = [(values, weights)]
    v, w = values, weights
    while max(w.shape[:2]) > 1:
        size = (max(1, (w.shape[1] + 1) // 2), max(1, (w.shape[0] + 1) // 2))
        v = cv2.resize(v, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0])
        levels.append((v, w))
    estimate = None
    for v, w in reversed(levels):
        local = v / np.maximum(w, 1e-12)[:, :, None]
        if estimate is None:
            estimate = local
            continue
        up = cv2.resize(estimate, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(local.shape)
        trust = np.clip(w / _FULL_TRUST, 0.0, 1.0)[:, :, None]
        estimate = trust * local + (1.0 - trust) * up
    return estimate


def drift_field(
    before: np.ndarray, after: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The engine's low-frequency colour drift over a crop, or None when it cannot be measured.

    ``before``/``after``: the engine's input and output (``HxWx3`` float32, working size);
    ``mask``: the crop's selection at the same size. The drift is estimated from context
    pixels -- those not selected, with a guard band of a few pixels around the selection that
    resampling and the engine's own blending may legitimately touch -- and extrapolated into
    the selection. Returns the field (``HxWx3`` float32, to subtract from ``after``) and what
    was measured, for the result's metadata.
    """
    h, w = mask.shape[:2]
    selected = (mask > 0).view(np.uint8)
    guard = max(2, round(max(h, w) / 256))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * guard + 1, 2 * guard + 1))
    context = 1.0 - cv2.dilate(selected, kernel).astype(np.float32)
    fraction = float(cv2.mean(context)[0])
    if fraction < MIN_CONTEXT_FRACTION:
        return None, {"color_correct": False, "reason": "no context outside the selection"}
    cell = max(h, w) / DRIFT_GRID
    gw, gh = max(1, round(w / cell)), max(1, round(h / cell))
    diff = cv2.subtract(after, before)
    cv2.multiply(diff, cv2.merge([context] * 3), dst=diff)
    values = cv2.resize(diff, (gw, gh), interpolation=cv2.INTER_AREA).reshape(gh, gw, 3)
    weights = cv2.resize(context, (gw, gh), interpolation=cv2.INTER_AREA).reshape(gh, gw)
    coarse = _push_pull(values, weights)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 1.0).reshape(gh, gw, 3)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)
    mean = (values.reshape(-1, 3).sum(0) / max(float(weights.sum()), 1e-12)).tolist()
    return field, {
        "color_correct": True,
        "context_fraction": round(fraction, 4),
        "drift_mean": [round(float(m), 5) for m in mean],
    }


def feather_alpha(mask: np.ndarray, window: Rect, feather: float, strength: float) -> np.ndarray:
    """Blend weight over ``window`` of the tile: selection value x strength x inward feather.

    The feather ramps from 0 outside the selection to 1 at ``feather`` px inside (Euclidean
    distance to the nearest unselected pixel; the tile's border does not count as an edge, so
    selections touching the canvas border blend fully there). Each island's ramp is capped by
    its own depth, so a thin stroke or a single pixel still reaches full weight at its centre
    instead of being blended at a fraction of it.
    """
    sel = crop(mask, window)
    alpha = np.clip(sel * np.float32(strength), 0.0, 1.0).astype(np.float32, copy=False)
    if feather <= 0:
        return alpha
    h, w = mask.shape[:2]
    pad = math.ceil(feather) + 1
    outer = window.grow(pad).intersect(Rect(0, 0, w, h))
    selected = (crop(mask, outer) > 0).view(np.uint8)
    dist = cv2.distanceTransform(np.ascontiguousarray(selected), cv2.DIST_L2, 5)
    count, labels = cv2.connectedComponents(selected, connectivity=8)
    depth = ndimage.maximum(dist, labels, np.arange(count)).astype(np.float32)
    depth[0] = 1.0  # background: distance 0 there anyway
    reach = np.minimum(np.float32(feather), depth)[labels]
    ramp = np.minimum(dist / reach, 1.0)
    inner = window.translate(-outer.x, -outer.y)
    return alpha * crop(ramp, inner)


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float samples (integer sources: [0, 1] scale) in ``dtype``, kept finite and in range."""
    if dtype == np.uint8:
        return _round(values, 255, dtype)
    if dtype == np.uint16:
        return _round(values, 65535, dtype)
    if dtype == np.float16:
        return np.clip(values, -_F16_MAX, _F16_MAX).astype(np.float16)
    return values.astype(dtype, copy=False)


def _round(values: np.ndarray, top: int, dtype: np.dtype) -> np.ndarray:
    return np.clip(np.rint(values * np.float32(top)), 0, top).astype(dtype)


def _as_float(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values.astype(np.float32) * np.float32(1 / 255)
    if values.dtype == np.uint16:
        return values.astype(np.float32) * np.float32(1 / 65535)
    return values.astype(np.float32)


def new_layer(source: np.ndarray) -> np.ndarray:
    """An ``HxWx4`` layer in the source's dtype: the source's colours, fully transparent."""
    h, w = source.shape[:2]
    layer = np.zeros((h, w, 4), dtype=source.dtype)
    layer[:, :, :3] = source[:, :, :3] if source.shape[2] >= 3 else source[:, :, :1]
    return layer


def blend_region(
    source: np.ndarray,
    refined: np.ndarray,
    alpha: np.ndarray,
    window: Rect,
    layer: np.ndarray,
    composite: np.ndarray,
) -> None:
    """Write one region's result into ``layer`` and ``composite`` (both in place).

    ``source``: the tile (``HxWxC``, C = 1, 3 or 4, any supported dtype). ``refined``: the
    corrected engine output over ``window``, float32 RGB in the source's float scale (integer
    sources: [0, 1]). ``alpha``: the blend weight over ``window``. Only pixels with alpha > 0
    are written, so everything else keeps the source's exact values.
    """
    channels = source.shape[2]
    src = crop(source, window)
    if channels == 1:
        refined = refined.mean(axis=2, keepdims=True)
    colour = min(channels, 3)
    src_rgb = _as_float(src[:, :, :colour])
    a = alpha[:, :, None]
    mixed = src_rgb + a * (refined - src_rgb)
    changed = alpha > 0
    out_rgb = crop(composite, window)[:, :, :colour]
    np.copyto(out_rgb, _to_dtype(mixed, source.dtype), where=changed[:, :, None])
    lay = crop(layer, window)
    np.copyto(lay[:, :, :3], _to_dtype(refined, source.dtype), where=changed[:, :, None])
    if channels == 4:
        alpha = alpha * np.clip(_as_float(src[:, :, 3]), 0.0, 1.0)
    lay[:, :, 3] = _to_dtype(alpha, source.dtype)
