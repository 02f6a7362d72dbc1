"""Turning a ``refine`` message into a :class:`RefineJob`, or a precise error.

Everything a user could get wrong is checked here, on the network thread, before the job is
queued: the user hears about a wrong mask size at once rather than after the jobs ahead of
theirs, and the worker only ever sees well-formed input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..shared.protocol import ErrorCode, Message, Transfer
from .config import Config
from .engines import ENGINES, engine_class
from .engines.base import RefineParams
from .errors import BadInput
from .pipeline.imaging import frame_to_array, mask_to_float
from .pipeline.refine import RefineJob

MODES = ("refine", "regenerate")


_PRESETS: dict[tuple[str, int], list[str]] = {}


def engine_presets(engine: str, config: Config) -> list[str]:
    """The preset names of ``engine`` as configured. Presets belong to an engine instance (its
    options may change them), so an instance is made once per engine, without loading a model."""
    key = (engine, id(config))
    if key not in _PRESETS:
        _PRESETS[key] = list(engine_class(engine)(config.engine_options(engine)).presets)
    return _PRESETS[key]


def parse_refine(msg: Message, config: Config) -> dict[str, Any]:
    """Validate a refine message; returns the fields of a :class:`~.jobs.Job` (minus peer/id)."""
    h = msg.header
    source = msg.frame("source")
    mask = msg.frame("mask")
    if source is None or mask is None:
        raise BadInput("a refine request needs a 'source' and a 'mask' frame", ErrorCode.FRAME_COUNT)
    unknown_roles = {f.desc.role for f in msg.frames} - {"source", "mask", "reference"}
    if unknown_roles:
        raise BadInput(f"unexpected frame role(s): {', '.join(sorted(unknown_roles))}", ErrorCode.BAD_FRAME)
    refs = msg.frames_with("reference")

    for frame in [source, mask, *refs]:
        d = frame.desc
        if d.width * d.height > config.max_pixels or max(d.width, d.height) > config.max_side:
            raise BadInput(
                f"the {d.role} image is {d.width}x{d.height}, over this backend's limit "
                f"({config.max_pixels} pixels, {config.max_side} px per side)",
                ErrorCode.TOO_LARGE,
            )
    if len(refs) > config.max_references:
        raise BadInput(f"at most {config.max_references} reference images are accepted", ErrorCode.BAD_PARAMS)
    if (mask.desc.width, mask.desc.height) != (source.desc.width, source.desc.height):
        raise BadInput(
            f"the mask is {mask.desc.width}x{mask.desc.height} but the source tile is "
            f"{source.desc.width}x{source.desc.height}",
            ErrorCode.SIZE_MISMATCH,
        )
    if mask.desc.channels != 1:
        raise BadInput("the mask must have one channel", ErrorCode.BAD_FRAME)
    if source.desc.channels == 1:
        raise BadInput("the source must be RGB or RGBA (3 or 4 channels)", ErrorCode.BAD_FRAME)

    engine = h.get("engine") or config.engine
    if engine not in ENGINES:
        raise BadInput(
            f"unknown engine {engine!r}; this backend has: {', '.join(ENGINES)}", ErrorCode.UNKNOWN_ENGINE
        )
    preset = h.get("preset") or None
    presets = engine_presets(engine, config)
    if preset is not None and presets and preset not in presets:
        raise BadInput(
            f"engine {engine!r} has no preset {preset!r}; it has: {', '.join(presets)}",
            ErrorCode.UNKNOWN_PRESET,
        )

    params = parse_params(h.get("params") or {}, preset)
    source_arr = frame_to_array(source)
    mask_arr = frame_to_array(mask)
    for name, arr in (("source", source_arr), ("mask", mask_arr)):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BadInput(f"the {name} image contains NaN or infinite values", ErrorCode.NOT_FINITE)
    references = [frame_to_array(r) for r in refs]
    for arr in references:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BadInput("a reference image contains NaN or infinite values", ErrorCode.NOT_FINITE)
    if params.mode != "regenerate" and not mask_arr.any():
        raise BadInput("the selection is empty: select the region to refine first", ErrorCode.EMPTY_MASK)

    origin = _int_pair(h.get("origin", [0, 0]), "origin")
    doc_size = _int_pair(h.get("doc_size") or [source.desc.width, source.desc.height], "doc_size")
    if doc_size[0] <= 0 or doc_size[1] <= 0:
        raise BadInput("doc_size must be positive", ErrorCode.BAD_PARAMS)
    output_dtype = h.get("output_dtype") or source.desc.dtype
    if output_dtype not in ("u8", "u16", "f16", "f32"):
        raise BadInput(f"unknown output dtype {output_dtype!r}", ErrorCode.BAD_PARAMS)
    transfer = parse_transfer(h.get("transfer"))
    prompt = h.get("prompt") or ""
    if not isinstance(prompt, str):
        raise BadInput("prompt must be text", ErrorCode.BAD_PARAMS)

    return {
        "work": RefineJob(
            source=source_arr,
            mask=mask_to_float(mask_arr),
            references=references,
            prompt=prompt,
            params=params,
            doc_size=doc_size,
            transfer=transfer,
        ),
        "engine": engine,
        "preset": preset,
        "origin": origin,
        "order": source.desc.order,
        "output_dtype": output_dtype,
    }


def parse_transfer(raw: Any) -> Transfer:
    """The request's ``transfer``; absent means sRGB-encoded (what clients before it sent)."""
    if raw is None:
        return Transfer.SRGB
    try:
        return Transfer(raw)
    except ValueError:
        choices = ", ".join(repr(t.value) for t in Transfer)
        raise BadInput(f"transfer must be one of {choices}, got {raw!r}", ErrorCode.BAD_PARAMS) from None


