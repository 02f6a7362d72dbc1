"""The memory planner: which memory policy runs a preset on a given GPU *and* host RAM.

A policy says which components are quantised and where each one lives while a job runs. Its
cost is worked out from the preset's parameter counts (those of the real architectures) per
dtype and quantisation, plus the run's working memory, for both the GPU and the host: an
offloaded component lives in host RAM, and offloading with CUDA streams pins it there. The plan
is the first policy, in order of preference, whose figures fit both, and it says why. Nothing
here imports torch, so ``touchup models plan`` answers for a machine without the diffusion extra,
or for a hypothetical one (``--vram``/``--ram``).

Preference order: full precision before quantised (quantisation costs some quality), then
speed. Every policy but ``gpu`` decodes with VAE tiling (a one-megapixel decode of Qwen's video
VAE alone can take more than 8 GB). The relative speeds are rough (1.0 = everything resident in bf16) and are meant to be
replaced by the figures ``scripts/gpu_check.sh`` measures.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from .presets import DiffusionPreset, MemoryProfile, Role

GIB = 2**30
#: Bytes per parameter of each storage format. NF4 keeps 4 bits plus one fp32 absmax per 64
#: weights (and a second-level quantisation of those); int8 (LLM.int8) keeps a scale per row.
BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.02, "nf4": 0.53}
#: The CUDA context and allocator slack on the GPU.
CUDA_CONTEXT_GB = 0.8
#: Python, torch, CUDA libraries and the backend itself in host RAM.
HOST_BASE_GB = 3.0
#: One group of layers in flight under group offloading (two with prefetching streams).
OFFLOAD_GROUP_GB = 1.0
#: Tensors in flight while safetensors files are read.
LOAD_TRANSIENT_GB = 2.0


class Policy(str, Enum):
    """Memory policies, in order of preference (see the module docstring)."""

    GPU = "gpu"
    MODEL_OFFLOAD = "model_offload"
    QUANT8_GPU = "quant8_gpu"
    QUANT4_GPU = "quant4_gpu"
    QUANT8 = "quant8"
    QUANT4 = "quant4"
    QUANT4_GROUP = "quant4_group"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"
    CPU = "cpu"


class Placement(str, Enum):
    """Where a component lives while a job runs."""

    GPU = "gpu"  # resident on the GPU
    SWAPPED = "swapped"  # whole component moved to the GPU while it runs (model offload)
    GROUPED = "grouped"  # streamed to the GPU a group of layers at a time (pinned host copy)
    SEQUENTIAL = "sequential"  # streamed layer by layer


@dataclass(frozen=True)
class PolicySpec:
    """A policy as data: quantisation per role, placement per role, VAE tiling, speed."""

    policy: Policy
    quantise: dict[Role, str]
    place: dict[Role, Placement]
    vae_tiling: bool
    speed: float
    summary: str

    @property
    def needs_quantisation(self) -> bool:
        return bool(self.quantise)


_ALL = (Role.DENOISER, Role.TEXT_ENCODER, Role.VAE)


def _everywhere(place: Placement) -> dict[Role, Placement]:
    return dict.fromkeys(_ALL, place)


SPECS: dict[Policy, PolicySpec] = {
    s.policy: s
    for s in (
        PolicySpec(Policy.GPU, {}, _everywhere(Placement.GPU), False, 1.0, "every component on the GPU"),
        PolicySpec(
            Policy.MODEL_OFFLOAD,
            {},
            _everywhere(Placement.SWAPPED),
            True,
            0.7,
            "each component moves to the GPU while it runs",
        ),
        PolicySpec(
            Policy.QUANT8_GPU,
            {Role.DENOISER: "int8", Role.TEXT_ENCODER: "int8"},
            _everywhere(Placement.GPU),
            True,
            0.6,
            "denoiser and text encoder in 8 bits, all on the GPU",
        ),
        PolicySpec(
            Policy.QUANT4_GPU,
            {Role.DENOISER: "nf4", Role.TEXT_ENCODER: "nf4"},
            _everywhere(Placement.GPU),
            True,
            0.8,
            "denoiser and text encoder in 4 bits (NF4), all on the GPU",
        ),
        PolicySpec(
            Policy.QUANT8,
            {Role.DENOISER: "int8", Role.TEXT_ENCODER: "int8"},
            _everywhere(Placement.SWAPPED),
            True,
            0.5,
            "8-bit denoiser and text encoder, each moved to the GPU while it runs",
        ),
        PolicySpec(
            Policy.QUANT4,
            {Role.DENOISER: "nf4", Role.TEXT_ENCODER: "nf4"},
            _everywhere(Placement.SWAPPED),
            True,
            0.6,
            "4-bit denoiser and text encoder, each moved to the GPU while it runs",
        ),
        PolicySpec(
            Policy.QUANT4_GROUP,
            {Role.DENOISER: "nf4"},
            {Role.DENOISER: Placement.GPU, Role.TEXT_ENCODER: Placement.GROUPED, Role.VAE: Placement.GPU},
            True,
            0.5,
            "4-bit denoiser on the GPU, text encoder streamed in layer groups, VAE tiled",
        ),
        PolicySpec(
            Policy.GROUP_OFFLOAD,
            {},
            _everywhere(Placement.GROUPED),
            True,
            0.3,
            "every component streamed to the GPU in layer groups, VAE tiled",
        ),
        PolicySpec(
            Policy.SEQUENTIAL_OFFLOAD,
            {},
            _everywhere(Placement.SEQUENTIAL),
            True,
            0.05,
            "layer by layer from host RAM (last resort)",
        ),
    )
}
#: Policies a user may force in config.toml (``cpu`` is chosen by the device, not forced).
GPU_POLICIES = tuple(SPECS)


@dataclass(frozen=True)
class Cost:
    """Expected peaks of one policy for one preset (GiB)."""

    policy: Policy
    vram_gb: float
    ram_gb: float
    speed: float
    summary: str


@dataclass(frozen=True)
class Plan:
    """The planner's answer: a policy with its costs, or ``None`` with what would be needed."""

    preset: str
    vram_gb: float | None
    ram_gb: float | None
    policy: Policy | None
    cost: Cost | None
    reason: str
    dtype: str
    forced: bool = False

    @property
    def fits(self) -> bool:
        return self.policy is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["policy"] = self.policy.value if self.policy else None
        if self.cost is not None:
            out["cost"] = {**asdict(self.cost), "policy": self.cost.policy.value}
        out["fits"] = self.fits
        return out


