"""``touchup bench speed``: where the time of one diffusion refine goes, and our overhead.

For each case (a small selection in a 1K and a 4K canvas, a 1024x1024 selection in a 4K canvas)
it runs the job exactly as the backend does (``run_refine`` on the context tile a plugin sends)
and prints condition encode, denoising, VAE decode, crop and paste-back times, peak VRAM and the
memory policy. The same region then goes through the seed recipe (RefineAnything's inference
script: focus crop of the whole canvas with a 64 px margin in 1-megapixel space, the pipeline at
~1 MP, bicubic resize back, grown-and-blurred mask blend, paste into a copy of the canvas) with
the same loaded model, steps and seed, so the non-model overhead of both can be compared.

Without weights, ``scripts/gpu_check.sh`` measures the real architectures with random weights
(and, with ``--tiny``, runs this benchmark's code on tiny models on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...shared.geometry import Rect, context_tile
from ..engines.base import EngineRequest


@dataclass
class Case:
    selection: int
    canvas: int

    @property
    def name(self) -> str:
        return f"{self.selection}x{self.selection} in {self.canvas}x{self.canvas}"


CASES = [Case(96, 1024), Case(96, 4096), Case(1024, 4096)]


def register_speed(sub: argparse._SubParsersAction) -> None:
    """Adds ``bench speed`` to the ``touchup bench`` subcommands."""
    p = sub.add_parser("speed", help="per-stage times of a diffusion preset vs the seed recipe")
    p.add_argument("--preset", default="refine-anything", help="diffusion preset (default: refine-anything)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:1 or cpu")
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--repeat", type=int, default=3, help="warm runs per case (median reported)")
    p.add_argument("--memory-policy", default=None, help="force a memory policy (default: auto)")
    p.add_argument("--models-dir", default=None, help="folder searched before the Hugging Face cache")
    p.add_argument("--cases", default=None, help="e.g. 96@1024,96@4096,1024@4096 (selection@canvas)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _canvas(size: int) -> np.ndarray:
    """A smooth photo-like RGBA u8 canvas (generated in strips so an 8K canvas stays cheap)."""
    rng = np.random.default_rng(0)
    canvas = np.empty((size, size, 4), np.uint8)
    xs = np.arange(size, dtype=np.float32) / size
    for y0 in range(0, size, 512):
        ys = (np.arange(y0, min(size, y0 + 512), dtype=np.float32) / size)[:, None]
        strip = np.stack(
            [xs[None, :] + 0 * ys, ys + 0 * xs[None, :], 0.5 + 0.5 * np.sin(8 * (xs[None, :] + ys))], axis=2
        )
        strip = strip * 220 + rng.normal(0, 6, strip.shape)
        canvas[y0 : y0 + strip.shape[0], :, :3] = np.clip(strip, 0, 255).astype(np.uint8)
    canvas[:, :, 3] = 255
    return canvas


def _selection(case: Case) -> Rect:
    c, s = case.canvas, case.selection
    return Rect((c - s) // 2, (c - s) // 2, s, s)


def _ellipse_mask(h: int, w: int, sel: Rect, origin: tuple[int, int]) -> np.ndarray:
    """An elliptical selection filling ``sel``, as a u8 mask of an ``h`` x ``w`` tile at ``origin``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = sel.x + sel.width / 2 - origin[0], sel.y + sel.height / 2 - origin[1]
    inside = ((xx + 0.5 - cx) / (sel.width / 2)) ** 2 + ((yy + 0.5 - cy) / (sel.height / 2)) ** 2 <= 1.0
    return (inside * 255).astype(np.uint8)


