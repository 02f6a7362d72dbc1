"""What every diffusion engine shares: residency, memory policy, progress, cancel, failures.

A family module (``diffusion_qwen_edit`` ...) only says which diffusers pipeline it drives and
how the focus crop, mask and references become that pipeline's arguments. Everything that must
behave the same for every model lives here, so that a preset added to the table gets progress
events, cancel, out-of-memory handling and stage timings for free.

Memory policies (engine option ``memory_policy``, default ``auto``):

``gpu``            every component resident on the GPU in the preset's dtype (fastest)
``model_offload``  whole components move to the GPU only while they run
``quant8/quant4``  transformer and text encoder quantised (bitsandbytes or torchao) + model offload
``group_offload``  diffusers group offloading, leaf level with CUDA streams (slowest, ~4 GB)
``sequential_offload``  layer-by-layer offload (last resort)
``cpu``            float32 on the CPU (no GPU; slow, used by the tests)
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import logging
import time
from typing import Any

import numpy as np

from ...shared.protocol import ErrorCode
from ..errors import Cancelled, EngineError
from .base import Engine, EngineOutput, EngineRequest, RefineParams
from .presets import DiffusionPreset, presets_for

log = logging.getLogger(__name__)

POLICIES = ("gpu", "model_offload", "quant8", "quant4", "group_offload", "sequential_offload", "cpu")
#: Steps between two preview images (engine option ``preview_every``; 0 disables previews).
DEFAULT_PREVIEW_EVERY = 4
PREVIEW_SIDE = 64
_DIFFUSION_MODULES = ("torch", "diffusers", "transformers", "safetensors", "huggingface_hub")


def diffusion_libraries_missing() -> list[str]:
    """The diffusion extra's modules that are not installed (checked without importing them)."""
    return [m for m in _DIFFUSION_MODULES if importlib.util.find_spec(m) is None]