def component_gb(params: int, storage: str) -> float:
    return params * BYTES_PER_PARAM[storage] / GIB


def policy_cost(preset: DiffusionPreset, policy: Policy, dtype: str | None = None) -> Cost:
    """Peak VRAM and host RAM of running ``preset`` under ``policy`` (GiB).

    VRAM: what is resident, plus the largest component brought in while it runs, plus the
    larger of one denoising step's activations and the VAE decode. Loading a quantised
    pipeline places every quantised component on the GPU at once, so that sum is a peak too.
    RAM: the host base, plus every component that lives on the host (offloaded ones; streamed
    ones are pinned a group at a time, ``low_cpu_mem_usage``), plus the read buffers of loading
    (weights go straight to the GPU for resident components).
    """
    profile: MemoryProfile = preset.memory  # type: ignore[assignment]
    spec = SPECS[policy]
    dtype = dtype or preset.dtype
    resident = swapped_peak = host = load_gpu = 0.0
    grouped = False
    for comp in profile.components:
        storage = spec.quantise.get(comp.role, dtype)
        size = component_gb(comp.params, storage)
        place = spec.place[comp.role]
        if storage in ("nf4", "int8"):
            load_gpu += size
        if place == Placement.GPU:
            resident += size
        elif place == Placement.SWAPPED:
            swapped_peak = max(swapped_peak, size)
            host += size
        else:
            grouped = True
            host += size
    working = max(profile.activations, profile.vae_decode_tiled if spec.vae_tiling else profile.vae_decode)
    run = resident + swapped_peak + (OFFLOAD_GROUP_GB if grouped else 0.0) + working
    vram = max(run, load_gpu) + CUDA_CONTEXT_GB
    ram = HOST_BASE_GB + host + LOAD_TRANSIENT_GB
    return Cost(policy, round(vram, 1), round(ram, 1), spec.speed, spec.summary)