def ours(engine: Any, canvas: np.ndarray, case: Case, params: Any) -> dict[str, float]:
    """One job as the backend runs it: the plugin's context tile through ``run_refine``."""
    from ..pipeline.refine import RefineJob, run_refine

    sel = _selection(case)
    tile = context_tile(sel, case.canvas, case.canvas, params.context)
    t0 = time.perf_counter()
    source = canvas[tile.y : tile.y1, tile.x : tile.x1]  # what the plugin reads and sends
    mask = _ellipse_mask(tile.height, tile.width, sel, (tile.x, tile.y))
    job = RefineJob(source=source, mask=mask, prompt="", params=params, doc_size=(case.canvas, case.canvas))
    outcome = run_refine(job, engine)
    total = time.perf_counter() - t0
    engine_t = outcome.meta.get("timings")  # the engine's own stages (diffusion engines)
    return _row(total, outcome.timings, engine_t if isinstance(engine_t, dict) else {}, outcome.meta)


def _row(
    total: float, outer: dict[str, float], engine_t: dict[str, float], meta: dict[str, Any]
) -> dict[str, Any]:
    pipeline = engine_t.get("pipeline", outer.get("engine", 0.0))
    return {
        "total": total,
        "condition_encode": engine_t.get("condition_encode", 0.0),
        "denoise": engine_t.get("denoise", 0.0),
        "vae_decode": engine_t.get("vae_decode", 0.0),
        "crop": outer.get("crop", 0.0),
        "paste": outer.get("paste", 0.0),
        "overhead": max(0.0, total - pipeline),
        "peak_vram_gb": meta.get("peak_vram_gb"),
    }


def seed_recipe(engine: Any, canvas: np.ndarray, case: Case, params: Any, area: int) -> dict[str, Any]:
    """The same region through RefineAnything's own crop and paste (re-implemented from its
    description), with our loaded pipeline doing the model part at the same steps and seed."""
    from PIL import Image, ImageFilter

    sel = _selection(case)
    size = case.canvas
    t0 = time.perf_counter()
    image = Image.fromarray(canvas[:, :, :3])  # the seed works on the whole image
    mask_full = np.zeros((size, size), np.uint8)
    mask_full[sel.y : sel.y1, sel.x : sel.x1] = _ellipse_mask(sel.height, sel.width, sel, (sel.x, sel.y))
    mask_l = Image.fromarray(mask_full)
    ys, xs = np.nonzero(mask_full)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    s = math.sqrt(1024 * 1024 / float(size * size))
    margin = 64
    box = (
        max(0, math.floor(max(0.0, x0 * s - margin) / s)),
        max(0, math.floor(max(0.0, y0 * s - margin) / s)),
        min(size, math.ceil(min(size * s, x1 * s + margin) / s)),
        min(size, math.ceil(min(size * s, y1 * s + margin) / s)),
    )
    crop_img, crop_mask = image.crop(box), mask_l.crop(box)
    # The pipeline sizes its output to ~``area`` in the crop's aspect, multiples of 32.
    ratio = crop_img.width / crop_img.height
    out_w = max(32, round(math.sqrt(area * ratio) / 32) * 32)
    out_h = max(32, round(math.sqrt(area / ratio) / 32) * 32)
    model_in = np.asarray(crop_img.resize((out_w, out_h), Image.Resampling.LANCZOS), np.float32) / 255.0
    model_mask = (np.asarray(crop_mask.resize((out_w, out_h), Image.Resampling.NEAREST)) > 0).astype(
        np.float32
    )
    crop_t = time.perf_counter() - t0

    t1 = time.perf_counter()
    output = engine.refine(EngineRequest(model_in, model_mask, params=params))
    model_t = time.perf_counter() - t1

    t2 = time.perf_counter()
    generated = Image.fromarray(np.clip(np.rint(output.image * 255), 0, 255).astype(np.uint8))
    alpha_img = crop_mask.filter(ImageFilter.MaxFilter(7)).filter(ImageFilter.GaussianBlur(5.0))
    dst = np.asarray(crop_img, np.float32)
    src = np.asarray(generated.resize(crop_img.size, Image.Resampling.BICUBIC), np.float32)
    alpha = (np.asarray(alpha_img, np.float32) / 255.0)[:, :, None]
    blended = np.clip(src * alpha + dst * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    result = image.copy()
    result.paste(Image.fromarray(blended), (box[0], box[1]))
    paste_t = time.perf_counter() - t2
    total = time.perf_counter() - t0
    return _row(
        total,
        {"crop": crop_t, "paste": paste_t, "engine": model_t},
        output.meta.get("timings", {}),
        output.meta,
    )


def _median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def _parse_cases(text: str | None) -> list[Case]:
    if not text:
        return list(CASES)
    cases = []
    for item in text.split(","):
        sel, _, canvas = item.partition("@")
        cases.append(Case(int(sel), int(canvas)))
    return cases


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:9.1f}"


