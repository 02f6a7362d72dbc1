"""``touchup bench classic``: seconds per megapixel of the CPU engine on a real photo.

The classic engine is what every user without a GPU waits for, so its budget is stated per
selected megapixel (about 2 s on a 2-core laptop). A timed test would be flaky on a shared
machine; this prints figures instead, with the load average beside them and the process's CPU
time (which a busy machine inflates far less than wall time), so that runs on different
machines or at different loads can be compared by their ratios.

Each case is a square selection of ``--side`` px inside a larger photo (scikit-image's
astronaut, enlarged so the selection holds real detail), damaged the way the evaluation damages
regions, and refined through the product's own path (focus crop, engine, paste-back).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..engines.base import RefineParams
from .eval.baselines import run_method
from .eval.datasets import EvalCase, degrade, load_photo, make_reference

#: Damages timed by default: each restoration step, a combination, and reference transfer.
KINDS = ("blur", "jpeg", "downsample", "noise", "blur+downsample+jpeg", "reference")


@dataclass(frozen=True)
class Timing:
    """One damage kind's median figures over the repeats."""

    kind: str
    megapixels: float
    wall_s: float
    cpu_s: float
    wall_s_per_mp: float
    cpu_s_per_mp: float
    steps: str


def make_bench_case(kind: str, side: int, seed: int = 0) -> EvalCase:
    """A ``side`` x ``side`` damaged selection centred in a photo 1.5x its size."""
    rng = np.random.default_rng(seed)
    canvas = round(side * 1.5)
    photo = cv2.resize(load_photo("astronaut"), (canvas, canvas), interpolation=cv2.INTER_CUBIC)
    region = np.zeros((canvas, canvas), bool)
    top = (canvas - side) // 2
    region[top : top + side, top : top + side] = True
    damage = "blur+jpeg" if kind == "reference" else kind
    degraded = degrade(photo.astype(np.float32) / 255.0, damage, rng)
    image = photo.copy()
    image[region] = np.clip(np.rint(degraded[region] * 255), 0, 255).astype(np.uint8)
    references = [make_reference(photo, region, rng)] if kind == "reference" else []
    return EvalCase(
        name=f"bench-{kind}-{side}",
        category="face",
        image=image,
        mask=region.astype(np.uint8) * 255,
        truth=photo,
        references=references,
        degradation=damage,
    )


def measure(kind: str, side: int, repeat: int) -> Timing:
    """Median wall and CPU seconds of ``repeat`` refines of one damage kind (after a warm-up)."""
    from ..engines.classic import ClassicEngine

    engine = ClassicEngine()
    engine.load("default")
    case = make_bench_case(kind, side)
    params = RefineParams(preset="default")
    run_method("ours", case, engine, params)  # warm-up: imports, FFT plans, OpenCV's pools
    walls, cpus, steps = [], [], ""
    for _ in range(repeat):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = run_method("ours", case, engine, params)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        steps = ",".join(result.meta.get("restoration_steps", [])) or str(result.meta.get("reference", ""))
    mp = side * side / 1e6
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return Timing(
        kind, round(mp, 3), round(wall, 3), round(cpu, 3), round(wall / mp, 3), round(cpu / mp, 3), steps
    )


def register_classic(sub: argparse._SubParsersAction) -> None:
    """Adds ``bench classic`` to the ``touchup bench`` subcommands."""
    p = sub.add_parser("classic", help="seconds per megapixel of the CPU engine, by damage")
    p.add_argument("--side", type=int, default=1024, help="selection side in px (default 1024: ~1 MP)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per kind (median reported)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"touchup bench classic: unknown kind {', '.join(unknown)} (choose from {', '.join(KINDS)})")
        return 2
    load_before = os.getloadavg()
    timings = [measure(kind, args.side, max(1, args.repeat)) for kind in kinds]
    load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.json:
        out = {"cores": cores, "load_before": load_before, "load_after": load_after}
        print(json.dumps({**out, "timings": [asdict(t) for t in timings]}, indent=2))
        return 0
    print(f"classic engine, {args.side}x{args.side} selection, {cores} cores, median of {args.repeat}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print("| damage | MP | wall s | CPU s | wall s/MP | CPU s/MP | steps |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for t in timings:
        print(
            f"| {t.kind} | {t.megapixels:.2f} | {t.wall_s:.2f} | {t.cpu_s:.2f} | "
            f"{t.wall_s_per_mp:.2f} | {t.cpu_s_per_mp:.2f} | {t.steps} |"
        )
    worst = max(timings, key=lambda t: t.wall_s_per_mp)
    print(f"slowest: {worst.kind} at {worst.wall_s_per_mp:.2f} s/MP wall")
    return 0