def _gb(x: float) -> str:
    return f"{x:.0f} GB" if x >= 10 else f"{x:.1f} GB"


def plan(
    preset: DiffusionPreset,
    vram_gb: float | None,
    ram_gb: float | None,
    *,
    quantisation: bool = True,
    forced: Policy | None = None,
    dtype: str | None = None,
) -> Plan:
    """The policy for ``preset`` on a GPU with ``vram_gb`` free and ``ram_gb`` of free host RAM.

    ``vram_gb`` None means no GPU (the CPU policy); ``ram_gb`` None means unknown (not checked).
    ``quantisation``: whether bitsandbytes is usable here. ``forced``: the user's choice, used
    as it is (the plan still says whether it is expected to fit).
    """
    dtype = dtype or preset.dtype
    if vram_gb is None:
        need = HOST_BASE_GB + sum(component_gb(c.params, "float32") for c in preset.profile.components)

        cost = Cost(Policy.CPU, 0.0, round(need, 1), 0.01, "float32 on the CPU (no GPU)")
        ok = ram_gb is None or need <= ram_gb
        return Plan(
            preset.name,
            None,
            ram_gb,
            Policy.CPU if ok else None,
            cost if ok else None,
            "no CUDA GPU: float32 on the CPU, minutes per region"
            if ok
            else f"does not fit: needs {_gb(need)} RAM on the CPU",
            "float32",
        )
    if forced is not None:
        cost = policy_cost(preset, forced, dtype)
        fits = cost.vram_gb <= vram_gb and (ram_gb is None or cost.ram_gb <= ram_gb)
        why = "forced in config.toml" + (
            "" if fits else f"; expected to need {_gb(cost.vram_gb)} VRAM and {_gb(cost.ram_gb)} RAM"
        )
        return Plan(preset.name, vram_gb, ram_gb, forced, cost, why, dtype, forced=True)
    costs = [
        policy_cost(preset, p, dtype)
        for p, spec in SPECS.items()
        if quantisation or not spec.needs_quantisation
    ]
    for cost in costs:
        if cost.vram_gb <= vram_gb and (ram_gb is None or cost.ram_gb <= ram_gb):
            better = [c for c in costs[: costs.index(cost)]]
            why = f"{cost.summary}; needs {_gb(cost.vram_gb)} VRAM and {_gb(cost.ram_gb)} RAM"
            if better:
                b = better[0]
                short = []
                if b.vram_gb > vram_gb:
                    short.append(f"{_gb(b.vram_gb)} VRAM")
                if ram_gb is not None and b.ram_gb > ram_gb:
                    short.append(f"{_gb(b.ram_gb)} RAM")
                why += f" ({b.policy.value} would need {' and '.join(short)})"
            return Plan(preset.name, vram_gb, ram_gb, cost.policy, cost, why, dtype)
    needs = []
    ram_ok = [c for c in costs if ram_gb is None or c.ram_gb <= ram_gb]
    vram_ok = [c for c in costs if c.vram_gb <= vram_gb]
    if ram_ok:
        c = min(ram_ok, key=lambda c: c.vram_gb)
        needs.append(f"{_gb(c.vram_gb)} VRAM ({c.policy.value})")
    if vram_ok:
        c = min(vram_ok, key=lambda c: c.ram_gb)
        needs.append(f"{_gb(c.ram_gb)} RAM ({c.policy.value})")
    if not needs:
        c = min(costs, key=lambda c: max(c.vram_gb / vram_gb, c.ram_gb / (ram_gb or 1.0)))
        needs.append(f"{_gb(c.vram_gb)} VRAM and {_gb(c.ram_gb)} RAM ({c.policy.value})")
    text = " or ".join(needs)
    if not quantisation:
        text += "; bitsandbytes would add the quantised policies"
    return Plan(preset.name, vram_gb, ram_gb, None, None, "does not fit: needs " + text, dtype)