def run(args: argparse.Namespace) -> int:
    from ..engines.diffusion.engine import diffusion_libraries_missing
    from ..engines.diffusion.presets import PRESETS

    missing = diffusion_libraries_missing()
    if missing:
        print(
            f"touchup bench speed: needs {', '.join(missing)} (install touchup[diffusion])", file=sys.stderr
        )
        return 2
    if args.preset not in PRESETS:
        print(
            f"touchup bench speed: unknown preset {args.preset!r}; known: {', '.join(PRESETS)}",
            file=sys.stderr,
        )
        return 2
    preset = PRESETS[args.preset]
    options: dict[str, Any] = {"device": args.device, "preview_every": 0}
    if args.memory_policy:
        options["memory_policy"] = args.memory_policy
    if args.models_dir:
        options["models_dir"] = args.models_dir
    return _run(args, preset, options, 1024 * 1024)


def _run(args: argparse.Namespace, preset: Any, options: dict[str, Any], seed_area: int) -> int:
    from ..engines import create_engine
    from ..engines.base import RefineParams

    engine = create_engine(preset.family, options)
    t0 = time.perf_counter()
    engine.load(args.preset)
    load_s = time.perf_counter() - t0
    status = engine.status()
    params = RefineParams(preset=args.preset, steps=args.steps, seed=0)
    cases = _parse_cases(args.cases)
    results: list[dict[str, Any]] = []

    for case in cases:
        canvas = _canvas(case.canvas)
        ours(engine, canvas, case, params)  # warm-up (kernels, allocator)
        seed_recipe(engine, canvas, case, params, seed_area)
        our_rows, seed_rows = [], []
        for _ in range(max(1, args.repeat)):
            our_rows.append(ours(engine, canvas, case, params))
            seed_rows.append(seed_recipe(engine, canvas, case, params, seed_area))
        results.append({"case": case.name, "ours": _median_rows(our_rows), "seed": _median_rows(seed_rows)})
    engine.unload()

    header = {
        "preset": args.preset,
        "tiny": bool(getattr(args, "tiny", False)),
        "device": status.get("device"),
        "dtype": status.get("dtype"),
        "memory_policy": status.get("memory_policy"),
        "steps": args.steps or engine.preset(args.preset).defaults.get("steps"),
        "load_s": load_s,
    }
    if args.json:
        print(json.dumps({**header, "results": results}, indent=2))
        return 0
    print(
        f"preset {header['preset']}{' (tiny random model)' if header['tiny'] else ''}: device {header['device']}, "
        f"{header['dtype']}, memory policy {header['memory_policy']}, {header['steps']} steps, load {load_s:.1f} s"
    )
    cols = ["total", "condition_encode", "denoise", "vae_decode", "crop", "paste", "overhead"]
    print(f"{'case':<22} {'recipe':<6} " + " ".join(f"{c[:9]:>9}" for c in cols) + "   overhead%  peakVRAM")
    for r in results:
        for label in ("ours", "seed"):
            row = r[label]
            share = 100.0 * row["overhead"] / row["total"] if row["total"] else 0.0
            vram = f"{row['peak_vram_gb']:.1f} GiB" if row["peak_vram_gb"] is not None else "-"
            print(
                f"{r['case']:<22} {label:<6} "
                + " ".join(_fmt(row[c]) for c in cols)
                + f"   {share:8.1f}%  {vram}"
            )
    print("times in ms (median of warm runs); overhead = total minus the pipeline call")
    return 0
