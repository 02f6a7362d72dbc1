"""FLUX.1-Fill-dev: inpaints exactly the selection (the mask is a model input, not a blend)."""

from __future__ import annotations

from .engine import DiffusionEngine


class FluxFillEngine(DiffusionEngine):
    name = "flux-fill"
    family = "flux-fill"
    description = "FLUX.1 Fill [dev]: mask-native inpainting of the selection."
    packed_latents = True
