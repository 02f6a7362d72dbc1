"""The ``identity`` engine: returns its input. For benchmarks (measuring everything but a model)
and for tests of transport, queueing and paste-back guarantees."""

from __future__ import annotations

import time

import numpy as np

from ..errors import Cancelled
from .base import Capabilities, Engine, EngineOutput, Preset, RefineParams, WorkingSize


class IdentityEngine(Engine):
    name = "identity"
    description = "Returns the crop unchanged (benchmarks and tests)."
    presets = {
        "default": Preset(
            "default",
            "no change",
            working=WorkingSize(target_area=1024 * 1024, multiple=16, min_side=64, max_side=2048),
            capabilities=Capabilities(
                reference=True, max_references=4, prompt=True, regenerate=True, steps=True
            ),
            defaults={"steps": 1},
        )
    }

    def refine(
        self,
        crop: np.ndarray,
        mask: np.ndarray,
        references: list[np.ndarray],
        prompt: str,
        params: RefineParams,
        on_progress,
        is_cancelled,
    ) -> EngineOutput:
        # ``delay`` (seconds per step, engine option) lets tests hold a job "running" to
        # exercise cancel, queueing and status-while-busy without a real model.
        steps = int(params.steps or 1)
        delay = float(self.options.get("delay", 0.0))
        for step in range(1, steps + 1):
            if is_cancelled():
                raise Cancelled()
            if delay:
                time.sleep(delay)
            on_progress("denoise", step, steps, None)
        return EngineOutput(crop.copy(), {"engine": "identity"})
