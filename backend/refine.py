"""One refine job, engine-independent: plan focus regions, crop, run the engine, paste back.

This is the single code path shared by the server's worker, ``touchup eval`` and the
benchmarks, so that what is measured is what users get.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engines.base import Engine, RefineParams

ProgressFn = Callable[[str, int, int, "np.ndarray | None"], None]


@dataclass
class RefineJob:
    """Inputs of one job, already decoded from the wire.

    ``source``: ``HxWxC`` (C = 1, 3 or 4) in RGBA order, dtype uint8/uint16/float16/float32 --
    the context tile the client sent. ``mask``: ``HxW`` float32 in [0, 1], the selection for
    that tile. ``references``: images of any size and dtype, RGB(A) order. ``doc_size``: the
    whole document's (width, height), which scales the context margin.
    """

    source: np.ndarray
    mask: np.ndarray
    references: list[np.ndarray] = field(default_factory=list)
    prompt: str = ""
    params: RefineParams = field(default_factory=RefineParams)
    doc_size: tuple[int, int] | None = None


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


def run_refine(
    job: RefineJob,
    engine: Engine,
    on_progress: ProgressFn | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> RefineOutcome:
    """Refine every focus region of ``job`` with ``engine`` and paste the results back."""
    raise NotImplementedError
