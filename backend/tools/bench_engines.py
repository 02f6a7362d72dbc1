"""Engines for benchmarks and tests, never offered to users.

They are not in the product's engine table: a benchmark or a test registers them explicitly
(in-process with ``register_engine``, or for a backend process through the ``extra_engines``
setting), so ``hello`` never lists them to a plugin.
"""

from __future__ import annotations

import time

from ..engines.base import Capabilities, Engine, EngineOutput, EngineRequest, Preset, WorkingSize
from ..errors import Cancelled

#: Import paths for ``extra_engines`` / ``register_engine``.
IDENTITY = "touchup.backend.tools.bench_engines:IdentityEngine"

IDENTITY_PRESET = Preset(
    "default",
    "no change",
    working=WorkingSize(target_area=1024 * 1024, multiple=16, min_side=64, max_side=2048),
    capabilities=Capabilities(reference=True, max_references=4, prompt=True, regenerate=True, steps=True),
    defaults={"steps": 1},
)


class IdentityEngine(Engine):
    """Returns the crop unchanged: measures everything but a model, and lets tests check the
    transport, queueing and paste-back guarantees on known pixels."""

    name = "identity"
    description = "Returns the crop unchanged (benchmarks and tests)."

    def make_presets(self) -> dict[str, Preset]:
        return {IDENTITY_PRESET.name: IDENTITY_PRESET}

    def refine(self, request: EngineRequest) -> EngineOutput:
        # ``delay`` (seconds per step, engine option) lets tests hold a job "running" to
        # exercise cancel, queueing and status-while-busy without a real model.
        steps = int(request.params.steps or 1)
        delay = float(self.options.get("delay", 0.0))
        for step in range(1, steps + 1):
            if request.is_cancelled():
                raise Cancelled()
            if delay:
                time.sleep(delay)
            request.on_progress("denoise", step, steps, None)
        return EngineOutput(request.crop.copy(), meta={"engine": "identity"})
