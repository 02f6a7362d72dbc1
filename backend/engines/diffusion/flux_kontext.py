"""FLUX.1-Kontext-dev on the focus crop, optionally with a user LoRA (engine option ``lora_path``).

The crop goes in at its own size (``_auto_resize=False``, ``max_area`` = crop area): Kontext's
aspect buckets would otherwise resample it and undo the Focus-and-Refine upsampling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import RefineParams
from .engine import DiffusionEngine
from .presets import DiffusionPreset


class FluxKontextEngine(DiffusionEngine):
    name = "flux-kontext"
    family = "flux-kontext"
    description = "FLUX.1 Kontext [dev]: instruction-driven refinement of the crop, user LoRAs."
    packed_latents = True

    def pipeline_inputs(
        self,
        preset: DiffusionPreset,
        crop: np.ndarray,
        mask: np.ndarray,
        references: list[np.ndarray],
        prompt: str,
        params: RefineParams,
    ) -> dict[str, Any]:
        h, w = crop.shape[:2]
        inputs = super().pipeline_inputs(preset, crop, mask, references, prompt, params)
        return {**inputs, "max_area": h * w, "_auto_resize": False}
