"""Engine registry: a table from engine name to the class that implements it.

Engines are imported lazily so that the backend starts (and answers ``hello``) without torch
when only the CPU engine is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Capabilities, Engine, EngineOutput, Preset, RefineParams, WorkingSize

#: name -> "module:Class" (module relative to this package). The first entry is the default.
ENGINES: dict[str, str] = {
    "classic": "classic:ClassicEngine",
    "identity": "identity:IdentityEngine",
    "qwen-edit": "diffusion.qwen_edit:QwenEditEngine",
    "flux-kontext": "diffusion.flux_kontext:FluxKontextEngine",
    "flux-fill": "diffusion.flux_fill:FluxFillEngine",
    "sdxl-inpaint": "diffusion.sdxl_inpaint:SdxlInpaintEngine",
}

DEFAULT_ENGINE = "classic"


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; KeyError when unknown."""
    module_name, _, class_name = ENGINES[name].partition(":")
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, class_name)


def create_engine(name: str, options: dict[str, Any] | None = None) -> Engine:
    return engine_class(name)(options)


__all__ = [
    "ENGINES",
    "DEFAULT_ENGINE",
    "Capabilities",
    "Engine",
    "EngineOutput",
    "Preset",
    "RefineParams",
    "WorkingSize",
    "create_engine",
    "engine_class",
]
