"""A deliberately slow engine for tests and benchmarks of the pool (never offered to users).

Its time is spent sleeping, not computing, so throughput measured with it shows what the
pool's scheduling achieves even on a machine with few cores. Loading a preset costs time and is
counted, so a test can tell whether a job caused a reload. It changes the pixels it is given
(inverts the selection), so a result that never went through it is noticed.

It is not in the engine table: tests and ``touchup bench cluster`` register it with
:func:`register_slow_engine` (front) and the ``extra_engines`` option of the pool (replicas).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..engines import ENGINES
from ..engines.base import Capabilities, Engine, EngineOutput, Preset, RefineParams, WorkingSize
from ..errors import Cancelled

#: The engine's name and its entry for the engine table (module path relative to ``engines``).
SLOW_ENGINE = "slow-test"
SLOW_ENGINE_ENTRY = ".cluster.slow_engine:SlowEngine"

_WORKING = WorkingSize(target_area=64 * 64, multiple=8, min_side=32, max_side=256, allow_downscale=True)
_CAPS = Capabilities(steps=True)


def register_slow_engine() -> dict[str, str]:
    """Add the slow engine to this process's engine table; returns the entry for the replicas."""
    ENGINES[SLOW_ENGINE] = SLOW_ENGINE_ENTRY
    return {SLOW_ENGINE: SLOW_ENGINE_ENTRY}


class SlowEngine(Engine):
    """Sleeps ``step_s`` per step (option, default 0.2 s) and ``load_s`` per preset load."""

    name = SLOW_ENGINE
    description = "Sleep-bound engine for pool tests and benchmarks."
    presets = {
        "a": Preset("a", "slow preset a", working=_WORKING, capabilities=_CAPS, defaults={"steps": 4}),
        "b": Preset("b", "slow preset b", working=_WORKING, capabilities=_CAPS, defaults={"steps": 4}),
    }

    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.loaded: str | None = None
        self.loads = 0  # how many times a preset was loaded by this engine object

    def load(self, preset: str | None = None) -> None:
        name = self.preset(preset).name
        if self.loaded == name:
            return
        time.sleep(float(self.options.get("load_s", 0.3)))
        self.loaded = name
        self.loads += 1

    def unload(self) -> None:
        self.loaded = None

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
        steps = int(params.steps or self.preset(params.preset).defaults["steps"])
        step_s = float(self.options.get("step_s", 0.2))
        for step in range(1, steps + 1):
            if is_cancelled():
                raise Cancelled()
            time.sleep(step_s)
            on_progress("denoise", step, steps, None)
        # Invert inside the selection only: outside pixels stay, as paste-back's drift estimate
        # expects of an engine.
        out = np.where(mask[:, :, None] > 0, 1.0 - crop, crop).astype(np.float32)
        return EngineOutput(
            out,
            {"preset": self.loaded, "loads": self.loads, "pid": os.getpid(), "steps": steps},
        )

    def status(self) -> dict:
        return {"preset": self.loaded, "loads": self.loads}
