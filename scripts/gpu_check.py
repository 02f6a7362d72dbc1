"""Measure every diffusion preset on this machine without any weights (run by gpu_check.sh).

On an NVIDIA GPU each preset's pipeline is built at full size from the vendored real configs
(``tests/diffusion/configs``) with random weights: the compute and the memory are those of the
real model, the pictures are noise. For each memory policy that the planner says fits the card
(and that needs no weights on disk: quantising needs the real files), it prints one Markdown
row: time to the first denoising step, time per step, a whole refine of a ~1 MP region, peak
VRAM, host RAM, and the backend's own overhead for a 96x96 selection in a 4096x4096 canvas.
LoRAs are not attached (their files are not architecture configs); their cost is small.

``--tiny`` runs the same measurement code on tiny pipelines on the CPU (what CI runs).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "diffusion"))

from touchup.backend.engines import create_engine  # noqa: E402
from touchup.backend.engines.base import EngineRequest, RefineParams  # noqa: E402
from touchup.backend.engines.diffusion import loading, memory  # noqa: E402
from touchup.backend.engines.diffusion.memory import Plan, Policy  # noqa: E402
from touchup.backend.engines.diffusion.presets import PRESETS  # noqa: E402

#: Policies measured on a GPU (the quantised ones need the real weight files to quantise).
MEASURED = (Policy.GPU, Policy.MODEL_OFFLOAD, Policy.GROUP_OFFLOAD)


def host_ram_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def full_size_pipeline(repo: str, device: Any, dtype: Any) -> Any:
    """The real architecture of ``repo`` with random weights, built directly on ``device``."""
    import diffusers
    import tiny_pipelines as tp
    import torch
    import transformers

    index = tp.real_config(repo, "")
    parts: dict[str, Any] = {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            for name, (library, cls_name) in index.items():
                if name.startswith("_") or library is None or not isinstance(cls_name, str):
                    continue
                if name == "scheduler":
                    parts[name] = getattr(diffusers, cls_name).from_config(tp.real_config(repo, name))
                elif library == "diffusers":
                    parts[name] = getattr(diffusers, cls_name).from_config(tp.real_config(repo, name)).eval()
                elif name.startswith("text_encoder"):
                    folder = tp.CONFIGS / repo / name
                    config = transformers.AutoConfig.from_pretrained(str(folder))
                    parts[name] = getattr(transformers, cls_name)._from_config(config).eval()
    finally:
        torch.set_default_dtype(previous)
    for name, (library, cls_name) in index.items():
        if name.startswith("tokenizer"):
            parts[name] = (
                tp.qwen_tokenizer()
                if "Qwen" in cls_name
                else (tp.t5_tokenizer() if "T5" in cls_name else tp.clip_tokenizer())
            )
        elif name == "processor":
            from transformers import Qwen2VLImageProcessor

            from touchup.backend.engines.diffusion.qwen_edit import processor_without_video

            parts[name] = processor_without_video(Qwen2VLImageProcessor(), parts["tokenizer"])
        elif library is None and not name.startswith("_"):
            parts[name] = None
    for key in ("requires_aesthetics_score", "force_zeros_for_empty_prompt"):
        if key in index:
            parts[key] = index[key]
    return getattr(diffusers, index["_class_name"])(**parts)


def engine_with(pipe: Any, preset_name: str, device: Any, dtype: Any, policy: Policy, options: dict) -> Any:
    """The preset's engine with ``pipe`` already resident (no ``from_pretrained``)."""
    preset = PRESETS[preset_name]
    engine = create_engine(preset.family, {"device": str(device), "preview_every": 0, **options})
    loading.apply_scheduler(pipe, engine.presets[preset_name])
    engine._configure(pipe, engine.presets[preset_name])
    pipe.set_progress_bar_config(disable=True)
    engine._pipe, engine._loaded = pipe, engine.presets[preset_name]
    engine._plan = Plan(preset_name, None, None, policy, None, "gpu check", str(dtype))
    engine._device, engine._dtype = device, dtype
    return engine


