"""FLUX.1-Kontext-dev on the focus crop, optionally with a user LoRA (engine option ``lora_path``).

The crop goes in at its own size (``_auto_resize=False``, ``max_area`` = crop area): Kontext's
aspect buckets would otherwise resample it and undo the Focus-and-Refine upsampling.
"""

from __future__ import annotations

from typing import Any

from ..base import EngineRequest
from .engine import DiffusionEngine
from .presets import DiffusionPreset


class FluxKontextEngine(DiffusionEngine):
    name = "flux-kontext"
    family = "flux-kontext"
    description = "FLUX.1 Kontext [dev]: instruction-driven refinement of the crop, user LoRAs."
    packed_latents = True

    def pipeline_inputs(self, preset: DiffusionPreset, request: EngineRequest, prompt: str) -> dict[str, Any]:
        h, w = request.crop.shape[:2]
        inputs = super().pipeline_inputs(preset, request, prompt)
        return {**inputs, "max_area": h * w, "_auto_resize": False}
