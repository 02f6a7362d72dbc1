"""The ``classic`` engine: the embedded default. CPU only, no model weights, deterministic.

With a reference, it puts the reference's real detail into the region: register the reference
onto the crop (SIFT + RANSAC, refined by ECC; see :mod:`.registration`), match its tone and
colour to the photo on the unselected context (:mod:`.transfer`), and use it inside the
selection. It must do no harm, so a reference that does not register convincingly is rejected
(the reason goes into the result's metadata) and the engine falls back to what it does without
one: reference-free restoration of the damage it can measure (:mod:`.restore`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...pipeline.imaging import rgb_float
from ..base import Capabilities, Engine, EngineOutput, EngineRequest, Preset, WorkingSize
from .cancel import checkpoint
from .registration import Registrar, Registration
from .restore import restore
from .transfer import transfer

MAX_REFERENCES = 4


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """float32 RGB in [0, 1] from a grey, RGB or RGBA image (callers other than the job
    pipeline may pass any of them)."""
    return np.clip(rgb_float(np.asarray(img)), 0.0, 1.0)


#: ~0.6 MP: small selections get upsampled enough for sub-pixel registration while the CPU work
#: stays around a second. Large crops keep their native resolution: shrinking and re-enlarging
#: them would itself lose the detail we restore.
DEFAULT_PRESET = Preset(
    "default",
    "reference transfer or conservative restoration",
    working=WorkingSize(target_area=768 * 768, multiple=8, min_side=64, max_side=4096, allow_downscale=False),
    capabilities=Capabilities(
        reference=True, max_references=MAX_REFERENCES, prompt=False, soft_mask=True, regenerate=False
    ),
    defaults={"strength": 1.0},
)


class ClassicEngine(Engine):
    name = "classic"
    description = "CPU, no weights: registers a reference into the region, or restores detail without one."

    def make_presets(self) -> dict[str, Preset]:
        return {DEFAULT_PRESET.name: DEFAULT_PRESET}

    def refine(self, request: EngineRequest) -> EngineOutput:
        params, on_progress, is_cancelled = request.params, request.on_progress, request.is_cancelled
        crop = _as_rgb(request.crop)
        mask = np.asarray(request.mask, dtype=np.float32)
        if mask.ndim == 3:
            mask = mask[:, :, 0]
        refs = [_as_rgb(r) for r in request.references[:MAX_REFERENCES] if r is not None and r.size]
        total = max(len(refs), 1) + 2  # register each (or analyse), transfer/restore, done
        step = 0

        check = checkpoint(is_cancelled)

        def advance(stage: str) -> None:
            nonlocal step
            check()
            step += 1
            on_progress(stage, step, total, None)

        meta: dict[str, Any] = {"engine": "classic"}
        region = mask > 0
        if not region.any():
            meta["reference"] = "none"
            return EngineOutput(crop.copy(), strength_applied=True, meta=meta)

        best: tuple[Registration, np.ndarray, int] | None = None
        if refs:
            registrar = Registrar(crop, mask, check)
            summaries = []
            for index, ref in enumerate(refs):
                reg = registrar.register(ref)
                summaries.append(reg.summary())
                if reg.ok and (best is None or reg.score > best[0].score):
                    best = (reg, ref, index)
                advance("register")
            meta["references"] = summaries
            meta["reference"] = (
                "used" if best else f"rejected: {summaries[0]['status'].removeprefix('rejected: ')}"
            )
            if best is None and len(summaries) > 1:
                meta["reference"] = "rejected: " + "; ".join(s["status"] for s in summaries)
        else:
            meta["reference"] = "none"
            advance("analyse")

        if best is not None:
            reg, ref, index = best
            result, covered = transfer(crop, mask, ref, reg)
            meta["reference_index"] = index
            meta.update(transform=reg.model, inliers=reg.inliers, coverage=round(reg.metrics["coverage"], 4))
            advance("transfer")
            uncovered = bool((covered[region] < 0.999).any())
            if uncovered:
                # Parts of the selection the reference does not show: restore those instead.
                restored = restore(crop, region, request.native_size, check).image
                result = covered[:, :, None] * result + (1 - covered[:, :, None]) * restored
            meta["restoration"] = "uncovered parts only" if uncovered else "none"
        else:
            done = restore(crop, region, request.native_size, check)
            result = done.image
            meta["restoration"] = "reference-free"
            meta["restoration_steps"] = done.steps or ["none: no damage measured"]
            meta["damage"] = done.measured
            advance("restore")

        strength = float(np.clip(params.strength if params.strength is not None else 1.0, 0.0, 1.0))
        out = crop.copy()
        out[region] = crop[region] + strength * (result[region] - crop[region])
        advance("done")
        # Strength is applied here, inside the region, so paste-back must not apply it again.
        return EngineOutput(np.clip(out, 0.0, 1.0).astype(np.float32), strength_applied=True, meta=meta)
