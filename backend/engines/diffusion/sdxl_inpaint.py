"""Stable Diffusion XL inpainting: the light option for 8-12 GB GPUs."""

from __future__ import annotations

from .engine import DiffusionEngine


class SdxlInpaintEngine(DiffusionEngine):
    name = "sdxl-inpaint"
    family = "sdxl-inpaint"
    description = "Stable Diffusion XL inpainting: mask-native, small GPUs."
