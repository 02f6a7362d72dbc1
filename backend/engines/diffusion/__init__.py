"""The diffusion engines: one engine per pipeline family, sharing the preset table, the memory
planner, loading and the denoising run.

``presets`` (the table, as data) and ``memory`` (the planner) import no torch; the engines
import torch and diffusers only when a model loads.
"""
