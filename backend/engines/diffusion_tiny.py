"""Tiny random-initialised stand-ins for every preset's weights, laid out like the HF cache.

They let the real loading code (``from_pretrained``, ``load_lora_weights``, the cache lookup,
the safetensors checks) and the whole refine path run on a CPU in seconds, with no hub: CI and
``touchup bench speed --tiny`` use them. Architectures follow diffusers' own pipeline tests;
tokenizers and processors are built locally (byte-level vocabularies), never downloaded. The
images they produce are noise -- only shapes, timing and plumbing are meaningful.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .presets import PRESETS, LoraRef, ModelRef

QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2 convention)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    symbols, shifted = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def qwen_tokenizer() -> Any:
    from transformers import Qwen2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    return tok


def clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> Any:
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(32, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def clip_text_config(**extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        hidden_act="gelu",
        projection_dim=32,
        **extra,
    )


# -- pipelines -------------------------------------------------------------------------------


def qwen_edit_pipeline(zero_cond_t: bool = False) -> Any:
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    from .diffusion_qwen_edit import processor_without_video

    torch.manual_seed(0)
    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
        zero_cond_t=zero_cond_t,
    )
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    rope = {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default", "rope_theta": 1000000.0}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": rope,
            "rope_parameters": rope,
            "rope_theta": 1000000.0,
            "vocab_size": len(tok),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=16,
        vocab_size=len(tok),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    processor = processor_without_video(Qwen2VLImageProcessor(), tok)
    return QwenImageEditPlusPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        processor=processor,
        transformer=transformer,
    )


def _flux_text_parts() -> dict[str, Any]:
    import torch
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=104, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, decoder_start_token_id=0
        )
    )
    return {
        "text_encoder": CLIPTextModel(clip_text_config()),
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": t5,
        "tokenizer_2": t5_tokenizer(),
    }


def _flux_vae(latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def _flux_transformer(in_channels: int, out_channels: int | None = None) -> Any:
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )


def flux_kontext_pipeline() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline

    parts = _flux_text_parts()
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(1),
        transformer=_flux_transformer(4),
        image_encoder=None,
        feature_extractor=None,
        **parts,
    )


def flux_fill_pipeline() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline

    parts = _flux_text_parts()
    return FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(2),
        transformer=_flux_transformer(20, 8),
        **parts,
    )


def sdxl_inpaint_pipeline() -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 size/crop ids x 8 + 32 pooled text
        cross_attention_dim=64,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=128,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    return StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(clip_text_config()),
        tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config()),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )


#: Tiny pipeline builder per base repository of the preset table.
BUILDERS = {
    "Qwen/Qwen-Image-Edit-2511": lambda: qwen_edit_pipeline(zero_cond_t=True),
    "Qwen/Qwen-Image-Edit-2509": lambda: qwen_edit_pipeline(zero_cond_t=False),
    "black-forest-labs/FLUX.1-Kontext-dev": flux_kontext_pipeline,
    "black-forest-labs/FLUX.1-Fill-dev": flux_fill_pipeline,
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": sdxl_inpaint_pipeline,
}

#: A Qwen2-VL video processor config as real checkpoints ship it (read only with torchvision).
_QWEN_VIDEO_PROCESSOR = {
    "video_processor_type": "Qwen2VLVideoProcessor",
    "processor_class": "Qwen2VLProcessor",
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
}


def save_pipeline(pipe: Any, folder: Path, variant: str | None = None) -> None:
    """``save_pretrained`` plus, for Qwen, the processor folder laid out as the real repositories."""
    pipe.save_pretrained(str(folder), safe_serialization=True, variant=variant)
    processor = getattr(pipe, "processor", None)
    if processor is not None:
        proc = folder / "processor"
        shutil.rmtree(proc, ignore_errors=True)
        proc.mkdir()
        processor.tokenizer.save_pretrained(str(proc))
        processor.image_processor.save_pretrained(str(proc))
        config = json.loads((proc / "preprocessor_config.json").read_text())
        config.update(
            {"image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}
        )
        (proc / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
        (proc / "video_preprocessor_config.json").write_text(json.dumps(_QWEN_VIDEO_PROCESSOR, indent=2))
        # The stand-in processor class must not leak into the index: real repositories name the stock one.
        index = json.loads((folder / "model_index.json").read_text())
        index["processor"] = ["transformers", "Qwen2VLProcessor"]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def make_lora(pipe: Any, folder: Path, weight_name: str, rank: int = 4, seed: int = 0) -> Path:
    """A small random LoRA for ``pipe``'s denoiser, made with peft and saved as the pipeline's loader does."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    denoiser = pipe.transformer
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    denoiser.add_adapter(config, adapter_name="tiny")
    state = get_peft_model_state_dict(denoiser, adapter_name="tiny")
    denoiser.delete_adapters("tiny")
    folder.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(str(folder), transformer_lora_layers=state, weight_name=weight_name)
    return folder / weight_name


