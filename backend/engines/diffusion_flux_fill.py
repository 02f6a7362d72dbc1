"""FLUX.1-Fill-dev: inpaints exactly the selection (the mask is a model input, not a blend)."""

from __future__ import annotations

from .diffusion_base import DiffusionEngine


class FluxFillEngine(DiffusionEngine):
    name = "flux-fill"
    family = "flux-fill"
    description = "FLUX.1 Fill [dev]: mask-native inpainting of the selection."
    quantize_components = ("transformer", "text_encoder_2")
    inpainting = True
    packed_latents = True