def measure(engine: Any, preset_name: str, area: int, steps: int | None) -> dict[str, float]:
    """One refine of a crop of about ``area`` pixels: first-step and per-step times, total."""
    import torch

    from touchup.backend.pipeline.focus import working_size

    p = engine.presets[preset_name]
    side = int(area**0.5)
    w, h = working_size(side, side, p.working)
    rng = np.random.default_rng(0)
    crop = rng.random((h, w, 3), dtype=np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    refs = [crop[: h // 2, : w // 2].copy()] if p.capabilities.reference else []
    marks: list[float] = []
    params = RefineParams(preset=preset_name, steps=steps, seed=0)
    if engine._device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(engine._device)
    start = time.perf_counter()
    out = engine.refine(
        EngineRequest(crop, mask, refs, "", params, on_progress=lambda *a: marks.append(time.perf_counter()))
    )
    total = time.perf_counter() - start
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else float("nan")
    peak = out.meta.get("peak_vram_gb")
    return {
        "size": f"{w}x{h}",
        "steps": len(marks),
        "first_step": marks[0] - start if marks else float("nan"),
        "per_step": per_step,
        "total": total,
        "peak_vram": peak if peak is not None else 0.0,
    }


def overhead_96_in_4096(engine: Any, preset_name: str, seed_area: int) -> float | None:
    """The backend's own time (crop, resize, paste) around one 96x96 selection in 4096x4096."""
    try:
        from touchup.backend.tools import bench_speed
    except ImportError:  # OpenCV/SciPy missing on this machine: the job pipeline cannot run
        return None
    case = bench_speed.Case(96, 4096)
    params = RefineParams(preset=preset_name, steps=1, seed=0)
    row = bench_speed.ours(engine, bench_speed._canvas(4096), case, params)
    return row["overhead"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny pipelines on the CPU (plumbing only)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets (default: all)")
    ap.add_argument(
        "--policies", default="", help="comma-separated policies to try (default: those that fit)"
    )
    ap.add_argument("--budget", type=float, default=450.0, help="seconds before remaining rows are skipped")
    args = ap.parse_args()

    import torch

    names = [n for n in args.presets.split(",") if n]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        print(f"gpu_check: unknown presets {unknown}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    if args.tiny:
        import tiny_pipelines as tp

        tp.patch_for_tiny_runs()
        device, dtype, area, seed_area = torch.device("cpu"), torch.float32, tp.TINY_AREA, tp.TINY_AREA
        free_vram, ram = None, memory.available_ram_gb()
        label = "CPU, tiny random pipelines (plumbing only)"
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA GPU visible (use --tiny for the CPU run)", file=sys.stderr)
            return 2
        device, area, seed_area = torch.device("cuda"), 1024 * 1024, 1024 * 1024
        free_vram, ram = torch.cuda.mem_get_info()[0] / 2**30, memory.available_ram_gb()
        label = f"{torch.cuda.get_device_name(0)}, {free_vram:.0f} GiB free, {ram:.0f} GiB RAM available"
    print(f"# Touchup GPU check: {label}\n")
    print(
        "| preset | policy | crop | steps | first step s | s/step | refine s | peak VRAM GiB | host RAM GiB | 96@4096 overhead s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    built: dict[str, Any] = {}
    for name in names:
        preset = PRESETS[name]
        repo = preset.base.repo
        if args.tiny:
            policies = [Policy.CPU]
            options: dict[str, Any] = tp.tiny_options(preset.family)
        else:
            bf16 = torch.cuda.is_bf16_supported()
            dtype = getattr(torch, memory.compute_dtype(preset, bf16))
            wanted = [Policy(p) for p in args.policies.split(",") if p] or list(MEASURED)
            policies = [
                p for p in wanted if memory.policy_cost(preset, p).vram_gb <= free_vram and p in MEASURED
            ]
            options = {}
        for policy in policies:
            if time.perf_counter() - started > args.budget:
                print(
                    f"| `{name}` | {policy.value} | skipped: time budget of {args.budget:.0f} s spent | | | | | | | |"
                )
                continue
            try:
                if repo not in built:
                    built.clear()
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    built[repo] = (
                        tp.build(repo)
                        if args.tiny
                        else full_size_pipeline(repo, "cpu" if policy != Policy.GPU else device, dtype)
                    )
                pipe = built[repo]
                if not args.tiny:
                    pipe.remove_all_hooks()
                    if policy == Policy.GPU:
                        pipe.to(device)
                    else:
                        pipe.to("cpu")
                        loading.place(pipe, preset, policy, device)
                engine = engine_with(pipe, name, device, dtype, policy, options)
                row = measure(engine, name, area, None)
                overhead = overhead_96_in_4096(engine, name, seed_area)
                over = f"{overhead:.3f}" if overhead is not None else "n/a (no OpenCV/SciPy)"
                print(
                    f"| `{name}` | {policy.value} | {row['size']} | {row['steps']} | {row['first_step']:.2f} | "
                    f"{row['per_step']:.3f} | {row['total']:.2f} | {row['peak_vram']:.1f} | {host_ram_gb():.1f} | {over} |",
                    flush=True,
                )
            except torch.OutOfMemoryError:
                print(f"| `{name}` | {policy.value} | out of GPU memory | | | | | | | |", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(f"\nTotal {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
