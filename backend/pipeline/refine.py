"""One refine job, engine-independent: plan focus regions, crop, run the engine, paste back.

This is the single code path shared by the server's worker, ``touchup eval`` and the
benchmarks, so that what is measured is what users get.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import cv2
import numpy as np

from ...shared.geometry import scaled_margin
from ...shared.protocol import ErrorCode, Transfer
from ...shared.request import variant_seed
from ..engines.base import Engine, EngineOutput, EngineRequest, Preset, ProgressFn, RefineParams
from ..errors import BadInput, Cancelled, EngineError
from .colour import encode_srgb, from_engine, to_engine
from .focus import FocusRegion, crop, focus_crop, plan_regions, resize_part
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
    #: Which of the job's results this is: index (0-based), how many, and the seed it used.
    variant: int = 0
    variants: int = 1
    seed: int = 0


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


class JobProgressFn(Protocol):
    """``on_progress(stage, step, total, preview, variant)`` of a whole job: an engine's
    :data:`ProgressFn` plus the 0-based index of the variant being computed (with seeds run in
    one batch, the first variant of the batch)."""

    def __call__(
        self, stage: str, step: int, total: int, preview: np.ndarray | None = None, variant: int = 0
    ) -> None: ...


#: ``on_variant(outcome)``: a finished variant, pasted back, handed over before the next is ready.
VariantFn = Callable[["RefineOutcome"], None]


def _silent(stage: str, step: int, total: int, preview: np.ndarray | None = None, variant: int = 0) -> None:
    """The default progress sink."""


def variant_count(params: RefineParams, preset: Preset) -> int:
    """How many results a job asks for: its own count, else the preset's default."""
    return int(params.variants or preset.variants)


def run_refine(
    job: RefineJob,
    engine: Engine,
    on_progress: ProgressFn | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> RefineOutcome:
    """Refine ``job`` once, with its own seed, whatever variant count it carries: the
    single-result path of the evaluation and benchmarks (and variant 0 of :func:`run_variants`).

    ``on_progress(stage, step, total, preview)`` as an engine reports it.
    """
    report = on_progress or _silent

    def progress(
        stage: str, step: int, total: int, preview: np.ndarray | None = None, variant: int = 0
    ) -> None:
        report(stage, step, total, preview)

    single = replace(job, params=replace(job.params, variants=1))
    return run_variants(single, engine, progress, is_cancelled)[0]


@dataclass
class _Variant:
    """One variant's paste-back target and what it gathers across the job's focus regions."""

    index: int
    seed: int
    layer: np.ndarray
    composite: np.ndarray
    engine_meta: dict[str, Any] = field(default_factory=dict)
    regions: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: {"engine": 0.0, "paste": 0.0})


