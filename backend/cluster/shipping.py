"""What travels between the front and a replica, and how it is made small.

Focus-and-Refine's crop, upsampling and paste-back run on the replica, next to the engine: the
upsampled float32 crops an engine works on are many times larger than the pixels they come
from (a 200x200 selection becomes ~1 MP of float32 RGB, 12 MB, for a 1 MP model), so shipping
those would be the most expensive choice. The front ships the tile *trimmed to the focus
regions* -- the pixels the job can read, in their own dtype -- and the replica ships back only
the bounding box of the new layer. Measured by ``touchup bench cluster`` (see docs/cluster.md).

Running the pipeline on the trimmed tile gives the same pixels as on the whole tile: the
regions are planned with the same margin (the document size is kept), and each region's crop
lies inside the trimmed tile, so clamping to it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from ...shared.geometry import Rect, scaled_margin
from ..engines.base import WorkingSize
from ..focus import plan_regions
from ..pasteback import new_layer
from ..refine import RefineJob, RefineOutcome


@dataclass
class ShippedJob:
    """A job as sent to a replica: the trimmed tile and where it lies in the client's tile."""

    work: RefineJob
    engine: str
    preset: str | None
    offset: tuple[int, int] = (0, 0)

    def nbytes(self) -> int:
        w = self.work
        return int(w.source.nbytes + w.mask.nbytes + sum(r.nbytes for r in w.references))


@dataclass
class ShippedOutcome:
    """A replica's result: the new layer and the composite, cut to the layer's bounding box.

    ``box`` is that bounding box in the coordinates of the tile the replica received.
    """

    layer: np.ndarray
    composite: np.ndarray
    box: Rect
    regions: list[Rect]
    meta: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def nbytes(self) -> int:
        return int(self.layer.nbytes + self.composite.nbytes)


def trim(work: RefineJob, working: WorkingSize) -> tuple[RefineJob, Rect]:
    """``work`` cut to the union of its focus regions, and that union in tile coordinates.

    Returns the job unchanged (and the whole tile) when it cannot be planned here -- an empty
    selection, odd shapes: the replica's pipeline then reports the problem as it would locally.
    """
    src, mask = work.source, work.mask
    h, w = src.shape[:2]
    whole = Rect(0, 0, w, h)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if src.ndim not in (2, 3) or mask.shape != (h, w):
        return work, whole
    doc_size = work.doc_size or (w, h)
    margin = scaled_margin(work.params.context, *doc_size)
    try:
        regions = plan_regions(mask, margin, working)
    except Exception:
        return work, whole
    if not regions:
        return work, whole
    box = regions[0].rect
    for region in regions[1:]:
        box = box.union(region.rect)
    if box == whole:
        return replace(work, doc_size=doc_size), whole
    ys, xs = slice(box.y, box.y1), slice(box.x, box.x1)
    trimmed = replace(
        work,
        source=np.ascontiguousarray(src[ys, xs]),
        mask=np.ascontiguousarray(work.mask[ys, xs]),
        doc_size=doc_size,
    )
    return trimmed, box


def pack_outcome(outcome: RefineOutcome) -> ShippedOutcome:
    """Cut a replica's outcome to the new layer's bounding box (what the front needs back)."""
    layer = outcome.layer
    bx, by, bw, bh = cv2.boundingRect((layer[:, :, 3] > 0).view(np.uint8))
    box = Rect(bx, by, bw, bh)
    ys, xs = slice(by, by + bh), slice(bx, bx + bw)
    return ShippedOutcome(
        layer=np.ascontiguousarray(layer[ys, xs]),
        composite=np.ascontiguousarray(outcome.composite[ys, xs]),
        box=box,
        regions=list(outcome.regions),
        meta=outcome.meta,
        timings=outcome.timings,
    )


def unpack_outcome(shipped: ShippedOutcome, source: np.ndarray, offset: tuple[int, int]) -> RefineOutcome:
    """The outcome for the client's whole tile: the shipped box placed back at ``offset``.

    Outside the box the layer is transparent (as the local pipeline leaves it) and the
    composite is the client's own pixels, copied -- so they are bit-identical by construction.
    """
    ox, oy = offset
    src = source if source.ndim == 3 else source[:, :, None]
    layer = new_layer(src)
    composite = src.copy()
    box = shipped.box.translate(ox, oy)
    if not box.empty:
        layer[box.y : box.y1, box.x : box.x1] = shipped.layer
        composite[box.y : box.y1, box.x : box.x1] = shipped.composite
    meta = dict(shipped.meta)
    if "regions" in meta:
        meta["regions"] = [_moved(info, ox, oy) for info in meta["regions"]]
    return RefineOutcome(
        layer=layer,
        composite=composite,
        regions=[r.translate(ox, oy) for r in shipped.regions],
        meta=meta,
        timings=dict(shipped.timings),
    )


def _moved(info: dict[str, Any], dx: int, dy: int) -> dict[str, Any]:
    out = dict(info)
    for key in ("rect", "selection"):
        if isinstance(out.get(key), list) and len(out[key]) == 4:
            x, y, w, h = out[key]
            out[key] = [x + dx, y + dy, w, h]
    return out