#: Share of the headroom the seed-batching rule leaves unused (allocator fragmentation, the
#: estimates' own error): a batch that does not fit costs a failed job, one seed less only time.
BATCH_MARGIN = 0.25
#: Bytes per value of each compute dtype, relative to the 16-bit dtypes the profiles are for.
_DTYPE_SCALE = {"float32": 2.0, "bfloat16": 1.0, "float16": 1.0}


def variant_batch(
    preset: DiffusionPreset, plan: Plan, count: int, area: int, ram_gb: float | None = None
) -> int:
    """How many of ``count`` seeds one pipeline call may denoise together under ``plan``, for a
    crop of ``area`` pixels.

    Every image beyond the first adds its own working memory -- one denoising step's
    activations, or its VAE decode where that is larger -- scaled by the crop's area against
    the preset's working area and by the compute dtype. On a GPU those extra images must fit in
    what the plan leaves free of the VRAM it was chosen for (free VRAM at load minus the plan's
    expected peak); on the CPU in the host RAM available now (``ram_gb``, the weights being
    loaded already). Less a safety margin; at least 1, at most ``count``.
    """
    profile = preset.memory
    if count <= 1 or profile is None or plan.policy is None:
        return 1
    tiled = plan.policy is not Policy.CPU and SPECS[plan.policy].vae_tiling
    scale = _DTYPE_SCALE.get(plan.dtype, 1.0) * max(area, 1) / max(preset.working.target_area, 1)
    per_image = max(profile.activations, profile.vae_decode_tiled if tiled else profile.vae_decode) * scale
    if plan.policy is Policy.CPU:
        headroom = ram_gb or 0.0
    else:
        headroom = (plan.vram_gb or 0.0) - (plan.cost.vram_gb if plan.cost else float("inf"))
    extra = int(max(headroom, 0.0) * (1.0 - BATCH_MARGIN) // per_image) if per_image > 0 else count
    return max(1, min(count, 1 + extra))


def available_ram_gb() -> float | None:
    """Host RAM available now (Linux ``MemAvailable``; total RAM elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return None


def quantisation_available() -> bool:
    """Whether bitsandbytes is installed (checked without importing it)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def this_machine() -> tuple[float | None, float | None, str]:
    """Free VRAM (None without a CUDA GPU), available RAM, and the GPU's name.

    Asks torch only when it is installed; ``nvidia-smi`` is not consulted so the answer is what
    the engines will see.
    """
    ram = available_ram_gb()
    if importlib.util.find_spec("torch") is None:
        return None, ram, "no torch: CPU only"
    try:
        import torch

        if not torch.cuda.is_available():
            return None, ram, "no CUDA GPU"
        free, _total = torch.cuda.mem_get_info()
        return free / GIB, ram, torch.cuda.get_device_name(0)
    except Exception as exc:  # a broken CUDA install
        return None, ram, f"CUDA unusable ({type(exc).__name__})"


def compute_dtype(preset: DiffusionPreset, bf16_supported: bool, override: str | None = None) -> str:
    """The dtype to run ``preset`` in: the config's override, the preset's, or its fallback on a
    GPU without bfloat16 (before Ampere, where bf16 is emulated and slow)."""
    if override:
        return override
    if preset.dtype == "bfloat16" and not bf16_supported and preset.fallback_dtype:
        return preset.fallback_dtype
    return preset.dtype
