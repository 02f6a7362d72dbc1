"""The diffusion preset table: every model configuration Touchup can run, as data.

A preset names the weights it needs (a base pipeline repository plus LoRAs), the dtype, the
working area and size multiple of the focus crop, default steps/guidance, what the plugins may
offer (capabilities), the scheduler override and model options. Engines read entries from this
table; adding a model is adding an entry, not a branch. Nothing here imports torch, so the
backend can describe presets (``hello``, ``touchup models list``) without the diffusion extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .base import Capabilities, Preset, WorkingSize

#: Weight formats that are pickles: loading one can run arbitrary code, so they are refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Files never downloaded from a pipeline repository (pickles and formats diffusers does not use).
IGNORE_PATTERNS = [
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.pkl",
    "*.msgpack",
    "*.onnx",
    "*.onnx_data",
    "*.gguf",
]


@dataclass(frozen=True)
class ModelRef:
    """One Hugging Face repository a preset needs.

    ``files`` empty means a whole diffusers pipeline (``model_index.json`` plus one folder per
    component, root-level single-file checkpoints excluded); otherwise exactly those files.
    """

    repo: str
    files: tuple[str, ...] = ()
    variant: str | None = None
    gated: bool = False
    licence: str = ""

    @property
    def is_pipeline(self) -> bool:
        return not self.files

    def allow_patterns(self) -> list[str]:
        """Files to download: the pipeline's folders (never the root checkpoints) or the named files."""
        if self.files:
            return list(self.files)
        if self.variant:
            # e.g. fp16: the variant weights plus every config/tokenizer file, not the fp32 weights.
            return [
                "model_index.json",
                f"*/*.{self.variant}.safetensors",
                "*/*.json",
                "*/*.txt",
                "*/*.jinja",
                "*/*.model",
            ]
        return ["model_index.json", "*/*"]


@dataclass(frozen=True)
class LoraRef:
    """A LoRA loaded on top of the base pipeline with ``load_lora_weights``."""

    model: ModelRef
    adapter: str
    weight: float = 1.0

    @property
    def weight_name(self) -> str:
        return self.model.files[0]


@dataclass(frozen=True)
class DiffusionPreset(Preset):
    """A :class:`Preset` with what a diffusers pipeline needs to run it.

    ``options`` keys understood by the engines: ``zero_cond_t`` (Qwen-Image-Edit: None keeps the
    checkpoint's setting, True/False forces it), ``user_lora`` (accepts an extra LoRA file from
    the engine option ``lora_path``).
    """

    family: str = ""
    pipeline: str = ""
    base: ModelRef | None = None
    loras: tuple[LoraRef, ...] = ()
    dtype: str = "bfloat16"
    #: Keys overriding the checkpoint's scheduler config (``None``: keep the checkpoint's).
    scheduler: dict[str, Any] | None = None
    #: Extra keyword arguments for every pipeline call (e.g. ``negative_prompt``).
    call: dict[str, Any] = field(default_factory=dict)
    #: Which pipeline argument receives the user's ``guidance``.
    guidance_arg: str = "guidance_scale"
    #: Used when the user writes no instruction.
    default_prompt: str = ""
    #: ``{prompt}`` is replaced by the user's text in regenerate mode.
    regenerate_prompt: str = "{prompt}"
    #: Free VRAM (GiB) each memory policy needs, in order of preference (fastest first).
    vram_gb: dict[str, float] = field(default_factory=dict)

    def models(self) -> list[ModelRef]:
        """Every repository the preset needs, base first."""
        return [m for m in [self.base, *(lora.model for lora in self.loras)] if m is not None]


APACHE = "Apache-2.0"
FLUX_DEV_LICENCE = (
    "FLUX.1 [dev] Non-Commercial License: accept it on the model's Hugging Face page and log in "
    "(`hf auth login` or HF_TOKEN) before downloading"
)
OPENRAIL = "CreativeML Open RAIL++-M"

