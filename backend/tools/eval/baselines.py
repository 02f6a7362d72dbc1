"""The methods compared in one evaluation: the product's own path and simple baselines.

Every method turns a case into a refined whole document (uint8 RGB). They share the engine
instance so that only the surroundings of the model differ:

* ``ours`` -- what a user gets: the client sends the selection's context tile, the backend's
  :func:`~touchup.backend.pipeline.refine.run_refine` focuses, refines, colour-corrects and feathers.
* ``nothing`` -- the degraded input as it is (the floor any method must beat).
* ``naive`` -- the same focus crop and engine output, pasted at the selection with no drift
  correction and no feather (``run_refine`` with ``color_correct=False, feather=0``).
* ``overlay`` -- diffusers' inpainting paste-back: the ``padding_mask_crop`` crop (selection
  box + fixed padding, widened to the model's aspect, resized to the model's fixed size,
  binarised mask) and ``apply_overlay`` (result resized back into the crop, original
  composited on top through the inverted selection).
* ``nofocus`` -- the engine on the whole image at its working size, then scaled back (a job
  whose context margin covers the whole document), with the product's paste-back: what
  Focus-and-Refine's crop-and-upsample buys.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ....shared.geometry import Rect, context_tile
from ...engines.base import Engine, EngineRequest, Preset, RefineParams
from ...pipeline.focus import working_size
from ...pipeline.imaging import rgb_float
from ...pipeline.refine import RefineJob, run_refine
from .datasets import EvalCase

#: Method key -> label used in tables and pictures, in display order.
METHODS: dict[str, str] = {
    "ours": "Touchup (focus + paste-back)",
    "nothing": "do nothing",
    "naive": "naive paste",
    "overlay": "diffusers overlay paste",
    "nofocus": "no focus (whole image)",
}
#: diffusers' ``padding_mask_crop`` as A1111/ADetailer use it ("only masked padding" 32 px).
OVERLAY_PADDING = 32


@dataclass
class MethodResult:
    """A method's refined document and what it cost."""

    image: np.ndarray
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def selection_rect(mask: np.ndarray) -> Rect:
    """Bounding box of the non-zero selection pixels."""
    ys, xs = np.nonzero(mask)
    return Rect.from_corners(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def usable_references(case: EvalCase, preset: Preset) -> list[np.ndarray]:
    """The case's references the preset accepts (plugins grey the option out otherwise)."""
    caps = preset.capabilities
    return list(case.references[: caps.max_references]) if caps.reference else []


def _run_job(case: EvalCase, engine: Engine, params: RefineParams, tile: Rect) -> MethodResult:
    """Send ``tile`` of the case through the product's job path, as a plugin would."""
    h, w = case.image.shape[:2]
    window = (slice(tile.y, tile.y1), slice(tile.x, tile.x1))
    job = RefineJob(
        source=np.ascontiguousarray(case.image[window]),
        mask=case.mask[window].astype(np.float32) / 255.0,
        references=usable_references(case, engine.preset(params.preset)),
        prompt=case.prompt,
        params=params,
        doc_size=(w, h),
    )
    t0 = time.perf_counter()
    outcome = run_refine(job, engine)
    seconds = time.perf_counter() - t0
    result = case.image.copy()
    result[window] = outcome.composite[:, :, :3]
    meta = {"timings": outcome.timings, "scales": outcome.meta.get("scales")}
    for key in ("reference", "restoration_steps"):  # used, or why it was refused; what was done
        if key in outcome.meta:
            meta[key] = outcome.meta[key]
    return MethodResult(result, seconds, meta)


def run_ours(case: EvalCase, engine: Engine, params: RefineParams) -> MethodResult:
    h, w = case.image.shape[:2]
    tile = context_tile(selection_rect(case.mask), w, h, params.context)
    return _run_job(case, engine, params, tile)


def run_nothing(case: EvalCase, engine: Engine, params: RefineParams) -> MethodResult:
    return MethodResult(case.image.copy(), 0.0)


def run_naive(case: EvalCase, engine: Engine, params: RefineParams) -> MethodResult:
    return run_ours(case, engine, dataclasses.replace(params, color_correct=False, feather=0.0))


def run_nofocus(case: EvalCase, engine: Engine, params: RefineParams) -> MethodResult:
    h, w = case.image.shape[:2]
    # A margin reaching past every edge makes the one focus region the whole document, so the
    # engine sees the whole image at its working size -- and nothing else changes.
    whole = dataclasses.replace(params, context=float(100 * max(w, h)))
    return _run_job(case, engine, whole, Rect(0, 0, w, h))


# -- diffusers' padding_mask_crop + apply_overlay, re-implemented --------------------------


def model_size(preset: Preset) -> tuple[int, int]:
    """The fixed (width, height) a diffusers pipeline would run at: the preset's working size
    for a square crop of its target area."""
    side = round(math.sqrt(preset.working.target_area))
    return working_size(side, side, preset.working)


def padded_crop_region(mask: np.ndarray, width: int, height: int, pad: int) -> Rect:
    """``padding_mask_crop``'s crop: selection box + ``pad``, widened to ``width/height``'s aspect.

    The short dimension grows symmetrically; a crop pushed past the image is shifted back
    inside and, if still too large, clamped (then the aspect no longer matches and the
    resize fills the difference, as diffusers' ``resize_mode="fill"`` does).
    """
    ih, iw = mask.shape[:2]
    sel = selection_rect(mask)
    x0, y0 = max(sel.x - pad, 0), max(sel.y - pad, 0)
    x1, y1 = min(sel.x1 + pad, iw), min(sel.y1 + pad, ih)
    target = width / height
    if (x1 - x0) / (y1 - y0) > target:
        y0, y1 = _widen(y0, y1, round((x1 - x0) / target), ih)
    else:
        x0, x1 = _widen(x0, x1, round((y1 - y0) * target), iw)
    return Rect.from_corners(x0, y0, x1, y1)


def _widen(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """Grow ``[lo, hi)`` to ``length`` around its centre, kept within ``[0, limit)``."""
    extra = max(0, length - (hi - lo))
    lo, hi = lo - extra // 2, hi + extra - extra // 2
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        hi, lo = min(limit, hi - lo), 0
    return lo, hi


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL-like resampling: Lanczos up, area down."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    up = width * height >= img.shape[0] * img.shape[1]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LANCZOS4 if up else cv2.INTER_AREA)


def fit_fill(img: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Rect]:
    """Resize to fit inside ``width x height`` and fill the rest from the edges ("fill" mode).

    Returns the image and where the fitted picture lies in it (to cut it out again).
    """
    h, w = img.shape[:2]
    scale = min(width / w, height / h)
    fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
    fitted = _resize(img, fw, fh)
    left, top = (width - fw) // 2, (height - fh) // 2
    out = cv2.copyMakeBorder(fitted, top, height - fh - top, left, width - fw - left, cv2.BORDER_REPLICATE)
    return out.reshape(height, width, *img.shape[2:]), Rect(left, top, fw, fh)


def run_overlay(case: EvalCase, engine: Engine, params: RefineParams) -> MethodResult:
    preset = engine.preset(params.preset)
    width, height = model_size(preset)
    t0 = time.perf_counter()
    region = padded_crop_region(case.mask, width, height, OVERLAY_PADDING)
    window = (slice(region.y, region.y1), slice(region.x, region.x1))
    image, fitted = fit_fill(rgb_float(case.image[window]), width, height)
    mask, _ = fit_fill(case.mask[window].astype(np.float32) / 255.0, width, height)
    mask = (mask >= 0.5).astype(np.float32)  # the pipeline's mask processor binarises
    refs = [rgb_float(r) for r in usable_references(case, preset)]
    out = engine.refine(EngineRequest(image, mask, refs, case.prompt, params))
    refined = np.asarray(out.image, np.float32)[fitted.y : fitted.y1, fitted.x : fitted.x1]
    refined = _resize(refined, region.width, region.height)
    # apply_overlay: the result inside the crop, the original on top through the inverted mask.
    alpha = (case.mask[window].astype(np.float32) / 255.0)[:, :, None]
    original = case.image[window].astype(np.float32)
    blended = np.clip(np.rint(refined * 255.0), 0, 255) * alpha + original * (1.0 - alpha)
    result = case.image.copy()
    result[window] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return MethodResult(result, time.perf_counter() - t0, {"crop": region.as_list(), "size": [width, height]})


RUNNERS: dict[str, Callable[[EvalCase, Engine, RefineParams], MethodResult]] = {
    "ours": run_ours,
    "nothing": run_nothing,
    "naive": run_naive,
    "overlay": run_overlay,
    "nofocus": run_nofocus,
}


def run_method(name: str, case: EvalCase, engine: Engine, params: RefineParams) -> MethodResult:
    """Refine ``case`` with method ``name`` (a key of :data:`METHODS`)."""
    return RUNNERS[name](case, engine, params)


def check_methods(methods: list[str]) -> None:
    """ValueError naming the unknown ones when ``methods`` are not all keys of :data:`METHODS`."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")


__all__ = ["METHODS", "MethodResult", "check_methods", "fit_fill", "padded_crop_region", "run_method"]
