"""What a replica streams back for one job: progress per step, each variant as it is done,
then exactly one ending.

Plain dataclasses (no Ray types), so the front can read them without knowing how they came.
Failures the user should see travel as :class:`Failed` with their protocol code; only the
loss of the replica itself surfaces as a Ray error on the front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shipping import ShippedOutcome


@dataclass
class Progress:
    stage: str
    step: int
    total: int
    preview: np.ndarray | None = None
    variant: int = 0


@dataclass
class VariantDone:
    """One variant of the job, every shipped part of it refined (sent before the next is done)."""

    index: int
    outcomes: list[ShippedOutcome]  # one per shipped part
    replica: str
    loads: int  # presets this replica has loaded so far (affinity shows as no change)


@dataclass
class Finished:
    """Every variant was sent; the job is over."""

    replica: str
    loads: int
    seconds: float


@dataclass
class Failed:
    code: str
    message: str
    detail: str | None = None


@dataclass
class WasCancelled:
    """The engine stopped at a cancel check."""


Event = Progress | VariantDone | Finished | Failed | WasCancelled
