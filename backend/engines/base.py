"""The engine interface: the one seam between Focus-and-Refine and any model.

An engine sees only the focus crop, already upsampled to its working size, as float32 RGB in
[0, 1], plus the selection mask at the same size. It never sees the document, never pastes,
and never has to keep pixels outside the selection: paste-back guarantees that. This keeps the
CPU ``classic`` engine and the diffusion engines interchangeable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from functools import lru_cache
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np

from ..errors import Cancelled

#: ``on_progress(stage, step, total, preview)``; ``preview`` is a small float32 RGB image or None.
ProgressFn = Callable[[str, int, int, "np.ndarray | None"], None]
#: Returns True once the user has cancelled; engines check it between steps and raise Cancelled.
CancelFn = Callable[[], bool]


class SizeRule(str, Enum):
    """How the working size of a crop is chosen."""

    #: Area near ``target_area``, sides rounded to ``multiple`` and clamped to [min_side, max_side].
    CLAMPED = "clamped"
    #: The size the pipeline itself resizes every condition image to (area ``target_area``, sides
    #: rounded to ``multiple``, no clamp), chosen so that resizing it again changes nothing: the
    #: crop is then resampled once, and the output grid is the condition grid.
    PIPELINE_AREA = "pipeline_area"


def _area_rounded(area: int, ratio: float, multiple: int) -> tuple[int, int]:
    """The sides a pipeline computes for ``ratio`` (width/height) at ``area`` (Qwen's rule)."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return round(width / multiple) * multiple, round(height / multiple) * multiple


@lru_cache(maxsize=16)
def _area_fixed_points(area: int, multiple: int) -> tuple[tuple[int, int], ...]:
    """Every size the area rule maps to itself (at most a few hundred)."""
    points = []
    w = multiple
    while w * multiple <= area * 1.2 and w <= 64 * math.isqrt(area):
        h0 = round(area / w / multiple) * multiple
        for h in (h0 - multiple, h0, h0 + multiple):
            if h >= multiple and _area_rounded(area, w / h, multiple) == (w, h):
                points.append((w, h))
        w += multiple
    return tuple(sorted(set(points)))


def pipeline_area_size(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """The working size under :attr:`SizeRule.PIPELINE_AREA` for a ``width`` x ``height`` crop:
    the pipeline's fixed size whose aspect ratio is nearest the crop's."""
    points = _area_fixed_points(int(area), int(multiple))
    target = math.log(max(width, 1) / max(height, 1))
    return min(points, key=lambda p: (abs(math.log(p[0] / p[1]) - target), -p[0] * p[1]))


@dataclass(frozen=True)
class WorkingSize:
    """How big the focus crop should be when it reaches the engine.

    The crop is scaled (up, for small selections: that is the point of Focus-and-Refine) so that
    its area is about ``target_area``, each side a multiple of ``multiple`` and within
    ``[min_side, max_side]``.
    """

    target_area: int = 1024 * 1024
    multiple: int = 16
    min_side: int = 256
    max_side: int = 2048
    #: Never shrink a crop larger than the target (CPU engines work at native resolution).
    allow_downscale: bool = True
    rule: SizeRule = SizeRule.CLAMPED


@dataclass(frozen=True)
class Capabilities:
    """What an engine accepts; sent to plugins in ``hello`` so they can grey out options."""

    reference: bool = False
    max_references: int = 0
    prompt: bool = False
    soft_mask: bool = True
    regenerate: bool = False
    seed: bool = False
    steps: bool = False
    guidance: bool = False
    strength: bool = True


@dataclass
class RefineParams:
    """User parameters of one job, validated by the backend before an engine sees them."""

    strength: float = 1.0
    steps: int | None = None
    seed: int = 0
    guidance: float | None = None
    context: float = 64.0
    feather: float = 8.0
    mode: str = "refine"  # "refine" | "regenerate"
    color_correct: bool = True
    preset: str | None = None
    #: How many results with consecutive seeds (None: the preset's ``variants``).
    variants: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _no_progress(stage: str, step: int, total: int, preview: np.ndarray | None) -> None:
    """The default progress sink: engines may always call ``on_progress``."""


def _never_cancelled() -> bool:
    return False


@dataclass(frozen=True)
class EngineRequest:
    """One focus crop handed to an engine: everything it may read, as typed fields.

    ``crop`` is HxWx3 float32 RGB in [0, 1] at the engine's working size and ``mask`` the
    selection (HxW float32) at that size; ``references`` are float32 RGB images of any size.
    ``native_size`` is the crop's (width, height) in document pixels before it was resized, so an
    engine that works at the photo's own scale need not guess it back from resampled pixels.
    """

    crop: np.ndarray
    mask: np.ndarray
    references: Sequence[np.ndarray] = ()
    prompt: str = ""
    params: RefineParams = field(default_factory=RefineParams)
    native_size: tuple[int, int] | None = None
    on_progress: ProgressFn = _no_progress
    is_cancelled: CancelFn = _never_cancelled

    def with_seed(self, seed: int) -> EngineRequest:
        """This request for one seed (what :meth:`Engine.refine_variants` runs per variant)."""
        return replace(self, params=replace(self.params, seed=int(seed)))


@dataclass
class EngineOutput:
    """The refined crop (float32 RGB, same size as the input crop) and what the engine reports.

    ``strength_applied`` tells paste-back that the engine already used ``params.strength`` (as a
    denoising strength), so paste-back must not blend with it a second time. ``meta`` is
    informational only: it is reported to the user in the result and never read by the pipeline.
    """

    image: np.ndarray
    strength_applied: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """A named configuration of an engine (a table entry, not a code branch)."""

    name: str
    description: str = ""
    working: WorkingSize = field(default_factory=WorkingSize)
    capabilities: Capabilities = field(default_factory=Capabilities)
    defaults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: Results a request gets when it names no count (``params.variants``): one where a result
    #: is deterministic enough that more would only repeat it, several for generative models.
    variants: int = 1


#: The preset type an engine's table holds (a family may extend :class:`Preset`).
PresetT = TypeVar("PresetT", bound=Preset)


class Engine(ABC, Generic[PresetT]):
    """One model family. Subclasses set ``name``, fill ``presets`` and implement ``refine``.

    The backend calls ``load`` once (on the worker thread that owns the device), then
    ``refine`` for each region of each job, and ``unload`` when switching engines, idling out
    or shutting down.
    """

    name: ClassVar[str] = "engine"
    description: ClassVar[str] = ""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        #: Presets by name, the first one the default. They belong to the instance because an
        #: engine's options may change them (a diffusion engine's step count, a model folder);
        #: validation therefore asks an engine instance, never the class.
        self.presets: Mapping[str, PresetT] = self.make_presets()

    def make_presets(self) -> Mapping[str, PresetT]:
        """This engine's presets for its options. An engine without named presets has one
        (an engine that keeps this method keeps plain :class:`Preset` entries)."""
        return {"default": cast(PresetT, Preset("default"))}

    # -- description -------------------------------------------------------------------------
    def preset(self, name: str | None) -> PresetT:
        """The named preset (or the default). Raises KeyError for an unknown name."""
        if name is None:
            return next(iter(self.presets.values()))
        return self.presets[name]

    def describe(self) -> dict[str, Any]:
        """What ``hello`` says about this engine: presets, capabilities, working sizes, defaults."""
        presets = self.presets
        return {
            "name": self.name,
            "description": self.description,
            "default_preset": next(iter(presets)),
            "presets": [
                {
                    "name": p.name,
                    "description": p.description,
                    "accepts": asdict(p.capabilities),
                    "working": asdict(p.working),
                    "defaults": dict(p.defaults),
                    "variants": p.variants,
                }
                for p in presets.values()
            ],
            "available": self.available(),
        }

    def available(self) -> dict[str, Any]:
        """Whether this engine can run here (weights present, libraries importable)."""
        return {"ok": True}

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self, preset: str | None = None) -> None:
        """Make the engine ready (load weights to the device). Idempotent."""

    @abstractmethod
    def refine(self, request: EngineRequest) -> EngineOutput:
        """Refine ``request.crop`` where ``request.mask`` is non-zero.

        Returns an image of the crop's size; pixels outside the mask may be anything (paste-back
        restores them) but should stay close to the input there, because paste-back estimates
        colour drift from them. Long work calls ``request.is_cancelled()`` often and raises
        ``Cancelled`` once it turns true.
        """

    def refine_variants(self, request: EngineRequest, seeds: Sequence[int]) -> Iterator[EngineOutput]:
        """Refine the same crop once per seed, yielding each output, in ``seeds`` order, as soon
        as it is done (the pipeline pastes it back and sends it before the next one is ready).

        ``request.params.seed`` is ignored: output ``i`` must equal ``refine`` of the request
        with seed ``seeds[i]``, so a variant can be reproduced alone. This default runs
        :meth:`refine` per seed; an engine that can share work between seeds (encode the
        prompt and the condition images once, denoise several seeds in one batch) overrides it.
        """
        for seed in seeds:
            if request.is_cancelled():
                raise Cancelled()
            # Each run gets its own copy of the crop: an engine may work in place, and the next
            # seed (and paste-back's drift estimate) must see the crop as it was.
            yield self.refine(replace(request.with_seed(seed), crop=request.crop.copy()))

    def unload(self) -> None:
        """Free the device memory held by the engine. Idempotent."""

    def status(self) -> dict[str, Any]:
        """Engine-specific state for ``status`` (loaded preset, memory policy...)."""
        return {}
