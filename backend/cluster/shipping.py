"""What travels between the front and a replica, and how it is kept small.

Focus-and-Refine's crop, upsampling and paste-back run on the replica, next to the engine: the
upsampled float32 crops an engine works on are many times larger than the pixels they come
from (a 64x64 selection with its context becomes ~0.6 MP of float32 for the classic engine,
~1 MP for a diffusion model: 7-12 MB instead of ~0.1 MB), so shipping those would be the most
expensive choice. The front ships, per focus region, the tile cut to that region -- the only
pixels the engine can read, in their own dtype -- and the replica ships back only the
bounding box of each new layer part. ``touchup bench cluster`` prints the byte counts.

Running the pipeline on each region's cut gives the same pixels as on the whole tile: the
document size (which scales the margin) is kept, each region's islands and their grown boxes
lie inside its cut, so planning there finds the same region. Selections of very many islands
(where planning groups islands approximately) are shipped as one cut around all regions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from ...shared.geometry import Rect, scaled_margin
from ..engines.base import WorkingSize
from ..pipeline.focus import _PREGROUP_ISLANDS, find_islands, plan_regions
from ..pipeline.pasteback import new_layer
from ..pipeline.refine import ProgressFn, RefineJob, RefineOutcome


@dataclass
class ShippedPart:
    """A cut of the client's tile (a job of its own) and where it lies in that tile."""

    work: RefineJob
    offset: tuple[int, int] = (0, 0)


@dataclass
class ShippedJob:
    """A job as sent to a replica: one part per focus region (or one for the whole tile)."""

    parts: list[ShippedPart]
    engine: str
    preset: str | None

    def nbytes(self) -> int:
        return sum(
            int(p.work.source.nbytes + p.work.mask.nbytes + sum(r.nbytes for r in p.work.references))
            for p in self.parts
        )


@dataclass
class ShippedOutcome:
    """A replica's result per part: the new layer and the composite cut to the layer's box.

    ``box`` is that bounding box in the part's coordinates.
    """

    layer: np.ndarray
    composite: np.ndarray
    box: Rect
    regions: list[Rect]
    meta: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def nbytes(self) -> int:
        return int(self.layer.nbytes + self.composite.nbytes)


def cut(work: RefineJob, working: WorkingSize) -> list[ShippedPart]:
    """``work`` as parts: the tile cut to each focus region (see the module's docstring).

    Returns the whole job as one part when it cannot be planned here -- an empty selection,
    odd shapes: the replica's pipeline then reports the problem exactly as it would locally.
    """
    src, mask = work.source, work.mask
    h, w = src.shape[:2]
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if src.ndim not in (2, 3) or mask.shape != (h, w):
        return [ShippedPart(work)]
    doc_size = work.doc_size or (w, h)
    margin = scaled_margin(work.params.context, *doc_size)
    try:
        regions = plan_regions(mask, margin, working)
    except Exception:
        return [ShippedPart(work)]
    if not regions:
        return [ShippedPart(work)]
    rects = [r.rect for r in regions]
    if len(rects) > 1 and len(find_islands(mask)) > _PREGROUP_ISLANDS:
        union = rects[0]
        for r in rects[1:]:
            union = union.union(r)
        rects = [union]
    parts = []
    for rect in rects:
        ys, xs = slice(rect.y, rect.y1), slice(rect.x, rect.x1)
        part = replace(
            work,
            source=np.ascontiguousarray(src[ys, xs]),
            mask=np.ascontiguousarray(work.mask[ys, xs]),
            doc_size=doc_size,
        )
        parts.append(ShippedPart(part, (rect.x, rect.y)))
    return parts


def part_progress(on_progress: ProgressFn, k: int, n: int) -> ProgressFn:
    """Progress of part ``k`` of ``n`` named as the whole job's pipeline names its regions."""
    if n == 1:
        return on_progress

    def report(stage: str, step: int, total: int, preview: np.ndarray | None = None) -> None:

        if stage == "refine":
            on_progress(f"refine {k}/{n}", step, total, preview)
        elif stage in ("focus", "paste"):
            on_progress(stage, k, n, preview)
        else:
            on_progress(stage, step, total, preview)

    return report


def run_parts(
    parts: list[ShippedPart], run: Callable[[RefineJob, ProgressFn], RefineOutcome], on_progress: ProgressFn
) -> list[ShippedOutcome]:
    """Run each part (on the replica) and pack its outcome."""
    return [
        pack_outcome(run(p.work, part_progress(on_progress, k, len(parts)))) for k, p in enumerate(parts, 1)
    ]


def pack_outcome(outcome: RefineOutcome) -> ShippedOutcome:
    """Cut a part's outcome to the new layer's bounding box (what the front needs back)."""
    layer = outcome.layer
    bx, by, bw, bh = cv2.boundingRect((layer[:, :, 3] > 0).view(np.uint8))
    ys, xs = slice(by, by + bh), slice(bx, bx + bw)
    return ShippedOutcome(
        layer=np.ascontiguousarray(layer[ys, xs]),
        composite=np.ascontiguousarray(outcome.composite[ys, xs]),
        box=Rect(bx, by, bw, bh),
        regions=list(outcome.regions),
        meta=outcome.meta,
        timings=outcome.timings,
    )


def unpack_outcome(
    shipped: list[ShippedOutcome], parts: list[ShippedPart], source: np.ndarray
) -> RefineOutcome:
    """The outcome for the client's whole tile: each part's box placed back where it came from.

    Outside the boxes the layer is transparent (as the local pipeline leaves it) and the
    composite is the client's own pixels, copied -- bit-identical by construction.
    """
    src = source if source.ndim == 3 else source[:, :, None]
    layer = new_layer(src)
    composite = src.copy()
    regions: list[Rect] = []
    region_meta: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    meta: dict[str, Any] = {}
    for out, part in zip(shipped, parts, strict=True):
        ox, oy = part.offset
        box = out.box.translate(ox, oy)
        if not box.empty:
            layer[box.y : box.y1, box.x : box.x1] = out.layer
            composite[box.y : box.y1, box.x : box.x1] = out.composite
        regions += [r.translate(ox, oy) for r in out.regions]
        region_meta += [_moved(info, ox, oy) for info in out.meta.get("regions", [])]
        for key, seconds in out.timings.items():
            timings[key] = timings.get(key, 0.0) + seconds
        meta.update(out.meta)
    if len(shipped) > 1:
        meta["regions"] = region_meta
        meta["scales"] = [r["scale"] for r in region_meta]
        meta["color_correct"] = any(r.get("color_correct") for r in region_meta)
    elif region_meta:
        meta["regions"] = region_meta
    return RefineOutcome(layer=layer, composite=composite, regions=regions, meta=meta, timings=timings)


def _moved(info: dict[str, Any], dx: int, dy: int) -> dict[str, Any]:
    out = dict(info)
    for key in ("rect", "selection"):
        if isinstance(out.get(key), list) and len(out[key]) == 4:
            x, y, w, h = out[key]
            out[key] = [x + dx, y + dy, w, h]
    return out
