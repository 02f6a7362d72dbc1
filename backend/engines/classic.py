"""The ``classic`` engine: the embedded default. CPU only, no model weights, deterministic.

With a reference, it puts the reference's real detail into the region: register the reference
onto the crop (SIFT + RANSAC, refined by ECC; see ``classic_register``), match its tone and
colour to the photo on the unselected context, and use it inside the selection. It must do no
harm, so a reference that does not register convincingly is rejected (the reason goes into the
result's metadata) and the engine falls back to what it does without one: conservative
reference-free restoration (non-local-means deblocking/denoising plus edge-aware sharpening).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..errors import Cancelled
from ..pipeline.imaging import rgb_float
from .base import Capabilities, Engine, EngineOutput, EngineRequest, Preset, WorkingSize
from .classic_register import Registrar, Registration, local_scale, warp_to_crop
from .classic_restore import apply_tone, fit_tone, restore

MAX_REFERENCES = 4
#: Fewer context pixels than this and tone is fitted on the region's low frequencies instead.
MIN_TONE_PIXELS = 400


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

        def advance(stage: str) -> None:
            nonlocal step
            if is_cancelled():
                raise Cancelled()
            step += 1
            on_progress(stage, step, total, None)

        meta: dict[str, Any] = {"engine": "classic"}
        region = mask > 0
        if not region.any():
            meta["reference"] = "none"
            return EngineOutput(crop.copy(), strength_applied=True, meta=meta)

        best: tuple[Registration, np.ndarray, int] | None = None
        if refs:
            registrar = Registrar(crop, mask)
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
            result, covered = self._transfer(crop, mask, ref, reg)
            meta["reference_index"] = index
            meta.update(transform=reg.model, inliers=reg.inliers, coverage=round(reg.metrics["coverage"], 4))
            advance("transfer")
            uncovered = bool((covered[region] < 0.999).any())
            if uncovered:
                # Parts of the selection the reference does not show: restore those instead.
                restored = restore(crop, region, native=request.native_size)
                result = covered[:, :, None] * result + (1 - covered[:, :, None]) * restored
            meta["restoration"] = "uncovered parts only" if uncovered else "none"
        else:
            result = restore(crop, region, native=request.native_size)
            meta["restoration"] = "reference-free"
            advance("restore")

        strength = float(np.clip(params.strength if params.strength is not None else 1.0, 0.0, 1.0))
        out = crop.copy()
        out[region] = crop[region] + strength * (result[region] - crop[region])
        advance("done")
        # Strength is applied here, inside the region, so paste-back must not apply it again.
        return EngineOutput(np.clip(out, 0.0, 1.0).astype(np.float32), strength_applied=True, meta=meta)

    @staticmethod
    def _transfer(
        crop: np.ndarray, mask: np.ndarray, ref: np.ndarray, reg: Registration
    ) -> tuple[np.ndarray, np.ndarray]:
        """The reference warped onto the crop and tone-matched to it; and where it is valid."""
        h = reg.homography
        assert h is not None
        size = (crop.shape[1], crop.shape[0])
        cx, cy = size[0] / 2, size[1] / 2
        local = local_scale(h, cx, cy)
        if local > 1.5:
            # The reference is finer than the crop grid: shrink it first (area filter) so the
            # warp does not alias.
            f = 1.0 / local
            small = cv2.resize(ref, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            sx = small.shape[1] / ref.shape[1]
            sy = small.shape[0] / ref.shape[0]
            h = np.diag([sx, sy, 1.0]) @ h
            ref = small
        warped, valid = warp_to_crop(ref, h, size, cv2.INTER_CUBIC)
        warped = np.clip(warped, 0.0, 1.0)
        covered = np.clip((valid - 0.99) / 0.01, 0.0, 1.0).astype(np.float32)
        # Fully covered pixels. Not ``covered >= 1``: float rounding leaves it a hair below 1.
        full = valid >= 0.999
        # Tone: fit on context the user did not select, a few pixels away from the selection.
        near = cv2.dilate((mask > 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        context = ~near & full
        if context.sum() >= MIN_TONE_PIXELS:
            curves = fit_tone(warped, crop, context)
        else:
            sigma = max(2.0, min(size) / 40.0)
            curves = fit_tone(
                cv2.GaussianBlur(warped, (0, 0), sigma), cv2.GaussianBlur(crop, (0, 0), sigma), full
            )
        return apply_tone(warped, curves), covered