# -- HF cache layout -------------------------------------------------------------------------


def _blob_name(path: Path) -> str:
    """What the hub names a blob: the SHA-256 for large (LFS) files, the git SHA-1 for the rest."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_cache(cache_dir: Path, repo: str, source: Path, commit: str | None = None) -> Path:
    """Lay ``source``'s files out as ``models--org--name/{blobs,snapshots/<commit>,refs/main}``."""
    from ..models import repo_folder_name

    repo_dir = Path(cache_dir) / repo_folder_name(repo)
    commit = commit or hashlib.sha1(repo.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        blob = repo_dir / "blobs" / _blob_name(path)
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def repos_for(presets: Iterable[str]) -> tuple[list[ModelRef], list[LoraRef]]:
    """The distinct base repositories and LoRA files the named presets need."""
    bases: dict[str, ModelRef] = {}
    loras: dict[tuple[str, str], LoraRef] = {}
    for name in presets:
        p = PRESETS[name]
        if p.base is not None:
            bases[p.base.repo] = p.base
        for lora in p.loras:
            loras[(lora.model.repo, lora.weight_name)] = lora
    return list(bases.values()), list(loras.values())


def build_tiny_hub(
    cache_dir: Path, presets: Iterable[str] | None = None, staging: Path | None = None
) -> Path:
    """Write tiny weights for ``presets`` (default: all) into an HF-cache-layout ``cache_dir``."""
    names = list(presets or PRESETS)
    bases, loras = repos_for(names)
    staging = Path(staging or tempfile.mkdtemp(prefix="touchup-tiny-"))
    built: dict[str, Any] = {}
    for ref in bases:
        pipe = BUILDERS[ref.repo]()
        built[ref.repo] = pipe
        folder = staging / ref.repo
        save_pipeline(pipe, folder, variant=ref.variant)
        add_to_cache(cache_dir, ref.repo, folder)
    by_repo: dict[str, list[LoraRef]] = {}
    for lora in loras:
        by_repo.setdefault(lora.model.repo, []).append(lora)
    for repo, items in by_repo.items():
        folder = staging / repo
        for i, lora in enumerate(items):
            # LoRAs are made for the base of the first preset using them.
            base = next(p.base.repo for p in PRESETS.values() if lora in p.loras and p.base is not None)
            pipe = built.get(base) or BUILDERS[base]()
            built[base] = pipe
            make_lora(pipe, folder, lora.weight_name, seed=i + 1)
        add_to_cache(cache_dir, repo, folder)
    return Path(cache_dir)


def patch_for_tiny_runs(set_attr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Shrink the Qwen-Image-Edit pipeline's fixed ~1-megapixel condition sizes for tiny models.

    The pipeline resizes every condition image to ~1 MP (VAE) and 384x384 (vision encoder)
    regardless of the requested size; with tiny models that dominates a CPU run. Tests pass
    ``monkeypatch.setattr`` so the sizes are restored after each test.
    """
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as mod

    set_attr(mod, "VAE_IMAGE_SIZE", TINY_VAE_IMAGE_SIZE)
    set_attr(mod, "CONDITION_IMAGE_SIZE", TINY_CONDITION_IMAGE_SIZE)


TINY_VAE_IMAGE_SIZE = 64 * 64
TINY_CONDITION_IMAGE_SIZE = 56 * 56
#: Engine options that make presets run on tiny models (working area, steps).
TINY_OPTIONS: dict[str, Any] = {
    "device": "cpu",
    "working": {"target_area": 64 * 64, "min_side": 32, "max_side": 128},
    "defaults": {"steps": 2},
    "preview_every": 1,
}
