"""Stable Diffusion XL inpainting: the light option for 8-12 GB GPUs."""

from __future__ import annotations

from .diffusion_base import DiffusionEngine


class SdxlInpaintEngine(DiffusionEngine):
    name = "sdxl-inpaint"
    family = "sdxl-inpaint"
    description = "Stable Diffusion XL inpainting: mask-native, small GPUs."
    denoiser_attr = "unet"
    quantize_components = ("unet",)
    inpainting = True