def run_variants(
    job: RefineJob,
    engine: Engine,
    on_progress: JobProgressFn | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    on_variant: VariantFn | None = None,
) -> list[RefineOutcome]:
    """Refine every focus region of ``job`` with ``engine`` once per variant and paste back.

    Each region is cropped, upsampled and encoded for the engine once; the engine then runs the
    variants' seeds (``seed + i``, see :func:`~touchup.shared.request.variant_seed`) through
    :meth:`~touchup.backend.engines.base.Engine.refine_variants`, which may batch them. Every
    output is pasted back at once into its own layer, so variant ``i``'s outcome goes to
    ``on_variant`` as soon as its last region is done, before the next variant is ready.
    Returns every variant's outcome in index order.

    Progress stages: ``focus`` (step k of n regions), ``refine`` (the engine's own steps; with
    several regions the stage reads ``refine k/n``), ``paste``, each with the variant's index.
    Raises BadInput (with its protocol code) for a job the engine cannot do, Cancelled once
    ``is_cancelled()`` turns true, EngineError when the engine returns something unusable.
    """
    report = on_progress or _silent
    cancelled = is_cancelled or (lambda: False)
    mask, preset = _validate(job, engine)
    source, params = job.source, job.params
    h, w = source.shape[:2]
    doc_w, doc_h = job.doc_size or (w, h)
    margin = scaled_margin(params.context, doc_w, doc_h)
    crop_time = 0.0
    colour = source[:, :, :3] if source.shape[2] == 4 else source

    t0 = time.perf_counter()
    regions = plan_regions(mask, margin, preset.working)
    # Engines see sRGB-encoded values; a linear document is encoded here (the crops below, each
    # after resampling in linear light) and decoded right after the engine, before paste-back.
    transfer = Transfer(job.transfer)
    references = [to_engine(rgb_float(r), transfer) for r in job.references]
    count = variant_count(params, preset)
    seeds = [variant_seed(params.seed, i) for i in range(count)]
    variants = [_Variant(i, seed, new_layer(source), source.copy()) for i, seed in enumerate(seeds)]
    crop_time += time.perf_counter() - t0

    n = len(regions)
    outcomes: list[RefineOutcome] = []
    for k, region in enumerate(regions, start=1):
        if cancelled():
            raise Cancelled()
        report("focus", k, n, None, 0)
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
        crop_time += time.perf_counter() - t0

        stage = "refine" if n == 1 else f"refine {k}/{n}"
        current = [0]  # the variant the engine works on (the first of a batch), for progress

        def engine_progress(
            _stage: str,
            step: int,
            total: int,
            preview: np.ndarray | None,
            _s: str = stage,
            _current: list[int] = current,
        ) -> None:
            report(_s, step, total, preview, _current[0])

        request = EngineRequest(
            crop=image,
            mask=crop_mask,
            references=references,
            prompt=job.prompt,
            params=params,
            native_size=(region.rect.width, region.rect.height),
            on_progress=engine_progress,
            is_cancelled=cancelled,
        )
        outputs = engine.refine_variants(request, seeds)
        try:
            for variant in variants:
                current[0] = variant.index
                t0 = time.perf_counter()
                output = next(outputs, None)
                variant.timings["engine"] += time.perf_counter() - t0
                if output is None:
                    raise EngineError(
                        f"engine {engine.name!r} returned {variant.index} result(s) for {count} seed(s)"
                    )
                if cancelled():
                    raise Cancelled()
                t0 = time.perf_counter()
                _paste(job, mask, region, image, crop_mask, (lo, hi), output, engine.name, variant)
                report("paste", k, n, None, variant.index)
                variant.timings["paste"] += time.perf_counter() - t0
                if k == n:
                    outcome = _outcome(variant, count, regions, engine, preset, margin, crop_time, job)
                    outcomes.append(outcome)
                    if on_variant is not None:
                        on_variant(outcome)
        finally:
            close = getattr(outputs, "close", None)
            if close is not None:
                close()  # an engine's generator stops at once (and frees its batch) on any failure
    return outcomes


def _paste(
    job: RefineJob,
    mask: np.ndarray,
    region: FocusRegion,
    image: np.ndarray,
    crop_mask: np.ndarray,
    value_range: tuple[float, float],
    output: EngineOutput,
    name: str,
    variant: _Variant,
) -> None:
    """One engine output back into its variant's layer and composite (drift, range, feather)."""
    source, params = job.source, job.params
    lo, hi = value_range
    refined = _checked(output.image, image, name)
    drift_meta: dict[str, Any] = {"color_correct": False}
    if params.color_correct:
        drift, drift_meta = drift_field(image, refined, crop_mask, _half_step(source.dtype) / (hi - lo))
        if drift is not None:
            refined -= drift
    if (lo, hi) != (0.0, 1.0):
        refined *= np.float32(hi - lo)
        refined += np.float32(lo)
    from_engine(refined, Transfer(job.transfer))
    window = region.selection.translate(-region.rect.x, -region.rect.y)
    back = resize_part(refined, region.rect.width, region.rect.height, window)
    # Strength is a blend weight, unless the engine already used it (as denoising strength).
    strength = 1.0 if output.strength_applied else params.strength
    alpha = feather_alpha(mask, region.selection, params.feather, strength, region.islands)
    blend_region(source, back, alpha, region.selection, variant.layer, variant.composite)
    variant.engine_meta.update(output.meta)
    variant.regions.append(
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


def _outcome(
    variant: _Variant,
    count: int,
    regions: list[FocusRegion],
    engine: Engine,
    preset: Preset,
    margin: float,
    crop_time: float,
    job: RefineJob,
) -> RefineOutcome:
    params = job.params
    meta = {
        **variant.engine_meta,
        "engine_name": engine.name,
        "preset": preset.name,
        "margin": margin,
        "feather": params.feather,
        "strength": params.strength,
        "mode": params.mode,
        "transfer": Transfer(job.transfer).value,
        "color_correct": any(r["color_correct"] for r in variant.regions),
        "scales": [r["scale"] for r in variant.regions],
        "regions": variant.regions,
        "seed": variant.seed,
        "variant": variant.index,
        "variants": count,
    }
    return RefineOutcome(
        layer=variant.layer,
        composite=variant.composite,
        regions=[r.rect for r in regions],
        meta=meta,
        timings={"crop": crop_time, **variant.timings},
        variant=variant.index,
        variants=count,
        seed=variant.seed,
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