QWEN_2511 = ModelRef("Qwen/Qwen-Image-Edit-2511", licence=APACHE)
QWEN_2509 = ModelRef("Qwen/Qwen-Image-Edit-2509", licence=APACHE)
REFINE_ANYTHING_LORA = LoraRef(
    ModelRef("limuloo1999/RefineAnything", ("Qwen-Image-Edit-2511-RefineAny.safetensors",), licence=APACHE),
    adapter="refine_anything",
)
LIGHTNING_8 = LoraRef(
    ModelRef(
        "lightx2v/Qwen-Image-Edit-2511-Lightning",
        ("Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors",),
        licence=APACHE,
    ),
    adapter="lightning",
)
LIGHTNING_4 = LoraRef(
    ModelRef(
        "lightx2v/Qwen-Image-Edit-2511-Lightning",
        ("Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",),
        licence=APACHE,
    ),
    adapter="lightning",
)

#: The few-step scheduler the Lightning LoRAs were distilled with (fixed shift of 3).
LIGHTNING_SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "base_shift": math.log(3),
    "max_shift": math.log(3),
    "shift": 1.0,
    "shift_terminal": None,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "invert_sigmas": False,
    "stochastic_sampling": False,
}

MEGAPIXEL = WorkingSize(target_area=1024 * 1024, multiple=16, min_side=256, max_side=2048)
QWEN_CAPS = Capabilities(
    reference=True,
    max_references=1,
    prompt=True,
    regenerate=True,
    seed=True,
    steps=True,
    guidance=True,
    strength=False,
)
QWEN_VRAM = {"gpu": 62.0, "model_offload": 44.0, "quant8": 32.0, "quant4": 20.0, "group_offload": 6.0}
REFINE_PROMPT = "Refine the details of the marked region."
QWEN_REGENERATE = "Regenerate the marked region from scratch so that it shows: {prompt}"
QWEN_CALL = {"negative_prompt": " "}

#: What every Qwen-Image-Edit preset shares.
_QWEN_EDIT_COMMON: dict[str, Any] = dict(
    family="qwen-edit",
    pipeline="QwenImageEditPlusPipeline",
    working=MEGAPIXEL,
    capabilities=QWEN_CAPS,
    call=QWEN_CALL,
    guidance_arg="true_cfg_scale",
    default_prompt=REFINE_PROMPT,
    regenerate_prompt=QWEN_REGENERATE,
    vram_gb=QWEN_VRAM,
)
_REFINE_ANYTHING_COMMON: dict[str, Any] = dict(
    _QWEN_EDIT_COMMON,
    base=QWEN_2511,
    # The authors' pinned environment (diffusers 0.36) predates the 2511 zero-cond-t path and they
    # report colour shifts with other versions, so the LoRA runs as they ran it by default.
    options={"zero_cond_t": False},
)

