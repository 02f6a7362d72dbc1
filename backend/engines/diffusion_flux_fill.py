"""FLUX.1-Fill-dev: inpaints exactly the selection (the mask is a model input, not a blend)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import RefineParams
from .diffusion_base import DiffusionEngine, binary_mask, to_pil
from .presets import DiffusionPreset


def inpaint_strength(preset: DiffusionPreset, params: RefineParams) -> float:
    """Regenerate starts from pure noise; refine keeps some of the original when strength < 1."""
    if params.mode == "regenerate":
        return 1.0
    return float(min(1.0, max(0.05, params.strength)))


class FluxFillEngine(DiffusionEngine):
    name = "flux-fill"
    family = "flux-fill"
    description = "FLUX.1 Fill [dev]: mask-native inpainting of the selection."
    quantize_components = ("transformer", "text_encoder_2")

    def pipeline_inputs(
        self,
        preset: DiffusionPreset,
        crop: np.ndarray,
        mask: np.ndarray,
        references: list[np.ndarray],
        prompt: str,
        params: RefineParams,
    ) -> dict[str, Any]:
        return {
            "image": to_pil(crop),
            "mask_image": to_pil(binary_mask(mask)),
            "prompt": prompt,
            "strength": inpaint_strength(preset, params),
        }

    def _unpack_latents(self, pipe: Any, latents: Any, height: int, width: int) -> Any:
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