def parse_params(raw: Any, preset: str | None) -> RefineParams:
    """Check types and ranges of the ``params`` map; unknown keys go to ``extra``."""
    if not isinstance(raw, dict):
        raise BadInput("params must be a map", ErrorCode.BAD_PARAMS)
    p = RefineParams(preset=preset)
    known = {"strength", "steps", "seed", "guidance", "context", "feather", "mode", "color_correct"}
    p.strength = _number(raw, "strength", p.strength, 0.0, 1.0)
    p.context = _number(raw, "context", p.context, 0.0, 4096.0)
    p.feather = _number(raw, "feather", p.feather, 0.0, 1024.0)
    if raw.get("guidance") is not None:
        p.guidance = _number(raw, "guidance", 0.0, 0.0, 100.0)
    if raw.get("steps") is not None:
        p.steps = int(_number(raw, "steps", 1, 1, 1000, integer=True))
    p.seed = int(_number(raw, "seed", 0, 0, 2**63 - 1, integer=True))
    mode = raw.get("mode", "refine")
    if mode not in MODES:
        raise BadInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}", ErrorCode.BAD_PARAMS)
    p.mode = mode
    cc = raw.get("color_correct", True)
    if not isinstance(cc, bool):
        raise BadInput("color_correct must be true or false", ErrorCode.BAD_PARAMS)
    p.color_correct = cc
    p.extra = {k: v for k, v in raw.items() if k not in known}
    return p


def _number(raw: dict, key: str, default: float, lo: float, hi: float, integer: bool = False) -> float:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not float(value).is_integer())
    ):
        raise BadInput(
            f"{key} must be a{'n integer' if integer else ' number'}, got {value!r}", ErrorCode.BAD_PARAMS
        )
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadInput(f"{key} must be between {lo:g} and {hi:g}, got {value!r}", ErrorCode.BAD_PARAMS)
    return float(value)


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise BadInput(f"{name} must be two integers", ErrorCode.BAD_PARAMS)
    return int(value[0]), int(value[1])