_PRESET_LIST: list[DiffusionPreset] = [
    DiffusionPreset(
        "refine-anything",
        "RefineAnything on Qwen-Image-Edit-2511, Lightning 8 steps (best detail restoration).",
        loras=(REFINE_ANYTHING_LORA, LIGHTNING_8),
        scheduler=LIGHTNING_SCHEDULER,
        defaults={"steps": 8, "guidance": 1.0},
        **_REFINE_ANYTHING_COMMON,
    ),
    DiffusionPreset(
        "refine-anything-fast",
        "RefineAnything with the 4-step Lightning LoRA (about twice as fast, slightly softer).",
        loras=(REFINE_ANYTHING_LORA, LIGHTNING_4),
        scheduler=LIGHTNING_SCHEDULER,
        defaults={"steps": 4, "guidance": 1.0},
        **_REFINE_ANYTHING_COMMON,
    ),
    DiffusionPreset(
        "refine-anything-full",
        "RefineAnything without Lightning: 28 steps with true CFG 4 (slowest, finest text and hair).",
        loras=(REFINE_ANYTHING_LORA,),
        defaults={"steps": 28, "guidance": 4.0},
        **_REFINE_ANYTHING_COMMON,
    ),
    DiffusionPreset(
        "qwen-image-edit-2511",
        "Qwen-Image-Edit-2511: instruction edits inside the selection; reference as second image.",
        base=QWEN_2511,
        defaults={"steps": 40, "guidance": 4.0},
        options={"zero_cond_t": None},  # the checkpoint's own setting
        **_QWEN_EDIT_COMMON,
    ),
    DiffusionPreset(
        "qwen-image-edit-2509",
        "Qwen-Image-Edit-2509: instruction edits inside the selection; reference as second image.",
        base=QWEN_2509,
        defaults={"steps": 40, "guidance": 4.0},
        options={"zero_cond_t": None},  # the checkpoint's own setting
        **_QWEN_EDIT_COMMON,
    ),
    DiffusionPreset(
        "flux-kontext",
        "FLUX.1-Kontext-dev on the focus crop; accepts a user LoRA (e.g. detail-restoration LoRAs).",
        family="flux-kontext",
        pipeline="FluxKontextPipeline",
        base=ModelRef("black-forest-labs/FLUX.1-Kontext-dev", gated=True, licence=FLUX_DEV_LICENCE),
        working=MEGAPIXEL,
        capabilities=Capabilities(
            prompt=True, regenerate=True, seed=True, steps=True, guidance=True, strength=False
        ),
        guidance_arg="guidance_scale",
        default_prompt="Restore sharp, clean detail in this image without changing its content.",
        regenerate_prompt="Redraw this image so that it shows: {prompt}",
        defaults={"steps": 28, "guidance": 2.5},
        vram_gb={"gpu": 36.0, "model_offload": 26.0, "quant8": 20.0, "quant4": 14.0, "group_offload": 4.0},
        options={"user_lora": True},
    ),
    DiffusionPreset(
        "flux-fill",
        "FLUX.1-Fill-dev: mask-native inpainting of the selection.",
        family="flux-fill",
        pipeline="FluxFillPipeline",
        base=ModelRef("black-forest-labs/FLUX.1-Fill-dev", gated=True, licence=FLUX_DEV_LICENCE),
        working=MEGAPIXEL,
        capabilities=Capabilities(
            prompt=True, regenerate=True, seed=True, steps=True, guidance=True, strength=True
        ),
        guidance_arg="guidance_scale",
        default_prompt="",
        defaults={"steps": 50, "guidance": 30.0, "strength": 1.0},
        vram_gb={"gpu": 36.0, "model_offload": 26.0, "quant8": 20.0, "quant4": 14.0, "group_offload": 4.0},
    ),
    DiffusionPreset(
        "sdxl-inpaint",
        "Stable Diffusion XL inpainting: small and fast, for 8-12 GB GPUs.",
        family="sdxl-inpaint",
        pipeline="StableDiffusionXLInpaintPipeline",
        base=ModelRef("diffusers/stable-diffusion-xl-1.0-inpainting-0.1", variant="fp16", licence=OPENRAIL),
        dtype="float16",
        working=WorkingSize(target_area=1024 * 1024, multiple=8, min_side=512, max_side=2048),
        capabilities=Capabilities(
            prompt=True, regenerate=True, seed=True, steps=True, guidance=True, strength=True
        ),
        call={"negative_prompt": "blurry, low quality, artifacts"},
        guidance_arg="guidance_scale",
        default_prompt="high quality, detailed",
        defaults={"steps": 30, "guidance": 7.5, "strength": 0.99},
        vram_gb={"gpu": 10.0, "model_offload": 6.0, "group_offload": 3.0},
    ),
]

#: Every diffusion preset by name, in order of preference (the first present one is the default).
PRESETS: dict[str, DiffusionPreset] = {p.name: p for p in _PRESET_LIST}


def presets_for(family: str) -> dict[str, DiffusionPreset]:
    """The presets one engine (pipeline family) runs, in table order."""
    return {name: p for name, p in PRESETS.items() if p.family == family}


def engine_for_preset(name: str) -> str:
    """The engine (registry name) that runs a preset; KeyError when unknown."""
    return PRESETS[name].family
