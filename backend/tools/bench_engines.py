"""Engines for benchmarks and tests, never offered to users.

They are not in the product's engine table: a benchmark or a test registers them explicitly
(in-process with ``register_engine``, or for a backend process through the ``extra_engines``
setting), so ``hello`` never lists them to a plugin.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from ..engines import register_engine
from ..engines.base import Capabilities, Engine, EngineOutput, EngineRequest, Preset, WorkingSize
from ..errors import Cancelled

#: Import paths for ``extra_engines`` / ``register_engine``.
IDENTITY = "touchup.backend.tools.bench_engines:IdentityEngine"
SEEDED = "touchup.backend.tools.bench_engines:SeededEngine"
SLOW_ENGINE = "slow-test"
SLOW = "touchup.backend.tools.bench_engines:SlowEngine"

IDENTITY_PRESET = Preset(
    "default",
    "no change",
    working=WorkingSize(target_area=1024 * 1024, multiple=16, min_side=64, max_side=2048),
    capabilities=Capabilities(reference=True, max_references=4, prompt=True, regenerate=True, steps=True),
    defaults={"steps": 1},
)


class IdentityEngine(Engine):
    """Returns the crop unchanged: measures everything but a model, and lets tests check the
    transport, queueing and paste-back guarantees on known pixels.

    With its ``record`` option (a file path) it also reports what it received -- per-channel
    statistics of the crop and the references -- as one JSON line per refine in that file and in
    its result's ``meta["received"]``: that is how tests see, from outside the backend process,
    that an editor's linear pixels reached the engine sRGB-encoded.
    """

    name = "identity"
    description = "Returns the crop unchanged (benchmarks and tests)."

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.loaded = False

    def make_presets(self) -> dict[str, Preset]:
        return {IDENTITY_PRESET.name: IDENTITY_PRESET}

    def load(self, preset: str | None = None) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False

    def status(self) -> dict[str, Any]:
        return {"loaded": self.loaded}

    def refine(self, request: EngineRequest) -> EngineOutput:
        # Options: ``delay`` (seconds per step) holds a job "running" to exercise cancel,
        # queueing and status-while-busy without a real model; ``previews`` sends the crop as
        # a preview with every step but the last, as a diffusion engine does while denoising.
        steps = int(request.params.steps or 1)
        delay = float(self.options.get("delay", 0.0))
        previews = bool(self.options.get("previews", False))
        for step in range(1, steps + 1):
            if request.is_cancelled():
                raise Cancelled()
            if delay:
                time.sleep(delay)
            preview = request.crop if previews and step < steps else None
            request.on_progress("denoise", step, steps, preview)
        meta: dict[str, Any] = {"engine": "identity"}
        record = self.options.get("record")
        if record:  # benchmarks leave it unset and pay nothing for it
            meta["received"] = {
                **_stats(request.crop),
                "mask_mean": float(request.mask.mean()),
                "references": [_stats(r) for r in request.references],
            }
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(meta["received"]) + "\n")
        return EngineOutput(request.crop.copy(), meta=meta)


def _stats(image: np.ndarray) -> dict[str, Any]:
    """Size and per-channel mean, minimum and maximum of an ``HxWxC`` float image."""
    flat = image.reshape(-1, image.shape[2])
    return {
        "size": [int(image.shape[1]), int(image.shape[0])],
        "mean": flat.mean(axis=0, dtype=np.float64).tolist(),
        "min": flat.min(axis=0).astype(float).tolist(),
        "max": flat.max(axis=0).astype(float).tolist(),
    }


SEEDED_PRESET = Preset(
    "default",
    "seed-dependent colour shift of the selection",
    working=WorkingSize(target_area=256 * 256, multiple=8, min_side=32, max_side=1024),
    capabilities=Capabilities(
        reference=True, max_references=4, prompt=True, regenerate=True, seed=True, steps=True
    ),
    defaults={"steps": 6},
    variants=1,  # like the CPU engine: a test asks for its count explicitly
)


def seed_shift(seed: int) -> np.ndarray:
    """The RGB offset :class:`SeededEngine` adds for ``seed``: each channel 0.12 to 0.3 in size,
    its sign drawn too, so any two seeds differ visibly (in 8 bits, by far more than rounding)."""
    rng = np.random.default_rng(int(seed))
    return (rng.uniform(0.12, 0.3, 3) * rng.choice([-1.0, 1.0], 3)).astype(np.float32)


class SeededEngine(Engine):
    """Shifts the selected pixels' colour by an offset drawn from the seed: the same seed gives
    the same pixels, different seeds visibly different ones, like a generative model but in
    milliseconds. That lets the editors' tests check variants, previews and determinism.

    It reports ``steps`` progress steps (preset default 6), each with a preview (the crop shifted
    by the step's share of the offset, as a denoising preview converges), and sleeps ``step_s``
    seconds per step (engine option, default 0.05) so a test can watch progress arrive.
    Pixels outside the selection are returned unchanged, as paste-back's drift estimate expects.
    """

    name = "seeded"
    description = "Seed-dependent colour shift of the selection (tests)."

    def make_presets(self) -> dict[str, Preset]:
        return {SEEDED_PRESET.name: SEEDED_PRESET}

    def refine(self, request: EngineRequest) -> EngineOutput:
        params = request.params
        steps = int(params.steps or SEEDED_PRESET.defaults["steps"])
        step_s = float(self.options.get("step_s", 0.05))
        shift = seed_shift(params.seed)
        selected = (request.mask > 0)[:, :, None]
        for step in range(1, steps + 1):
            if request.is_cancelled():
                raise Cancelled()
            if step_s:
                time.sleep(step_s)
            request.on_progress("denoise", step, steps, np.clip(request.crop + shift * (step / steps), 0, 1))
        out = np.where(selected, np.clip(request.crop + shift, 0.0, 1.0), request.crop).astype(np.float32)
        return EngineOutput(out, meta={"engine": self.name, "seed": int(params.seed), "steps": steps})


_SLOW_WORKING = WorkingSize(target_area=64 * 64, multiple=8, min_side=32, max_side=256, allow_downscale=True)
_SLOW_CAPS = Capabilities(steps=True)
SLOW_PRESETS = {
    "a": Preset("a", "slow preset a", working=_SLOW_WORKING, capabilities=_SLOW_CAPS, defaults={"steps": 4}),
    "b": Preset("b", "slow preset b", working=_SLOW_WORKING, capabilities=_SLOW_CAPS, defaults={"steps": 4}),
}


def register_slow_engine() -> dict[str, str]:
    """Add the slow engine to this process's engine table; returns the entry for a pool's replicas."""
    register_engine(SLOW_ENGINE, SLOW)
    return {SLOW_ENGINE: SLOW}


class SlowEngine(Engine):
    """Sleeps ``step_s`` per step (option, default 0.2 s) and ``load_s`` per preset load.

    Its time is spent sleeping, not computing, so throughput measured with it shows what a pool's
    scheduling achieves even on a machine with few cores. Loading a preset costs time and is
    counted, so a test can tell whether a job caused a reload. It inverts the selection, so a
    result that never went through it is noticed.
    """

    name = SLOW_ENGINE
    description = "Sleep-bound engine for pool tests and benchmarks."

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.loaded: str | None = None
        self.loads = 0  # how many times a preset was loaded by this engine object

    def make_presets(self) -> dict[str, Preset]:
        return dict(SLOW_PRESETS)

    def load(self, preset: str | None = None) -> None:
        name = self.preset(preset).name
        if self.loaded == name:
            return
        time.sleep(float(self.options.get("load_s", 0.3)))
        self.loaded = name
        self.loads += 1

    def unload(self) -> None:
        self.loaded = None

    def refine(self, request: EngineRequest) -> EngineOutput:
        params = request.params
        steps = int(params.steps or self.preset(params.preset).defaults["steps"])
        step_s = float(self.options.get("step_s", 0.2))
        for step in range(1, steps + 1):
            if request.is_cancelled():
                raise Cancelled()
            time.sleep(step_s)
            request.on_progress("denoise", step, steps, None)
        # Invert inside the selection only: outside pixels stay, as paste-back's drift estimate
        # expects of an engine.
        crop, mask = request.crop, request.mask
        out = np.where(mask[:, :, None] > 0, 1.0 - crop, crop).astype(np.float32)
        meta = {"preset": self.loaded, "loads": self.loads, "pid": os.getpid(), "steps": steps}
        return EngineOutput(out, meta=meta)

    def status(self) -> dict[str, Any]:
        return {"preset": self.loaded, "loads": self.loads}