def quantization_backend() -> str | None:
    """``bitsandbytes`` or ``torchao`` when one is installed, else None."""
    for name in ("bitsandbytes", "torchao"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def to_pil(image: np.ndarray):
    """float32 RGB [0,1] (or HxW mask) -> PIL image, rounding once."""
    from PIL import Image

    arr = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """Every selected pixel (any value above 0) becomes 1: models are asked to cover the whole selection."""
    return (np.asarray(mask) > 0).astype(np.float32)


def inpaint_strength(params: RefineParams) -> float:
    """Regenerate starts from pure noise; refine keeps some of the original when strength < 1."""
    if params.mode == "regenerate":
        return 1.0
    return float(min(1.0, max(0.05, params.strength)))


class DiffusionEngine(Engine):
    """A diffusers pipeline family kept resident between jobs. Subclasses set ``name``/``family``
    and the class attributes below; they may extend :meth:`pipeline_inputs` and override the
    ``_extra_components`` / ``_configure`` hooks."""

    name = "diffusion"
    #: The presets table's ``family`` value this engine runs (normally its registry name).
    family = ""
    #: The pipeline attribute holding the denoiser, timed as the denoising stage.
    denoiser_attr = "transformer"
    #: Components quantised by the quant8/quant4 policies (the big ones).
    quantize_components: tuple[str, ...] = ("transformer",)
    #: Mask-native inpainting: the selection goes in as ``mask_image`` and the user's strength
    #: as the denoising strength.
    inpainting = False
    #: The pipeline keeps its latents as packed tokens (FLUX, Qwen): previews unpack them first.
    packed_latents = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.presets: dict[str, DiffusionPreset] = self.make_presets()
        self._pipe: Any = None
        self._loaded: DiffusionPreset | None = None
        self._policy: str | None = None
        self._device: Any = None
        self._dtype: Any = None
        self._free_vram_gb: float | None = None
        self._last: dict[str, Any] = {}

    def make_presets(self) -> dict[str, DiffusionPreset]:
        """The family's table entries, with the engine options' working size and defaults applied.

        Lets a config (or a test) shrink the working area or change the default steps without
        editing the table: ``working``/``defaults`` dicts or the flat ``working_area``,
        ``min_side``, ``max_side`` and ``steps`` keys.
        """
        working = dict(self.options.get("working") or {})
        defaults = dict(self.options.get("defaults") or {})
        # Flat keys for config.toml: ``working_area = 262144`` trades detail for speed.
        for key, field in (
            ("working_area", "target_area"),
            ("min_side", "min_side"),
            ("max_side", "max_side"),
        ):
            if key in self.options:
                working[field] = int(self.options[key])
        if "steps" in self.options:
            defaults["steps"] = int(self.options["steps"])
        out = {}
        for name, preset in presets_for(self.family or self.name).items():
            out[name] = dataclasses.replace(
                preset,
                working=dataclasses.replace(preset.working, **working),
                defaults={**preset.defaults, **defaults},
            )
        return out

    # -- description ---------------------------------------------------------------------------
    def available(self) -> dict[str, Any]:
        from .. import models

        missing_libs = diffusion_libraries_missing()
        present = {
            name: all(models.find_repo(ref, self.options.get("models_dir")) for ref in p.models())
            for name, p in self.presets.items()
        }
        info: dict[str, Any] = {"ok": not missing_libs and any(present.values()), "presets": present}
        if missing_libs:
            info["reason"] = f"missing Python packages {', '.join(missing_libs)}: install touchup[diffusion]"
        elif not any(present.values()):
            first = next(iter(self.presets))
            info["reason"] = f"no weights downloaded; run `{models.download_command(first)}`"
        return info

    def describe(self) -> dict[str, Any]:
        """The base description plus, per preset, its models, dtype and whether they are here,
        so a plugin can mark a preset "not downloaded" and show the command that fixes it."""
        from .. import models

        info = super().describe()
        present = info["available"].get("presets", {})
        for entry in info["presets"]:
            p = self.presets[entry["name"]]
            entry["models"] = [m.repo for m in p.models()]
            entry["dtype"] = p.dtype
            entry["present"] = bool(present.get(p.name))
            entry["download"] = models.download_command(p.name)
        return info

    def status(self) -> dict[str, Any]:
        return {
            "loaded": self._pipe is not None,
            "preset": self._loaded.name if self._loaded else None,
            "memory_policy": self._policy,
            "device": str(self._device) if self._device is not None else None,
            "dtype": str(self._dtype).replace("torch.", "") if self._dtype is not None else None,
            "free_vram_gb_at_load": self._free_vram_gb,
            "last": dict(self._last),
        }

    # -- family hooks ----------------------------------------------------------------------------
    def pipeline_inputs(
        self,
        preset: DiffusionPreset,
        crop: np.ndarray,
        mask: np.ndarray,
        references: list[np.ndarray],
        prompt: str,
        params: RefineParams,
    ) -> dict[str, Any]:
        """The pipeline keyword arguments that carry the images and prompt: the crop and the
        prompt, plus the binary selection and strength for inpainting pipelines."""
        inputs: dict[str, Any] = {"image": to_pil(crop), "prompt": prompt}
        if self.inpainting:
            inputs.update(mask_image=to_pil(binary_mask(mask)), strength=inpaint_strength(params))
        return inputs

    def _extra_components(self, preset: DiffusionPreset, folder: Any, dtype: Any) -> dict[str, Any]:
        """Components to pass to ``from_pretrained`` instead of letting it load them."""
        return {}

    def _configure(self, pipe: Any, preset: DiffusionPreset) -> None:
        """Model options from the preset (e.g. Qwen's ``zero_cond_t``), applied after loading."""

    def _unpack_latents(self, pipe: Any, latents: Any, height: int, width: int) -> Any:
        """Latents as (B, C, h, w) for the preview."""
        if self.packed_latents:
            return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        return latents

    # -- lifecycle -------------------------------------------------------------------------------
    def _torch(self):
        missing = diffusion_libraries_missing()
        if missing:
            raise EngineError(
                f"the diffusion engines need {', '.join(missing)}: install touchup[diffusion]",
                code=ErrorCode.ENGINE_FAILED,
            )
        import torch

        return torch

    def _pick_device(self, torch: Any) -> Any:
        wanted = str(self.options.get("device", "auto"))
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(
                "device 'cuda' was asked for but no CUDA GPU is visible", code=ErrorCode.ENGINE_FAILED
            )
        return torch.device(wanted)

    def choose_policy(self, preset: DiffusionPreset, device: Any, free_gb: float | None) -> str:
        """The memory policy for this load: forced by config, else the fastest that fits."""
        forced = str(self.options.get("memory_policy", "auto"))
        if device.type == "cpu":
            return "cpu"
        if forced != "auto":
            if forced not in POLICIES or forced == "cpu":
                raise EngineError(
                    f"unknown memory_policy '{forced}' in [engines.{self.name}]; "
                    f"use one of auto, {', '.join(POLICIES[:-1])}",
                    code=ErrorCode.BAD_PARAMS,
                )
            if forced.startswith("quant") and quantization_backend() is None:
                raise EngineError(
                    f"memory_policy '{forced}' needs bitsandbytes or torchao: pip install bitsandbytes",
                    code=ErrorCode.BAD_PARAMS,
                )
            return forced
        for policy, need in preset.vram_gb.items():
            if policy.startswith("quant") and quantization_backend() is None:
                continue
            if free_gb is None or free_gb >= need:
                return policy
        return "sequential_offload"

    def load(self, preset: str | None = None) -> None:
        """Load the preset's pipeline (unloading another preset first). Offline: local files only."""
        from .. import models

        p = self.preset(preset)
        if self._pipe is not None and self._loaded is not None and self._loaded.name == p.name:
            return
        self.unload()
        torch = self._torch()
        located = models.resolve(p, self.options.get("models_dir"))
        device = self._pick_device(torch)
        free_gb = None
        if device.type == "cuda":
            free_gb = torch.cuda.mem_get_info(device)[0] / 2**30
        policy = self.choose_policy(p, device, free_gb)
        dtype = (
            torch.float32 if device.type == "cpu" else getattr(torch, str(self.options.get("dtype", p.dtype)))
        )
        started = time.perf_counter()
        try:
            pipe = self._build(p, located, device, dtype, policy)
        except torch.OutOfMemoryError:
            self._free_memory()
            raise EngineError(
                f"out of GPU memory while loading '{p.name}' with memory policy '{policy}'"
                f"{self._free_text(free_gb)}; {self._advice(p, policy)}",
                code=ErrorCode.OUT_OF_MEMORY,
            ) from None
        except (EngineError, Cancelled):
            self._free_memory()
            raise
        except Exception as exc:
            self._free_memory()
            raise EngineError(
                f"the model files of '{p.name}' could not be loaded ({type(exc).__name__}: {exc}); "
                f"run `touchup models verify {p.name}`",
                code=ErrorCode.MODEL_BROKEN,
                detail=str(located[0].folder),
            ) from None
        self._pipe, self._loaded, self._policy = pipe, p, policy
        self._device, self._dtype, self._free_vram_gb = device, dtype, free_gb
        log.info("loaded %s (%s, %s) in %.1fs", p.name, policy, dtype, time.perf_counter() - started)

    def _build(self, p: DiffusionPreset, located: list[Any], device: Any, dtype: Any, policy: str) -> Any:
        import diffusers

        base = located[0]
        cls = getattr(diffusers, p.pipeline)
        from diffusers.pipelines import pipeline_utils

        # Newer diffusers take ``dtype`` and deprecate ``torch_dtype``; older ones know only the latter.
        dtype_key = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
        kwargs: dict[str, Any] = {dtype_key: dtype, "local_files_only": True, "use_safetensors": True}
        if p.base is not None and p.base.variant:
            kwargs["variant"] = p.base.variant
        if policy.startswith("quant"):
            kwargs["quantization_config"] = self._quantization_config(policy, dtype)
        kwargs.update(self._extra_components(p, base.folder, dtype))
        pipe = cls.from_pretrained(str(base.folder), **kwargs)
        if p.scheduler:
            pipe.scheduler = type(pipe.scheduler).from_config({**dict(pipe.scheduler.config), **p.scheduler})
        self._configure(pipe, p)
        names, weights = [], []
        for lora, loc in zip(p.loras, located[1:], strict=True):
            pipe.load_lora_weights(str(loc.folder), weight_name=lora.weight_name, adapter_name=lora.adapter)
            names.append(lora.adapter)
            weights.append(lora.weight)
        user_lora = self.options.get("lora_path")
        if user_lora and p.options.get("user_lora"):
            from pathlib import Path

            path = Path(str(user_lora)).expanduser()
            if path.suffix != ".safetensors" or not path.is_file():
                raise EngineError(
                    f"lora_path must be an existing .safetensors file (got {path}); pickle LoRAs are refused",
                    code=ErrorCode.MODEL_BROKEN,
                )
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="user")
            names.append("user")
            weights.append(float(self.options.get("lora_scale", 1.0)))
        if names:
            pipe.set_adapters(names, adapter_weights=weights)
        self._place(pipe, device, policy)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _quantization_config(self, policy: str, dtype: Any) -> Any:
        from diffusers.quantizers import PipelineQuantizationConfig

        components = list(self.quantize_components)
        if quantization_backend() == "bitsandbytes":
            if policy == "quant4":
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
        kind = "int4_weight_only" if policy == "quant4" else "int8_weight_only"
        return PipelineQuantizationConfig(
            quant_backend="torchao", quant_kwargs={"quant_type": kind}, components_to_quantize=components
        )

    def _place(self, pipe: Any, device: Any, policy: str) -> None:
        if policy in ("cpu", "gpu"):
            pipe.to(device)
        elif policy in ("model_offload", "quant8", "quant4"):
            pipe.enable_model_cpu_offload(device=device)
        elif policy == "group_offload":
            pipe.enable_group_offload(
                onload_device=device, offload_device="cpu", offload_type="leaf_level", use_stream=True
            )
        elif policy == "sequential_offload":
            pipe.enable_sequential_cpu_offload(device=device)

    def unload(self) -> None:
        if self._pipe is None:
            return
        pipe, self._pipe, self._loaded = self._pipe, None, None
        with contextlib.suppress(Exception):  # hooks may be half-installed after a failed load
            pipe.remove_all_hooks()
        del pipe
        self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        if importlib.util.find_spec("torch") is None:
            return
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- running ---------------------------------------------------------------------------------
    def refine(self, request: EngineRequest) -> EngineOutput:
        crop, mask, references, prompt, params = (
            request.crop,
            request.mask,
            list(request.references),
            request.prompt,
            request.params,
        )
        on_progress, is_cancelled = request.on_progress, request.is_cancelled
        p = self.preset(params.preset) if params.preset else (self._loaded or self.preset(None))
        self.load(p.name)
        torch = self._torch()
        pipe = self._pipe
        height, width = crop.shape[:2]
        regenerate = params.mode == "regenerate"
        text = (prompt or "").strip() or p.default_prompt
        if regenerate:
            text = p.regenerate_prompt.format(prompt=text)
        steps = int(params.steps or p.defaults.get("steps", 20))
        guidance = params.guidance if params.guidance is not None else p.defaults.get("guidance")
        kwargs: dict[str, Any] = dict(p.call)
        kwargs.update(self.pipeline_inputs(p, crop, mask, references, text, params))
        kwargs.update(
            num_inference_steps=steps, height=height, width=width, output_type="np", return_dict=True
        )
        if guidance is not None:
            kwargs[p.guidance_arg] = float(guidance)
            if p.guidance_arg == "true_cfg_scale" and guidance <= 1.0:
                kwargs.pop("negative_prompt", None)  # no CFG pass: the negative prompt would be unused
        gen_device = "cuda" if self._device.type == "cuda" else "cpu"
        kwargs["generator"] = torch.Generator(gen_device).manual_seed(int(params.seed))

        preview_every = int(self.options.get("preview_every", DEFAULT_PREVIEW_EVERY))
        cuda = self._device.type == "cuda"
        marks: dict[str, float] = {}
        step_times: list[float] = []

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize(self._device)

        def first_denoiser_call(_module: Any, _args: Any) -> None:
            if "denoise_start" not in marks:
                sync()
                marks["denoise_start"] = time.perf_counter()

        def on_step_end(pipeline: Any, index: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            sync()
            step_times.append(time.perf_counter())
            total = int(getattr(pipeline, "_num_timesteps", steps) or steps)
            if is_cancelled():
                raise Cancelled()
            preview = None
            step = index + 1
            if preview_every > 0 and step < total and step % preview_every == 0 and "latents" in tensors:
                preview = self._preview(pipeline, tensors["latents"], height, width)
            on_progress("denoise", step, total, preview)
            return {}

        kwargs["callback_on_step_end"] = on_step_end
        if is_cancelled():
            raise Cancelled()
        denoiser = getattr(pipe, self.denoiser_attr)
        hook = denoiser.register_forward_pre_hook(first_denoiser_call)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self._device)
        sync()
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                out = pipe(**kwargs)
            sync()
        except torch.OutOfMemoryError:
            self._after_failure(pipe)
            raise EngineError(
                f"out of GPU memory refining a {width}x{height} crop with '{p.name}' under memory policy "
                f"'{self._policy}'; {self._advice(p, self._policy or 'gpu')}",
                code=ErrorCode.OUT_OF_MEMORY,
            ) from None
        except Cancelled:
            self._after_failure(pipe)
            raise
        finally:
            hook.remove()
        end = time.perf_counter()
        image = np.asarray(out.images[0], dtype=np.float32)
        if image.shape[:2] != (height, width):
            import cv2

            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
        # diffusers hands back an NHWC view of an NCHW tensor: make it a plain C-ordered array.
        image = np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)
        last_step = step_times[-1] if step_times else end
        denoise_start = marks.get("denoise_start", start)
        timings = {
            "condition_encode": denoise_start - start,
            "denoise": last_step - denoise_start,
            "vae_decode": end - last_step,
            "pipeline": end - start,
        }
        meta: dict[str, Any] = {
            "engine": self.name,
            "preset": p.name,
            "memory_policy": self._policy,
            "device": str(self._device),
            "steps": len(step_times),
            "seed": int(params.seed),
            "prompt": text,
            "timings": timings,
        }
        if cuda:
            meta["peak_vram_gb"] = torch.cuda.max_memory_allocated(self._device) / 2**30
        self._last = {k: meta[k] for k in ("preset", "steps", "timings") if k in meta}
        # Inpainting models take strength as their denoising strength; paste-back then must not
        # weaken the blend by the same factor a second time.
        return EngineOutput(image, strength_applied="strength" in kwargs, meta=meta)

    def _after_failure(self, pipe: Any) -> None:
        """Drop the activations of an aborted run; the weights stay resident for the next job."""
        with contextlib.suppress(Exception):
            pipe.maybe_free_model_hooks()
        self._free_memory()

    def _preview(self, pipe: Any, latents: Any, height: int, width: int) -> np.ndarray | None:
        """A rough, cheap look at the current latents (three channels stretched to [0,1])."""
        try:
            lat = self._unpack_latents(pipe, latents, height, width)
            if lat.ndim == 5:
                lat = lat[:, :, 0]
            x = lat[0, :3].float().cpu().numpy().transpose(1, 2, 0)
            if x.shape[2] < 3:
                x = np.repeat(x[:, :, :1], 3, axis=2)
            lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
            x = (x - lo) / np.maximum(hi - lo, 1e-6)
            scale = PREVIEW_SIDE / max(x.shape[:2])
            if scale < 1:
                import cv2

                x = cv2.resize(
                    x,
                    (max(1, round(x.shape[1] * scale)), max(1, round(x.shape[0] * scale))),
                    interpolation=cv2.INTER_AREA,
                )
            return np.ascontiguousarray(x, dtype=np.float32)
        except Exception:  # a preview must never fail a job
            log.debug("preview failed", exc_info=True)
            return None

    # -- messages --------------------------------------------------------------------------------
    @staticmethod
    def _free_text(free_gb: float | None) -> str:
        return f" ({free_gb:.1f} GiB free at load)" if free_gb is not None else ""

    def _advice(self, p: DiffusionPreset, policy: str) -> str:
        order = [x for x in POLICIES if x != "cpu"]
        lighter = order[order.index(policy) + 1 :] if policy in order else []
        if lighter:
            return (
                f'set memory_policy = "{lighter[0]}" under [engines.{self.name}] in config.toml, '
                "close other programs using the GPU, or use a smaller selection"
            )
        return "use a lighter preset (e.g. sdxl-inpaint) or a smaller selection"
