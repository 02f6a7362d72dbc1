"""One refine job, engine-independent: plan focus regions, crop, run the engine, paste back.

This is the single code path shared by the server's worker, ``touchup eval`` and the
benchmarks, so that what is measured is what users get.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ...shared.geometry import scaled_margin
from ...shared.protocol import ErrorCode, Transfer
from ..engines.base import Engine, EngineRequest, ProgressFn, RefineParams
from ..errors import BadInput, Cancelled, EngineError
from .colour import encode_srgb, from_engine, to_engine
from .focus import crop, focus_crop, plan_regions, resize_part
from .imaging import mask_to_float, rgb_float
from .pasteback import blend_region, drift_field, feather_alpha, new_layer


@dataclass
class RefineJob:
    """Inputs of one job, already decoded from the wire.

    ``source``: ``HxWxC`` (C = 1, 3 or 4) in RGBA order, dtype uint8/uint16/float16/float32 --
    the context tile the client sent. ``mask``: ``HxW`` float32 in [0, 1], the selection for
    that tile. ``references``: images of any size and dtype, RGB(A) order. ``doc_size``: the
    whole document's (width, height), which scales the context margin. ``transfer``: how the
    source and references encode light; engines always see sRGB-encoded values.
    """

    source: np.ndarray
    mask: np.ndarray
    references: list[np.ndarray] = field(default_factory=list)
    prompt: str = ""
    params: RefineParams = field(default_factory=RefineParams)
    doc_size: tuple[int, int] | None = None
    transfer: Transfer = Transfer.SRGB


@dataclass
class RefineOutcome:
    """What a job produces.

    ``layer``: ``HxWx4`` in the source's dtype -- RGB the refined pixels, A the blend mask (0
    wherever the selection is 0; the source's own alpha multiplied in for 4-channel sources).
    ``composite``: the source with the layer blended in, same shape/dtype as the source, every
    pixel whose selection value is 0 bit-identical to the source.
    """

    layer: np.ndarray
    composite: np.ndarray
    regions: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _validate(job: RefineJob, engine: Engine) -> tuple[np.ndarray, Any]:
    """Check the job against the engine; returns the float mask and the preset to use."""
    src, params = job.source, job.params
    if src.ndim == 2:
        src = job.source = src[:, :, None]
    if src.ndim != 3 or src.shape[2] not in (1, 3, 4):
        raise BadInput(f"source must have 1, 3 or 4 channels, got shape {src.shape}", ErrorCode.BAD_FRAME)
    if src.dtype not in (np.uint8, np.uint16, np.float16, np.float32):
        raise BadInput(f"unsupported sample type {src.dtype}", ErrorCode.BAD_FRAME)
    mask = job.mask
    if mask.shape[:2] != src.shape[:2] or (mask.ndim == 3 and mask.shape[2] != 1):
        raise BadInput(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the source is {src.shape[1]}x{src.shape[0]}",
            ErrorCode.SIZE_MISMATCH,
        )
    mask = mask[:, :, 0] if mask.ndim == 3 else mask
    if mask.dtype != np.float32:
        mask = mask_to_float(mask)  # float32 masks are used as sent: clipped where they are read
    if not 0.0 <= params.strength <= 1.0:
        raise BadInput(f"strength must be within [0, 1], got {params.strength}")
    if params.feather < 0 or params.context < 0:
        raise BadInput("feather and context must not be negative")
    if params.mode not in ("refine", "regenerate"):
        raise BadInput(f"mode must be 'refine' or 'regenerate', got {params.mode!r}")
    try:
        preset = engine.preset(params.preset)
    except KeyError:
        raise BadInput(
            f"engine {engine.name!r} has no preset {params.preset!r}", ErrorCode.UNKNOWN_PRESET
        ) from None
    caps = preset.capabilities
    if params.mode == "regenerate" and not caps.regenerate:
        raise BadInput(f"engine {engine.name!r} cannot regenerate", ErrorCode.UNSUPPORTED)
    if len(job.references) > (caps.max_references if caps.reference else 0):
        raise BadInput(
            f"engine {engine.name!r} ({preset.name}) accepts at most "
            f"{caps.max_references if caps.reference else 0} reference image(s)",
            ErrorCode.UNSUPPORTED,
        )
    if not cv2.countNonZero((mask > 0).view(np.uint8)):
        if params.mode != "regenerate":
            raise BadInput("the selection is empty: select the region to refine", ErrorCode.EMPTY_MASK)
        mask = np.ones(mask.shape[:2], np.float32)  # regenerate: nothing selected = everything
    return mask, preset


def _value_range(image: np.ndarray) -> tuple[float, float]:
    """The range of a float source region to map to [0, 1] for the engine.

    [0, 1] itself unless HDR values exceed it; then the region is scaled linearly (and scaled
    back afterwards), so highlights are neither clipped by the engine nor by paste-back.
    """
    lo, hi = float(image.min()), float(image.max())
    return min(lo, 0.0), max(hi, 1.0)


def run_refine(
    job: RefineJob,
    engine: Engine,
    on_progress: ProgressFn | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> RefineOutcome:
    """Refine every focus region of ``job`` with ``engine`` and paste the results back.

    Progress stages: ``focus`` (step k of n regions), ``refine`` (the engine's own steps; with
    several regions the stage reads ``refine k/n``), ``paste``. Raises BadInput (with its
    protocol code) for a job the engine cannot do, Cancelled once ``is_cancelled()`` turns
    true, EngineError when the engine returns something unusable.
    """
    report = on_progress or (lambda stage, step, total, preview: None)
    cancelled = is_cancelled or (lambda: False)
    mask, preset = _validate(job, engine)
    source, params = job.source, job.params
    h, w = source.shape[:2]
    doc_w, doc_h = job.doc_size or (w, h)
    margin = scaled_margin(params.context, doc_w, doc_h)
    timings = {"crop": 0.0, "engine": 0.0, "paste": 0.0}
    colour = source[:, :, :3] if source.shape[2] == 4 else source

    t0 = time.perf_counter()
    regions = plan_regions(mask, margin, preset.working)
    # Engines see sRGB-encoded values; a linear document is encoded here (the crops below, each
    # after resampling in linear light) and decoded right after the engine, before paste-back.
    transfer = Transfer(job.transfer)
    references = [to_engine(rgb_float(r), transfer) for r in job.references]
    layer = new_layer(source)
    composite = source.copy()
    timings["crop"] += time.perf_counter() - t0

    n = len(regions)
    region_meta: list[dict[str, Any]] = []
    merged_meta: dict[str, Any] = {}
    for k, region in enumerate(regions, start=1):
        if cancelled():
            raise Cancelled()
        report("focus", k, n, None)
        t0 = time.perf_counter()
        image, crop_mask = focus_crop(source, mask, region)
        to_engine(image, transfer)
        lo, hi = _value_range(crop(colour, region.rect)) if source.dtype.kind == "f" else (0.0, 1.0)
        if transfer is Transfer.LINEAR:  # the curve is monotonic: the range's ends map to the ends
            lo, hi = (float(v) for v in encode_srgb(np.array([lo, hi], np.float32)))
        if (lo, hi) != (0.0, 1.0):
            image -= np.float32(lo)
            image *= np.float32(1.0 / (hi - lo))
        if region.work_width * region.work_height > region.rect.area:
            np.clip(image, 0.0, 1.0, out=image)  # bicubic overshoot (shrinking cannot overshoot)
        timings["crop"] += time.perf_counter() - t0

        stage = "refine" if n == 1 else f"refine {k}/{n}"

        def engine_progress(
            _stage: str, step: int, total: int, preview: np.ndarray | None, _s: str = stage
        ) -> None:
            report(_s, step, total, preview)

        t0 = time.perf_counter()
        output = engine.refine(
            EngineRequest(
                crop=image,
                mask=crop_mask,
                references=references,
                prompt=job.prompt,
                params=params,
                native_size=(region.rect.width, region.rect.height),
                on_progress=engine_progress,
                is_cancelled=cancelled,
            )
        )
        timings["engine"] += time.perf_counter() - t0
        if cancelled():
            raise Cancelled()

        t0 = time.perf_counter()
        refined = _checked(output.image, image, engine.name)
        drift_meta: dict[str, Any] = {"color_correct": False}
        if params.color_correct:
            field, drift_meta = drift_field(image, refined, crop_mask, _half_step(source.dtype) / (hi - lo))
            if field is not None:
                refined -= field
        if (lo, hi) != (0.0, 1.0):
            refined *= np.float32(hi - lo)
            refined += np.float32(lo)
        from_engine(refined, transfer)
        window = region.selection.translate(-region.rect.x, -region.rect.y)
        back = resize_part(refined, region.rect.width, region.rect.height, window)
        # Strength is a blend weight, unless the engine already used it (as denoising strength).
        strength = 1.0 if output.strength_applied else params.strength
        alpha = feather_alpha(mask, region.selection, params.feather, strength, region.islands)
        blend_region(source, back, alpha, region.selection, layer, composite)
        report("paste", k, n, None)
        timings["paste"] += time.perf_counter() - t0

        merged_meta.update(output.meta)
        region_meta.append(
            {
                "rect": region.rect.as_list(),
                "selection": region.selection.as_list(),
                "work_size": [region.work_width, region.work_height],
                "scale": round(region.scale, 4),
                "value_range": [lo, hi],
                **drift_meta,
                "engine": dict(output.meta),
            }
        )

    meta = {
        **merged_meta,
        "engine_name": engine.name,
        "preset": preset.name,
        "margin": margin,
        "feather": params.feather,
        "strength": params.strength,
        "mode": params.mode,
        "transfer": transfer.value,
        "color_correct": any(r["color_correct"] for r in region_meta),
        "scales": [r["scale"] for r in region_meta],
        "regions": region_meta,
    }
    return RefineOutcome(
        layer=layer,
        composite=composite,
        regions=[r.rect for r in regions],
        meta=meta,
        timings=timings,
    )


def _half_step(dtype: np.dtype) -> float:
    """Half a quantisation step of ``dtype`` in [0, 1] units: smaller corrections change nothing."""
    if dtype.kind == "u":
        return 0.5 / np.iinfo(dtype).max
    return 0.5 * float(np.finfo(dtype).eps)


def _checked(image: np.ndarray, given: np.ndarray, name: str) -> np.ndarray:
    """The engine's output as a float32 array of the crop's shape that we may modify, or EngineError."""
    image = np.ascontiguousarray(image)  # OpenCV needs C order; engines may hand back views
    if image.shape != given.shape:
        raise EngineError(f"engine {name!r} returned an image of shape {image.shape}, expected {given.shape}")
    if image.dtype != np.float32 or np.may_share_memory(image, given) or not image.flags.writeable:
        image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise EngineError(f"engine {name!r} produced non-finite pixels (NaN or infinity)")
    return image
