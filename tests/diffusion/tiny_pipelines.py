"""Tiny random-initialised stand-ins for every preset's weights, laid out like the HF cache.

They let the real loading code (``from_pretrained``, ``load_lora_weights``, the cache lookup,
the safetensors checks) and the whole refine path run on a CPU in seconds, with no hub: the
tests and ``scripts/gpu_check.sh --tiny`` use them. Tokenizers and processors are built locally
(byte-level vocabularies), never downloaded. The images they produce are noise -- only shapes,
calls, timing and plumbing are meaningful. Test code only: the product never builds fake models.
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

from touchup.backend.engines.diffusion.presets import PRESETS, LoraRef, ModelRef

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


#: The real configuration files of every base repository (see configs/SOURCES.md).
CONFIGS = Path(__file__).parent / "configs"


def real_config(repo: str, component: str) -> dict[str, Any]:
    """A vendored real config: ``model_index.json`` for ``component=""``, else the component's
    ``config.json`` (``scheduler_config.json`` for the scheduler)."""
    if not component:
        return json.loads((CONFIGS / repo / "model_index.json").read_text())
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((CONFIGS / repo / component / name).read_text())


def _diffusers_model(repo: str, component: str, **shrink: Any) -> Any:
    """A diffusers model of the real class and config, with only the sizes in ``shrink`` changed."""
    import diffusers
    import torch

    config = real_config(repo, component)
    cls = getattr(diffusers, config["_class_name"])
    torch.manual_seed(0)
    return cls.from_config({**config, **shrink})


def _scheduler(repo: str) -> Any:
    import diffusers

    config = real_config(repo, "scheduler")
    return getattr(diffusers, config["_class_name"]).from_config(config)


def _transformers_config(repo: str, component: str, **shrink: Any) -> dict[str, Any]:
    config = real_config(repo, component)
    return {k: v for k, v in {**config, **shrink}.items() if k not in ("architectures", "torch_dtype")}


def clip_text(repo: str, component: str, tokenizer: Any) -> Any:
    """The repository's CLIP text encoder class and config, shrunk, with the local tokenizer's ids."""
    import torch
    import transformers

    config = real_config(repo, component)
    cls = getattr(transformers, config["architectures"][0])
    shrink = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return cls(transformers.CLIPTextConfig(**_transformers_config(repo, component, **shrink)))


# -- pipelines -------------------------------------------------------------------------------


def qwen_edit_pipeline(repo: str) -> Any:
    """QwenImageEditPlusPipeline from ``repo``'s real configs with the sizes shrunk.

    Kept as they are: every class, the scheduler config, patch size, the VAE's downsampling
    (so the pipeline's scale factor is the real 8), ``zero_cond_t``, guidance embedding flags.
    """
    import torch
    from diffusers import QwenImageEditPlusPipeline
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    from touchup.backend.engines.diffusion.qwen_edit import processor_without_video

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    z = 4
    vae_real = real_config(repo, "vae")
    vae = _diffusers_model(
        repo,
        "vae",
        base_dim=8,
        z_dim=z,
        num_res_blocks=1,
        latents_mean=vae_real["latents_mean"][:z],
        latents_std=vae_real["latents_std"][:z],
    )
    transformer = _diffusers_model(
        repo,
        "transformer",
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        axes_dims_rope=[8, 4, 4],
        in_channels=4 * z,
        out_channels=z,
    )
    real = real_config(repo, "text_encoder")
    rope = {**real["rope_scaling"], "mrope_section": [1, 1, 2], "rope_theta": real["rope_theta"]}
    text_keys = ("hidden_act", "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings")
    text_config = {k: real[k] for k in text_keys}
    text_config.update(
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_scaling=rope,
        rope_parameters=rope,
        vocab_size=len(tok),
    )
    vision = {
        **real["vision_config"],
        "depth": 2,
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_heads": 2,
        "out_hidden_size": 16,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision,
        hidden_size=16,
        vocab_size=len(tok),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    processor = processor_without_video(Qwen2VLImageProcessor(), tok)
    return QwenImageEditPlusPipeline(
        scheduler=_scheduler(repo),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        processor=processor,
        transformer=transformer,
    )


def _flux_parts(repo: str, **transformer_shrink: Any) -> dict[str, Any]:
    """Scheduler, VAE, both text encoders and the transformer of a FLUX.1 repository, shrunk.

    The latent channels (16), the transformer's input channels (64, or 384 for Fill) and the
    VAE's four resolution levels (scale factor 8) are the real ones.
    """
    import torch
    from transformers import T5Config, T5EncoderModel

    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    t5_shrink = dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4)
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(**_transformers_config(repo, "text_encoder_2", **t5_shrink, vocab_size=len(t5_tok)))
    )
    return {
        "scheduler": _scheduler(repo),
        "vae": _diffusers_model(
            repo, "vae", block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4
        ),
        "text_encoder": clip_text(repo, "text_encoder", clip_tok),
        "tokenizer": clip_tok,
        "text_encoder_2": t5,
        "tokenizer_2": t5_tok,
        "transformer": _diffusers_model(
            repo,
            "transformer",
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            **transformer_shrink,
        ),
    }


def flux_kontext_pipeline(repo: str) -> Any:
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline(image_encoder=None, feature_extractor=None, **_flux_parts(repo))


def flux_fill_pipeline(repo: str) -> Any:
    from diffusers import FluxFillPipeline

    return FluxFillPipeline(**_flux_parts(repo))


def sdxl_inpaint_pipeline(repo: str) -> Any:
    """The SDXL inpainting pipeline with its real 9-channel UNet input, shrunk."""
    from diffusers import StableDiffusionXLInpaintPipeline

    index = real_config(repo, "")
    tok = clip_tokenizer()
    unet = _diffusers_model(
        repo,
        "unet",
        block_out_channels=[32, 64],
        layers_per_block=1,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        attention_head_dim=[2, 4],
        transformer_layers_per_block=[1, 1],
        cross_attention_dim=64,  # the two text encoders' hidden sizes, concatenated
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,  # 6 size/crop ids x 8 + 32 pooled text
        sample_size=16,
    )
    vae = _diffusers_model(
        repo, "vae", block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4, sample_size=64
    )
    return StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=clip_text(repo, "text_encoder", tok),
        tokenizer=tok,
        text_encoder_2=clip_text(repo, "text_encoder_2", tok),
        tokenizer_2=tok,
        unet=unet,
        scheduler=_scheduler(repo),
        requires_aesthetics_score=index["requires_aesthetics_score"],
        force_zeros_for_empty_prompt=index["force_zeros_for_empty_prompt"],
    )


#: Tiny pipeline builder per base repository of the preset table.
BUILDERS: dict[str, Callable[[str], Any]] = {
    "Qwen/Qwen-Image-Edit-2511": qwen_edit_pipeline,
    "Qwen/Qwen-Image-Edit-2509": qwen_edit_pipeline,
    "black-forest-labs/FLUX.1-Kontext-dev": flux_kontext_pipeline,
    "black-forest-labs/FLUX.1-Fill-dev": flux_fill_pipeline,
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": sdxl_inpaint_pipeline,
}


def build(repo: str) -> Any:
    return BUILDERS[repo](repo)


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
    from touchup.backend.models import repo_folder_name

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
        pipe = build(ref.repo)
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
            pipe = built.get(base) or build(base)
            built[base] = pipe
            make_lora(pipe, folder, lora.weight_name, seed=i + 1)
        add_to_cache(cache_dir, repo, folder)
    return Path(cache_dir)


#: Tiny models run at this area where the real pipelines work at one megapixel.
TINY_AREA = 64 * 64
TINY_CONDITION_AREA = 160 * 160


def patch_for_tiny_runs(set_attr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Scale the Qwen-Image-Edit pipeline's fixed sizes down for tiny models.

    The pipeline sizes its output and every condition image by ``calculate_dimensions`` at
    fixed areas (1 MP for the VAE and the output, 384x384 for the vision encoder); with tiny
    models that dominates a CPU run. All its areas are scaled by the same factor, so the size
    rules (multiples of 32, output grid = condition grid) stay those of the real pipeline.
    Tests pass ``monkeypatch.setattr`` so the function is restored after each test.
    """
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as mod

    real = getattr(mod.calculate_dimensions, "real", mod.calculate_dimensions)

    def scaled(target_area: float, ratio: float) -> tuple[int, int]:
        if target_area == mod.CONDITION_IMAGE_SIZE:  # the vision encoder's copy: its own processor
            return real(TINY_CONDITION_AREA, ratio)  # resizes it again; keep both sides >= 32
        return real(target_area * TINY_AREA / (1024 * 1024), ratio)

    scaled.real = real  # type: ignore[attr-defined]
    set_attr(mod, "calculate_dimensions", scaled)


def tiny_options(family: str) -> dict[str, Any]:
    """Engine options that make a family's presets run on tiny models (working area, steps)."""
    return {
        "device": "cpu",
        "working": {"target_area": TINY_AREA, "min_side": 32, "max_side": 128},
        "presets": {name: {"steps": 2} for name, p in PRESETS.items() if p.family == family},
        "preview_every": 1,
    }
