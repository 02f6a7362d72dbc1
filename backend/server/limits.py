"""The protocol edge: a ``refine`` message becomes a :class:`RefineJob`, or a precise error.

Every field is read through the one request schema (``shared.request``), so types and bounds
are the same for every client and nothing unbounded reaches the queue or the worker. Checks
against this backend's configuration (image sizes, reference count, engines, presets) follow.
This runs on the network thread, before the job is queued: the user hears about a wrong mask at
once rather than after the jobs ahead of theirs, and the worker only ever sees valid input.

It also derives the transport limits (largest ZeroMQ message part, most frames) from the same
configured pixel limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...shared.frames import CHANNELS, MAX_SAMPLE_BYTES
from ...shared.protocol import ErrorCode, Message, Transfer
from ...shared.request import PARAM_FIELDS, REFINE_FIELDS, RequestError, check_fields, check_known
from ..config import Config
from ..engines import DEFAULT_ENGINE, ENGINES
from ..engines.base import RefineParams
from ..errors import BadInput
from ..pipeline.imaging import frame_to_array, mask_to_float
from ..pipeline.refine import RefineJob

#: Room for the msgpack header beside the largest pixel frame.
HEADER_ALLOWANCE = 1 << 20


def max_message_bytes(config: Config) -> int:
    """``ZMQ_MAXMSGSIZE``: the largest frame a valid request can carry (a ``max_pixels`` tile of
    4 float32 channels) plus header room; ZeroMQ drops a connection that sends more, before
    reading it into memory."""
    return config.max_pixels * max(CHANNELS) * MAX_SAMPLE_BYTES + HEADER_ALLOWANCE


def max_frames(config: Config) -> int:
    """Source, mask and the references this backend accepts."""
    return 2 + config.max_references


def parse_refine(msg: Message, config: Config, presets: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Validate a refine message; returns the fields of a :class:`~.queue.Job` (minus peer/id).

    ``presets``: each engine's presets as the server described them in ``hello`` (its engine
    instances, built once with their options), by name, the default first, each with its
    default variant count; an engine listed without presets (its libraries are missing) is not
    checked here and fails when it loads.
    """
    h = msg.header
    try:
        fields = check_fields(REFINE_FIELDS, h)
        raw_params = h.get("params")
        if raw_params is not None and not isinstance(raw_params, dict):
            raise RequestError("params must be a map")
        params = parse_params(raw_params or {}, fields["preset"])
    except RequestError as exc:
        raise BadInput(exc.message, exc.code) from None

    source = msg.frame("source")
    mask = msg.frame("mask")
    if source is None or mask is None:
        raise BadInput("a refine request needs a 'source' and a 'mask' frame", ErrorCode.FRAME_COUNT)
    unknown_roles = {f.desc.role for f in msg.frames} - {"source", "mask", "reference"}
    if unknown_roles:
        shown = ", ".join(sorted(r[:32] for r in unknown_roles))
        raise BadInput(f"unexpected frame role(s): {shown}", ErrorCode.BAD_FRAME)
    if len(msg.frames_with("source")) > 1 or len(msg.frames_with("mask")) > 1:
        raise BadInput("a refine request has one 'source' and one 'mask' frame", ErrorCode.FRAME_COUNT)
    refs = msg.frames_with("reference")
    if len(refs) > config.max_references:
        raise BadInput(f"at most {config.max_references} reference images are accepted", ErrorCode.BAD_PARAMS)
    for frame in [source, mask, *refs]:
        d = frame.desc
        if d.width * d.height > config.max_pixels or max(d.width, d.height) > config.max_side:
            raise BadInput(
                f"the {d.role} image is {d.width}x{d.height}, over this backend's limit "
                f"({config.max_pixels} pixels, {config.max_side} px per side)",
                ErrorCode.TOO_LARGE,
            )
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

    engine: str = fields["engine"] or config.engine or DEFAULT_ENGINE

    if engine not in ENGINES:
        raise BadInput(
            f"unknown engine {engine[:64]!r}; this backend has: {', '.join(ENGINES)}",
            ErrorCode.UNKNOWN_ENGINE,
        )
    preset = fields["preset"] or None
    known = presets.get(engine, {})
    if preset is not None and known and preset not in known:
        raise BadInput(
            f"engine {engine!r} has no preset {preset[:64]!r}; it has: {', '.join(known)}",
            ErrorCode.UNKNOWN_PRESET,
        )
    params.preset = preset
    if params.variants is None and known:  # resolved here, so every progress message can say N
        params.variants = known[preset] if preset is not None else next(iter(known.values()))

    source_arr = frame_to_array(source)
    mask_arr = frame_to_array(mask)
    references = [frame_to_array(r) for r in refs]
    for name, arr in (("source", source_arr), ("mask", mask_arr), *(("reference", r) for r in references)):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BadInput(f"the {name} image contains NaN or infinite values", ErrorCode.NOT_FINITE)
    if params.mode != "regenerate" and not mask_arr.any():
        raise BadInput("the selection is empty: select the region to refine first", ErrorCode.EMPTY_MASK)

    origin = fields["origin"]
    doc_size = fields["doc_size"] or (source.desc.width, source.desc.height)
    mask_float = mask_to_float(mask_arr)
    return {
        "work": RefineJob(
            source=source_arr,
            mask=mask_float,
            references=references,
            prompt=fields["prompt"],
            params=params,
            doc_size=doc_size,
            transfer=Transfer(fields["transfer"]),
        ),
        "engine": engine,
        "preset": preset,
        "origin": origin,
        "order": source.desc.order,
        "output_dtype": fields["output_dtype"] or source.desc.dtype,
        "nbytes": int(source_arr.nbytes + mask_float.nbytes + sum(r.nbytes for r in references)),
    }


def parse_params(raw: dict[str, Any], preset: str | None) -> RefineParams:
    """The ``params`` map through the schema; a key it does not define is refused."""
    check_known(PARAM_FIELDS, raw, "params")
    return RefineParams(preset=preset, **check_fields(PARAM_FIELDS, raw))
