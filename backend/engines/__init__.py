"""Engine registry: a table from engine name to the class that implements it.

Engines are imported lazily so that the backend starts (and answers ``hello``) without torch
when only the CPU engine is used. The table holds the product's engines only; benchmarks and
tests add their own with :func:`register_engine` (a backend process: the ``extra_engines``
setting), so a plugin is never offered a test engine.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Capabilities, Engine, EngineOutput, EngineRequest, Preset, RefineParams, WorkingSize

#: name -> "module:Class", the module relative to this package when it starts with a dot.
#: The first entry is the default.
ENGINES: dict[str, str] = {
    "classic": ".classic:ClassicEngine",
    "qwen-edit": ".diffusion.qwen_edit:QwenEditEngine",
    "flux-kontext": ".diffusion.flux_kontext:FluxKontextEngine",
    "flux-fill": ".diffusion.flux_fill:FluxFillEngine",
    "sdxl-inpaint": ".diffusion.sdxl_inpaint:SdxlInpaintEngine",
}

DEFAULT_ENGINE = "classic"


def register_engine(name: str, path: str) -> None:
    """Add an engine outside the product table: ``path`` is ``"package.module:Class"``.

    The class is imported at once, so a wrong path fails where it was configured rather than
    on the first job.
    """
    _load(path)
    ENGINES[name] = path


def _load(path: str) -> type[Engine]:
    module_name, _, class_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name, __name__), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"{path} is not an Engine class")
    return cls


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; KeyError when unknown."""
    return _load(ENGINES[name])


def create_engine(name: str, options: dict[str, Any] | None = None) -> Engine:
    return engine_class(name)(options)


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Capabilities",
    "Engine",
    "EngineOutput",
    "EngineRequest",
    "Preset",
    "RefineParams",
    "WorkingSize",
    "create_engine",
    "engine_class",
    "register_engine",
]
