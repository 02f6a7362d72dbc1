"""Loading a preset's pipeline: ``from_pretrained`` offline, quantisation, scheduler, LoRAs, placement.

Each step reads the preset (a table entry) and the memory policy (a :class:`~.memory.PolicySpec`),
so what is loaded, quantised and where it lives is data, not branches per model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....shared.protocol import ErrorCode
from ...errors import EngineError
from .memory import SPECS, Placement, Policy, PolicySpec
from .presets import DiffusionPreset, Role

log = logging.getLogger(__name__)


class QuantisationUnavailable(EngineError):
    """A quantised policy was asked for where bitsandbytes cannot be used."""


def quantization_config(preset: DiffusionPreset, spec: PolicySpec, dtype: Any) -> Any:
    """The ``PipelineQuantizationConfig`` for ``spec`` (None when it quantises nothing).

    bitsandbytes only: it quantises diffusers and transformers components alike from one
    description. (torchao was dropped: its config API changed under diffusers, and a failure
    there read as broken model files.)
    """
    if not spec.needs_quantisation:
        return None
    try:
        from diffusers.quantizers import PipelineQuantizationConfig

        kinds = set(spec.quantise.values())
        if len(kinds) != 1:
            raise ValueError(f"one storage format per policy, got {sorted(kinds)}")
        (kind,) = kinds
        components = [c.name for c in preset.profile.components if c.role in spec.quantise]
        if kind == "nf4":
            return PipelineQuantizationConfig(
                quant_backend="bitsandbytes_4bit",
                quant_kwargs={
                    "load_in_4bit": True,
                    "bnb_4bit_quant_type": "nf4",
                    "bnb_4bit_compute_dtype": dtype,
                },
                components_to_quantize=components,
            )
        return PipelineQuantizationConfig(
            quant_backend="bitsandbytes_8bit",
            quant_kwargs={"load_in_8bit": True},
            components_to_quantize=components,
        )
    except (ImportError, ValueError, TypeError) as exc:
        raise QuantisationUnavailable(
            f"memory policy '{spec.policy.value}' needs bitsandbytes ({type(exc).__name__}: {exc}); "
            "pip install bitsandbytes, or choose a policy without quantisation",
            code=ErrorCode.BAD_PARAMS,
        ) from None


def from_pretrained_kwargs(
    preset: DiffusionPreset, policy: Policy, device: Any, dtype: Any
) -> dict[str, Any]:
    """Keyword arguments of ``from_pretrained``: offline, safetensors only, dtype, variant,
    quantisation, and for the all-on-GPU policy weights loaded straight onto the GPU (so host
    RAM never holds the whole model)."""
    from diffusers.pipelines import pipeline_utils

    # Newer diffusers take ``dtype`` and deprecate ``torch_dtype``; older ones know only the latter.
    dtype_key = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_key: dtype, "local_files_only": True, "use_safetensors": True}
    if preset.base is not None and preset.base.variant:
        kwargs["variant"] = preset.base.variant
    if policy != Policy.CPU:
        quant = quantization_config(preset, SPECS[policy], dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
        elif policy == Policy.GPU and getattr(device, "index", None) in (None, 0):
            kwargs["device_map"] = device.type
    return kwargs


def apply_scheduler(pipe: Any, preset: DiffusionPreset) -> None:
    """Replace the checkpoint's scheduler configuration by the preset's (the reference's)."""
    if preset.scheduler:
        pipe.scheduler = type(pipe.scheduler).from_config({**dict(pipe.scheduler.config), **preset.scheduler})


@dataclass(frozen=True)
class MeanLatents:
    """What diffusers' ``retrieve_latents`` reads when an encoder output has no distribution."""

    latents: Any


def encode_to_mean(pipe: Any) -> None:
    """Make the pipeline encode its condition images to the VAE posterior's mean.

    The inpainting pipelines (FLUX Fill, SDXL inpainting) draw a sample of the posterior from the
    call's generator, so the condition latents depend on the seed and, with one generator per
    image of a batch, only the first image's generator draws them: a batched seed would not
    reproduce its single run. With the mean (what the Kontext and Qwen pipelines use, and within
    the posterior's tiny spread of any sample) the condition is the same for every seed, is
    encoded once per call, and each generator draws only its image's noise.
    """
    vae = getattr(pipe, "vae", None)
    if vae is None or getattr(vae, "_encodes_to_mean", False):
        return
    encode = vae.encode  # the bound method, with its offload hook

    def encode_mean(*args: Any, **kwargs: Any) -> Any:
        out = encode(*args, **kwargs)
        dist = getattr(out, "latent_dist", None)
        return MeanLatents(dist.mode()) if dist is not None else out

    vae.encode = encode_mean
    vae._encodes_to_mean = True


def load_loras(
    pipe: Any, preset: DiffusionPreset, located: list[Any], user_lora: Any, user_scale: float
) -> None:
    """The preset's LoRAs (and the user's, where the preset accepts one), all active."""
    names, weights = [], []
    for lora, loc in zip(preset.loras, located, strict=True):
        pipe.load_lora_weights(str(loc.folder), weight_name=lora.weight_name, adapter_name=lora.adapter)
        names.append(lora.adapter)
        weights.append(lora.weight)
    if user_lora and preset.options.get("user_lora"):
        path = Path(str(user_lora)).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            raise EngineError(
                f"lora_path must be an existing .safetensors file (got {path}); pickle LoRAs are refused",
                code=ErrorCode.MODEL_BROKEN,
            )
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="user")
        names.append("user")
        weights.append(float(user_scale))
    if names:
        pipe.set_adapters(names, adapter_weights=weights)


def place(pipe: Any, preset: DiffusionPreset, policy: Policy, device: Any) -> None:
    """Put each component where the policy says; VAE tiling where it says so."""
    if policy == Policy.CPU:
        pipe.to(device)
        return
    spec = SPECS[policy]
    places = set(spec.place.values())
    if places == {Placement.SWAPPED}:
        pipe.enable_model_cpu_offload(device=device)
    elif places == {Placement.GROUPED}:
        pipe.enable_group_offload(
            onload_device=device,
            offload_device="cpu",
            offload_type="leaf_level",
            use_stream=True,
            low_cpu_mem_usage=True,  # pin each group when it is used, not a copy of everything
        )
    elif places == {Placement.SEQUENTIAL}:
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        from diffusers.hooks import apply_group_offloading

        for comp in preset.profile.components:
            module = getattr(pipe, comp.name, None)
            if module is None:
                continue
            where = spec.place[comp.role]
            if where == Placement.GROUPED:
                apply_group_offloading(
                    module,
                    onload_device=device,
                    offload_device="cpu",
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=True,
                    low_cpu_mem_usage=True,
                )
            elif comp.role not in spec.quantise:  # quantised modules were placed by bitsandbytes
                module.to(device)
    if spec.vae_tiling and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()


def denoiser_name(preset: DiffusionPreset) -> str:
    return next(c.name for c in preset.profile.components if c.role == Role.DENOISER)
