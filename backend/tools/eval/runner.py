"""Run every method on every case and score the results.

One engine instance, loaded once, serves all methods, so the methods differ only in how the
region reaches the engine and comes back -- which is what the benchmark is about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...engines.base import Engine, RefineParams
from ...errors import TouchupError
from .baselines import METHODS, check_methods, run_method
from .datasets import EvalCase, damage_family
from .metrics import METRICS, Regions, score
from .perceptual import Perceptual

#: ``on_step(case_name, method)`` after each method of each case (drives the progress bar).
StepFn = Callable[[str, str], None]


@dataclass
class Sample:
    """A case kept for the contact sheet, with each method's refined document."""

    case: EvalCase
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Everything a report needs: per-(case, method) rows and the kept samples."""

    engine: str
    preset: str
    methods: list[str]
    rows: list[dict[str, Any]]
    samples: list[Sample]
    skipped: dict[str, str] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))


def sample_indices(cases: Sequence[EvalCase], keep: int) -> list[int]:
    """Which cases to keep pictures of: ``keep`` spread over the run, categories taking turns.

    Slot ``k`` wants the next category in turn near position ``k * n / keep``, so the sheet
    shows every category and a spread of sizes and degradations, not just the first cases.
    """
    n = len(cases)
    keep = min(keep, n)
    categories = list(dict.fromkeys(c.category for c in cases))
    chosen: list[int] = []
    for k in range(keep):
        target = k * n / max(keep, 1)
        free = [i for i in range(n) if i not in chosen]
        wanted = [i for i in free if cases[i].category == categories[k % len(categories)]] or free
        chosen.append(min(wanted, key=lambda i: abs(i - target)))
    return sorted(chosen)


def run_eval(
    cases: Sequence[EvalCase],
    engine: Engine,
    preset: str | None = None,
    methods: Sequence[str] | None = None,
    perceptual: Perceptual | None = None,
    keep: int = 6,
    on_step: StepFn | None = None,
    base_params: RefineParams | None = None,
) -> EvalResult:
    """Refine each case with each method and score it; see :mod:`.metrics` for the columns."""
    methods = list(methods or METHODS)
    check_methods(methods)
    preset_obj = engine.preset(preset)
    engine.load(preset_obj.name)
    kept = set(sample_indices(cases, keep))
    rows: list[dict[str, Any]] = []
    samples: list[Sample] = []
    for index, case in enumerate(cases):
        regions = Regions.from_selection(case.mask)
        # The damaged input's own score: each method's gain is measured from it.
        input_psnr = score(case.image, case.image, case.truth, regions)["in_psnr"]
        params = dataclasses.replace(
            base_params or RefineParams(), preset=preset_obj.name, seed=case.seed * 1000 + index
        )
        sample = Sample(case) if index in kept else None
        for method in methods:
            row: dict[str, Any] = {
                "case": case.name,
                "category": case.category,
                "degradation": case.degradation,
                "family": damage_family(case.degradation),
                "size": case.size,
                "reference": case.has_reference,
                "reference_kind": case.reference_kind,
                "selected": round(case.selected_fraction, 5),
                "method": method,
                "engine": engine.name,
                "preset": preset_obj.name,
                "error": "",
            }
            try:
                outcome = run_method(method, case, engine, params)
            except TouchupError as exc:
                row.update({name: float("nan") for name in METRICS}, seconds=float("nan"), error=exc.message)
            else:
                row["seconds"] = outcome.seconds
                row.update(score(outcome.image, case.image, case.truth, regions))
                row["gain"] = row["in_psnr"] - input_psnr
                row["reference_status"] = str(outcome.meta.get("reference", ""))
                if perceptual is not None:
                    row.update(perceptual.score(outcome.image, case.truth, regions.inside))
                if sample is not None:
                    sample.outputs[method] = outcome.image
            rows.append(row)
            if on_step is not None:
                on_step(case.name, method)
        if sample is not None:
            samples.append(sample)
    metric_names = list(METRICS) + (list(perceptual.metrics) if perceptual is not None else [])
    return EvalResult(
        engine=engine.name,
        preset=preset_obj.name,
        methods=methods,
        rows=rows,
        samples=samples,
        skipped=dict(perceptual.skipped) if perceptual is not None else {},
        metrics=metric_names,
    )
