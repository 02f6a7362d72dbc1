"""The ``identity`` engine: returns its input. For benchmarks (measuring everything but a model)
and for tests of transport, queueing and paste-back guarantees.

With its ``record`` option (a file path) it also reports what it received -- per-channel
statistics of the crop and the references -- as one JSON line per refine in that file and in its
result's ``meta["received"]``: that is how tests see, from outside the backend process, that an
editor's linear pixels reached the engine sRGB-encoded. Without it (benchmarks) it computes
nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

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
        meta: dict[str, Any] = {"engine": "identity"}
        record = self.options.get("record")
        if record:
            meta["received"] = {
                **_stats(crop),
                "mask_mean": float(mask.mean()),
                "references": [_stats(r) for r in references],
            }
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(meta["received"]) + "\n")
        return EngineOutput(crop.copy(), meta)


def _stats(image: np.ndarray) -> dict[str, Any]:
    """Size and per-channel mean, minimum and maximum of an ``HxWxC`` float image."""
    flat = image.reshape(-1, image.shape[2])
    return {
        "size": [int(image.shape[1]), int(image.shape[0])],
        "mean": flat.mean(axis=0, dtype=np.float64).tolist(),
        "min": flat.min(axis=0).astype(float).tolist(),
        "max": flat.max(axis=0).astype(float).tolist(),
    }
