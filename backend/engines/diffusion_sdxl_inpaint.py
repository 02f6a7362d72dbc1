"""Stable Diffusion XL inpainting: the light option for 8-12 GB GPUs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import RefineParams
from .diffusion_base import DiffusionEngine, binary_mask, to_pil
from .diffusion_flux_fill import inpaint_strength
from .presets import DiffusionPreset


class SdxlInpaintEngine(DiffusionEngine):
    name = "sdxl-inpaint"
    family = "sdxl-inpaint"
    description = "Stable Diffusion XL inpainting: mask-native, small GPUs."
    denoiser_attr = "unet"
    quantize_components = ("unet",)

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
