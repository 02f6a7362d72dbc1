"""The diffusion preset table: every model configuration Touchup can run, as data.

A preset names the weights it needs (a base pipeline repository plus LoRAs), the dtype, the
working area and size multiple of the focus crop, default steps/guidance, what the plugins may
offer (capabilities), the scheduler override, model options and the sizes the memory planner
needs. Engines read entries from this table; adding a model is adding an entry, not a branch.
Nothing here imports torch, so the backend can describe presets (``hello``, ``touchup models
list``, ``touchup models plan``) without the diffusion extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..base import Capabilities, Preset, SizeRule, WorkingSize

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


class Role(str, Enum):
    """What a pipeline component does; the memory planner places components by role."""

    DENOISER = "denoiser"
    TEXT_ENCODER = "text_encoder"
    VAE = "vae"


@dataclass(frozen=True)
class Component:
    """One weight-carrying component of a pipeline and its parameter count.

    The counts are those of the real architectures, computed from the repositories' configs
    on the meta device (a test re-computes them from the vendored configs).
    """

    name: str
    role: Role
    params: int


@dataclass(frozen=True)
class MemoryProfile:
    """What a preset's run needs besides its weights, at the preset's working area (GiB).

    ``activations``: the denoiser's working memory for one step; ``vae_decode`` /
    ``vae_decode_tiled``: the peak of decoding the result without / with VAE tiling.
    Estimates, refined by ``scripts/gpu_check.sh`` on real hardware.
    """

    components: tuple[Component, ...]
    activations: float
    vae_decode: float
    vae_decode_tiled: float

    def by_role(self, role: Role) -> list[Component]:
        return [c for c in self.components if c.role == role]


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
    #: The dtype on GPUs without bfloat16 (before Ampere); None: none works, bfloat16 is emulated.
    fallback_dtype: str | None = None
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
    #: The selection goes to the model as a last black-and-white image (RefineAnything was
    #: trained to read it; plain Qwen-Image-Edit was not, so it never sees it).
    spatial_image: bool = False
    #: Inpainting pipelines: denoising strength per mode (``None``: not an inpainting preset).
    #: Refine keeps part of the selected content; the user's strength scales it.
    refine_strength: float | None = None
    regenerate_strength: float | None = None
    memory: MemoryProfile | None = None
    #: A generative model's results differ per seed: offer a choice by default.
    variants: int = 4

    @property
    def profile(self) -> MemoryProfile:
        """The memory profile: every table entry has one (``None`` is only the field default)."""
        if self.memory is None:
            raise ValueError(f"preset {self.name!r} has no memory profile")
        return self.memory

    def models(self) -> list[ModelRef]:
        """Every repository the preset needs, base first."""
        return [m for m in [self.base, *(lora.model for lora in self.loras)] if m is not None]


# Parameter counts of the real architectures (tests/diffusion re-computes them from the vendored
# configs on the meta device and fails when they drift).
QWEN_TRANSFORMER_PARAMS = 20_430_401_088
QWEN_TEXT_ENCODER_PARAMS = 8_292_166_656
QWEN_VAE_PARAMS = 126_892_531
FLUX_TRANSFORMER_PARAMS = 11_901_408_320
FLUX_FILL_TRANSFORMER_PARAMS = 11_902_391_360
FLUX_CLIP_PARAMS = 123_060_480
FLUX_T5_PARAMS = 4_762_310_656
FLUX_VAE_PARAMS = 83_819_683
SDXL_UNET_PARAMS = 2_567_478_084
SDXL_CLIP_PARAMS = 123_060_480
SDXL_CLIP_G_PARAMS = 694_659_840
SDXL_VAE_PARAMS = 83_653_863


def flux_memory(transformer_params: int) -> MemoryProfile:
    """FLUX.1 [dev] variants share the text encoders and VAE."""
    return MemoryProfile(
        components=(
            Component("transformer", Role.DENOISER, transformer_params),
            Component("text_encoder", Role.TEXT_ENCODER, FLUX_CLIP_PARAMS),
            Component("text_encoder_2", Role.TEXT_ENCODER, FLUX_T5_PARAMS),
            Component("vae", Role.VAE, FLUX_VAE_PARAMS),
        ),
        activations=2.0,
        vae_decode=4.0,
        vae_decode_tiled=1.5,
    )


SDXL_MEMORY = MemoryProfile(
    components=(
        Component("unet", Role.DENOISER, SDXL_UNET_PARAMS),
        Component("text_encoder", Role.TEXT_ENCODER, SDXL_CLIP_PARAMS),
        Component("text_encoder_2", Role.TEXT_ENCODER, SDXL_CLIP_G_PARAMS),
        Component("vae", Role.VAE, SDXL_VAE_PARAMS),
    ),
    activations=1.5,
    vae_decode=3.5,
    vae_decode_tiled=1.2,
)

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

#: RefineAnything's scheduler: the one the Lightning LoRAs were distilled with (fixed shift 3).
#: Its reference code builds it for every run, with or without Lightning.
REFERENCE_SCHEDULER: dict[str, Any] = {
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
#: QwenImageEditPlusPipeline resizes every condition image to this rule itself; the crop is made
#: exactly that size so nothing is resampled twice and the output grid is the condition grid.
QWEN_CONDITION_SIZE = WorkingSize(target_area=1024 * 1024, multiple=32, rule=SizeRule.PIPELINE_AREA)
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
REFINE_PROMPT = "Refine the details of the marked region."
QWEN_REGENERATE = "Regenerate the marked region from scratch so that it shows: {prompt}"
#: Plain Qwen-Image-Edit is told about the image alone: the crop is centred on the selection and
#: paste-back keeps only the selection, so no region marker is needed (a drawn marker would be
#: an edit the model keeps, and the mask image is a picture only the RefineAnything LoRA reads).
PLAIN_REFINE_PROMPT = "Refine the details of this image: sharper, cleaner, without changing its content."
PLAIN_REGENERATE = "Change the subject in the middle of this image so that it shows: {prompt}"
QWEN_CALL = {"negative_prompt": " "}
#: Parameter counts from the real configs (Qwen-Image-Edit-2509 and -2511 share them).
QWEN_MEMORY = MemoryProfile(
    components=(
        Component("transformer", Role.DENOISER, QWEN_TRANSFORMER_PARAMS),
        Component("text_encoder", Role.TEXT_ENCODER, QWEN_TEXT_ENCODER_PARAMS),
        Component("vae", Role.VAE, QWEN_VAE_PARAMS),
    ),
    activations=3.0,
    vae_decode=10.0,
    vae_decode_tiled=2.0,
)

#: What every Qwen-Image-Edit preset shares.
_QWEN_EDIT_COMMON: dict[str, Any] = dict(
    family="qwen-edit",
    pipeline="QwenImageEditPlusPipeline",
    working=QWEN_CONDITION_SIZE,
    capabilities=QWEN_CAPS,
    call=QWEN_CALL,
    guidance_arg="true_cfg_scale",
    memory=QWEN_MEMORY,
)
_REFINE_ANYTHING_COMMON: dict[str, Any] = dict(
    _QWEN_EDIT_COMMON,
    base=QWEN_2511,
    scheduler=REFERENCE_SCHEDULER,
    spatial_image=True,
    default_prompt=REFINE_PROMPT,
    regenerate_prompt=QWEN_REGENERATE,
    # The authors' pinned environment (diffusers 0.36) predates the 2511 zero-cond-t path and they
    # report colour shifts with other versions, so the LoRA runs as they ran it by default.
    options={"zero_cond_t": False},
)

_PRESET_LIST: list[DiffusionPreset] = [
    DiffusionPreset(
        "refine-anything",
        "RefineAnything on Qwen-Image-Edit-2511, Lightning 8 steps (best detail restoration).",
        loras=(REFINE_ANYTHING_LORA, LIGHTNING_8),
        defaults={"steps": 8, "guidance": 1.0},
        **_REFINE_ANYTHING_COMMON,
    ),
    DiffusionPreset(
        "refine-anything-fast",
        "RefineAnything with the 4-step Lightning LoRA (about twice as fast, slightly softer).",
        loras=(REFINE_ANYTHING_LORA, LIGHTNING_4),
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
        default_prompt=PLAIN_REFINE_PROMPT,
        regenerate_prompt=PLAIN_REGENERATE,
        **_QWEN_EDIT_COMMON,
    ),
    DiffusionPreset(
        "qwen-image-edit-2509",
        "Qwen-Image-Edit-2509: instruction edits inside the selection; reference as second image.",
        base=QWEN_2509,
        defaults={"steps": 40, "guidance": 4.0},
        options={"zero_cond_t": None},  # the checkpoint's own setting
        default_prompt=PLAIN_REFINE_PROMPT,
        regenerate_prompt=PLAIN_REGENERATE,
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
        fallback_dtype="float16",
        memory=flux_memory(FLUX_TRANSFORMER_PARAMS),
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
        defaults={"steps": 50, "guidance": 30.0},
        # The model was trained to fill from noise; refining starts from the selection noised
        # to 80 %, so its shapes and colours survive.
        refine_strength=0.8,
        regenerate_strength=1.0,
        fallback_dtype="float16",
        memory=flux_memory(FLUX_FILL_TRANSFORMER_PARAMS),
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
        defaults={"steps": 30, "guidance": 7.5},
        # The model card: use strength below 1.0 (at 1.0 the result degrades). Refine keeps the
        # selection's content; regenerate redraws it.
        refine_strength=0.7,
        regenerate_strength=0.99,
        memory=SDXL_MEMORY,
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
