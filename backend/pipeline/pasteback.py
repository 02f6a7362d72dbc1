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

from ...shared.geometry import Rect
from .focus import crop
from .imaging import rgb_float

#: Long side, in cells, of the grid the drift is estimated on: drift is low-frequency by nature,
#: and a coarse grid makes the estimate cheap and ignores the engine's legitimate fine changes.
DRIFT_GRID = 64
#: Long side of the block-averaged images the drift is measured on (a multiple of DRIFT_GRID).
DRIFT_SAMPLES = 256
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
    estimate: np.ndarray | None = None
    for v, w in reversed(levels):
        local = v / np.maximum(w, 1e-12)[:, :, None]
        if estimate is None:
            estimate = local
            continue
        up = cv2.resize(estimate, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(local.shape)
        trust = np.clip(w / _FULL_TRUST, 0.0, 1.0)[:, :, None]
        estimate = trust * local + (1.0 - trust) * up
    assert estimate is not None  # levels always holds the finest level
    return estimate


def drift_field(
    before: np.ndarray, after: np.ndarray, mask: np.ndarray, negligible: float = 0.0
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The engine's low-frequency colour drift over a crop, or None when it cannot be measured.

    ``before``/``after``: the engine's input and output (``HxWx3`` float32, working size);
    ``mask``: the crop's selection at the same size. The drift is estimated from context
    pixels -- those not selected, with a guard band of a few pixels around the selection that
    resampling and the engine's own blending may legitimately touch -- on a coarse grid, and
    extrapolated into the selection. Returns the field (``HxWx3`` float32, to subtract from
    ``after``; None also when no part of it exceeds ``negligible``, e.g. half a quantisation
    step of the output) and what was measured, for the result's metadata.
    """
    h, w = mask.shape[:2]
    # First average everything over small blocks (drift is low-frequency): the per-pixel work
    # is then two area resizes, and the rest runs on at most DRIFT_SAMPLES^2 cells.
    step = max(1, max(h, w) // DRIFT_SAMPLES)
    sw, sh = -(-w // step), -(-h // step)
    # A block counts as context only when none of its pixels is selected (the mean of a
    # non-negative mask is 0 exactly then), minus a guard band of at least 2 px around the
    # selection, which resampling and the engine's own blending may legitimately touch.
    pure: np.ndarray = (cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA) <= 0).view(np.uint8)
    guard = max(1, math.ceil(2 / step))
    pure = cv2.erode(pure, np.ones((2 * guard + 1, 2 * guard + 1), np.uint8), borderValue=1)
    context = pure.astype(np.float32).reshape(sh, sw)
    fraction = float(context.mean())
    if fraction < MIN_CONTEXT_FRACTION:
        return None, {"color_correct": False, "reason": "no context outside the selection"}
    diff: np.ndarray = cv2.subtract(
        cv2.resize(after, (sw, sh), interpolation=cv2.INTER_AREA),
        cv2.resize(before, (sw, sh), interpolation=cv2.INTER_AREA),
    ).reshape(sh, sw, 3)
    diff *= context[:, :, None]
    cell = max(1, max(sw, sh) // DRIFT_GRID)
    gw, gh = -(-sw // cell), -(-sh // cell)
    values = cv2.resize(diff, (gw, gh), interpolation=cv2.INTER_AREA).reshape(gh, gw, 3)
    weights = cv2.resize(context, (gw, gh), interpolation=cv2.INTER_AREA).reshape(gh, gw)
    coarse = _push_pull(values, weights)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 1.0).reshape(gh, gw, 3)
    mean = values.reshape(-1, 3).sum(0) / max(float(weights.sum()), 1e-12)
    meta: dict[str, Any] = {
        "color_correct": True,
        "context_fraction": round(fraction, 4),
        "drift_mean": [round(float(m), 5) for m in mean],
        "drift_max": round(float(np.abs(coarse).max()), 5),
    }
    if meta["drift_max"] <= negligible:
        return None, {**meta, "color_correct": False, "reason": "drift below one quantisation step"}
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)
    return field, meta


def feather_alpha(
    mask: np.ndarray, window: Rect, feather: float, strength: float, islands: int = 2
) -> np.ndarray:
    """Blend weight over ``window`` of the tile: selection value x strength x inward feather.

    The feather ramps from 0 outside the selection to 1 at ``feather`` px inside (Euclidean
    distance to the nearest unselected pixel; the tile's border does not count as an edge, so
    selections touching the canvas border blend fully there). Each island's ramp is capped by
    its own depth, so a thin stroke or a single pixel still reaches full weight at its centre
    instead of being blended at a fraction of it. ``islands`` is how many islands ``window``
    holds (1 allows a shortcut); ``window`` must hold whole islands and no others.
    """
    alpha = crop(mask, window).astype(np.float32)  # a copy: scaled in place below
    if strength != 1.0:
        alpha *= np.float32(strength)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    if feather <= 0:
        return alpha
    h, w = mask.shape[:2]
    pad = math.ceil(feather) + 1
    outer = window.grow(pad).intersect(Rect(0, 0, w, h))
    inner = window.translate(-outer.x, -outer.y)
    selected = (crop(mask, outer) > 0).view(np.uint8)
    dist = crop(cv2.distanceTransform(selected, cv2.DIST_L2, 5), inner)
    feather = np.float32(feather)
    if islands == 1:
        reach = min(feather, max(float(dist.max()), 1.0))
        ramp = np.minimum(dist, np.float32(reach), out=dist)
        ramp *= np.float32(1.0 / reach)
    else:
        count, labels = cv2.connectedComponentsWithAlgorithm(
            np.ascontiguousarray(crop(selected, inner)), 8, cv2.CV_32S, cv2.CCL_SPAGHETTI
        )
        inside = labels > 0
        depth = np.ones(count, np.float32)
        np.maximum.at(depth, labels[inside], dist[inside])  # type: ignore[arg-type]  # OpenCV: any number type
        reaches = np.minimum(depth, feather)
        ramp = np.minimum(dist / reaches[labels], 1.0)

    alpha *= ramp
    return alpha


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float samples (integer sources: [0, 1] scale) in ``dtype``, kept finite and in range."""
    # addWeighted rounds and saturates in one pass (and, unlike the arithmetic functions, takes
    # its factors as plain numbers, never mistaking them for a tiny image).
    if dtype == np.uint8:
        return cv2.addWeighted(values, 255.0, values, 0.0, 0.0, dtype=cv2.CV_8U)
    if dtype == np.uint16:
        return cv2.addWeighted(values, 65535.0, values, 0.0, 0.0, dtype=cv2.CV_16U)
    if dtype == np.float16:
        return np.clip(values, -_F16_MAX, _F16_MAX).astype(np.float16)
    return values.astype(dtype, copy=False)


def new_layer(source: np.ndarray) -> np.ndarray:
    """An ``HxWx4`` layer in the source's dtype: the source's colours, fully transparent."""
    channels = source.shape[2]
    if channels == 4:
        layer = source.copy()
    else:
        h, w = source.shape[:2]
        layer = np.empty((h, w, 4), dtype=source.dtype)
        layer[:, :, :3] = source if channels == 3 else source[:, :, :1]
    layer[:, :, 3] = 0
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
    channels, dtype = source.shape[2], source.dtype
    src = crop(source, window)
    changed = (alpha > 0).view(np.uint8)
    if channels == 1:
        refined = cv2.cvtColor(refined, cv2.COLOR_RGB2GRAY)[:, :, None]
    colour = _to_dtype(refined, dtype).reshape(refined.shape)  # the layer's RGB

    if dtype == np.uint8 and channels > 1:
        # 8-bit: blend the 8-bit refined colour as an editor composites the layer. OpenCV's
        # blend divides by (w1 + w2 + 1e-5), a relative error far below 8-bit rounding.
        src_rgb = cv2.cvtColor(src, cv2.COLOR_RGBA2RGB) if channels == 4 else src
        mixed = cv2.blendLinear(src_rgb, colour, 1.0 - alpha, alpha)
    else:
        # mixed = src + alpha * (refined - src) in float, with OpenCV (numpy's broadcasting
        # over the channel axis is several times slower).
        src_colour = rgb_float(src)
        if channels == 1:
            src_colour = np.ascontiguousarray(src_colour[:, :, :1])
        alpha_c = alpha[:, :, None] if channels == 1 else cv2.merge([alpha, alpha, alpha])
        mixed = cv2.subtract(refined, src_colour).reshape(src_colour.shape)
        cv2.multiply(mixed, alpha_c, dst=mixed)
        cv2.add(mixed, src_colour, dst=mixed)
        mixed = _to_dtype(mixed, dtype)
    mixed = mixed.reshape(*mixed.shape[:2], -1)
    if channels == 4:
        own = cv2.extractChannel(src, 3)
        mixed = cv2.merge([mixed, own])
    # Only pixels with alpha > 0 are written: the rest stay bit-identical to the source.
    cv2.copyTo(mixed, changed, crop(composite, window))

    if channels == 4:  # the layer's opacity includes the source's own
        if dtype.kind == "u":
            alpha = cv2.multiply(alpha, own, scale=1.0 / np.iinfo(dtype).max, dtype=cv2.CV_32F)
        else:
            alpha = alpha * np.clip(own.astype(np.float32), 0.0, 1.0)
    if channels == 1:
        colour = cv2.merge([colour, colour, colour])
    cv2.copyTo(cv2.merge([colour, _to_dtype(alpha, dtype)]), changed, crop(layer, window))
