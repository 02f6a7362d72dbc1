"""What every diffusion engine shares: residency, the memory plan, the run, failures.

A family module (``qwen_edit`` ...) only says which presets it runs and how the focus crop, mask
and references become its pipeline's arguments. The preset table (``presets``), the memory
planner (``memory``), loading (``loading``) and the denoising run (``run``) are separate units;
this class ties them together so that a preset added to the table gets progress events,
cancel, out-of-memory handling and stage timings for free.

Engine options (``[engines.<family>]`` in config.toml): ``device``, ``memory_policy`` (``auto``
or a policy of :mod:`.memory`), ``dtype``, ``preview_every``, ``working_area``/``min_side``/
``max_side``, ``models_dir``, ``lora_path``/``lora_scale`` and per-preset defaults::

    [engines.qwen-edit.presets.refine-anything-full]
    steps = 20
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import logging
import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ....shared.protocol import ErrorCode
from ...errors import Cancelled, EngineError
from ..base import Engine, EngineOutput, EngineRequest, RefineParams, SizeRule
from . import loading, memory
from .memory import GPU_POLICIES, Plan, Policy
from .presets import DiffusionPreset, presets_for
from .run import DEFAULT_PREVIEW_EVERY, latent_preview, prompt_encoded_once, run_pipeline

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

_DIFFUSION_MODULES = ("torch", "diffusers", "transformers", "safetensors", "huggingface_hub")


def diffusion_libraries_missing() -> list[str]:
    """The diffusion extra's modules that are not installed (checked without importing them)."""
    return [m for m in _DIFFUSION_MODULES if importlib.util.find_spec(m) is None]


def to_pil(image: np.ndarray) -> Image.Image:
    """float32 RGB [0,1] (or HxW mask) -> PIL image, rounding once."""
    from PIL import Image

    arr = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """Every selected pixel (any value above 0) becomes 1: models are asked to cover the whole selection."""
    return (np.asarray(mask) > 0).astype(np.float32)


def denoise_strength(preset: DiffusionPreset, params: RefineParams) -> float:
    """An inpainting preset's denoising strength: the preset's for the mode, scaled by the user's
    strength in refine mode (so refine keeps part of what is selected, regenerate redraws it)."""
    if params.mode == "regenerate":
        return float(preset.regenerate_strength or 1.0)
    base = preset.refine_strength if preset.refine_strength is not None else 1.0
    return float(min(1.0, max(0.05, base * params.strength)))


class DiffusionEngine(Engine[DiffusionPreset]):
    """A diffusers pipeline family kept resident between jobs. Subclasses set ``name``/``family``
    and may extend :meth:`pipeline_inputs` and the ``_extra_components``/``_configure`` hooks."""

    name = "diffusion"
    #: The presets table's ``family`` value this engine runs (normally its registry name).
    family = ""
    #: The pipeline keeps its latents as packed tokens (FLUX, Qwen): previews unpack them first.
    packed_latents = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.presets: dict[str, DiffusionPreset] = self.make_presets()
        self._pipe: Any = None
        self._loaded: DiffusionPreset | None = None
        self._plan: Plan | None = None
        self._device: Any = None
        self._dtype: Any = None
        self._last: dict[str, Any] = {}

    def make_presets(self) -> dict[str, DiffusionPreset]:
        """The family's table entries with the engine options applied: the working size (flat
        ``working_area``/``min_side``/``max_side`` keys, or a ``working`` table) for every
        preset, and defaults (``steps``, ``guidance``) per preset under ``presets.<name>``."""
        flat = {}
        for key, fld in (("working_area", "target_area"), ("min_side", "min_side"), ("max_side", "max_side")):
            if key in self.options:
                flat[fld] = int(self.options[key])
        working = dict(self.options.get("working") or {})
        per_preset = dict(self.options.get("presets") or {})
        out = {}
        for name, preset in presets_for(self.family or self.name).items():
            # The flat keys leave the Qwen presets alone: their pipeline works at one megapixel
            # whatever it is given, so a smaller crop would only add a resampling.
            sizes = working if preset.working.rule == SizeRule.PIPELINE_AREA else {**flat, **working}
            out[name] = dataclasses.replace(
                preset,
                working=dataclasses.replace(preset.working, **sizes),
                defaults={**preset.defaults, **dict(per_preset.get(name) or {})},
            )
        return out

    def _check_options(self) -> None:
        """Options that would silently change every preset of the family are refused."""
        if "steps" in self.options or "defaults" in self.options:
            example = next(iter(self.presets))
            raise EngineError(
                f"[engines.{self.name}] steps applies to every preset of the engine (a 4-step and a "
                f"40-step preset alike); set it per preset instead: "
                f"[engines.{self.name}.presets.{example}] steps = N",
                code=ErrorCode.BAD_PARAMS,
            )
        unknown = set(self.options.get("presets") or {}) - set(self.presets)
        if unknown:
            raise EngineError(
                f"[engines.{self.name}.presets] names unknown presets {', '.join(sorted(unknown))}; "
                f"this engine has {', '.join(self.presets)}",
                code=ErrorCode.BAD_PARAMS,
            )

    # -- description ---------------------------------------------------------------------------
    def available(self) -> dict[str, Any]:
        from ... import models

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
        from ... import models

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
        plan = self._plan
        return {
            "loaded": self._pipe is not None,
            "preset": self._loaded.name if self._loaded else None,
            "memory_policy": plan.policy.value if plan and plan.policy else None,
            "plan": plan.reason if plan else None,
            "device": str(self._device) if self._device is not None else None,
            "dtype": str(self._dtype).replace("torch.", "") if self._dtype is not None else None,
            "free_vram_gb_at_load": plan.vram_gb if plan else None,
            "last": dict(self._last),
        }

    @property
    def _policy(self) -> str | None:
        return self._plan.policy.value if self._plan and self._plan.policy else None

    # -- family hooks ----------------------------------------------------------------------------
    def pipeline_inputs(self, preset: DiffusionPreset, request: EngineRequest, prompt: str) -> dict[str, Any]:
        """The pipeline keyword arguments that carry the images, prompt and output size: the crop
        at its own size, plus the binary selection and denoising strength for inpainting presets.
        ``prompt`` is the text the preset makes of the user's instruction (see :meth:`call_arguments`)."""
        h, w = request.crop.shape[:2]
        inputs: dict[str, Any] = {"image": to_pil(request.crop), "prompt": prompt, "height": h, "width": w}
        if preset.refine_strength is not None:
            inputs.update(
                mask_image=to_pil(binary_mask(request.mask)),
                strength=denoise_strength(preset, request.params),
            )
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
    def _torch(self) -> Any:
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

    def forced_policy(self) -> Policy | None:
        """The policy config.toml forces, None for ``auto``."""
        forced = str(self.options.get("memory_policy", "auto"))
        if forced == "auto":
            return None
        try:
            policy = Policy(forced)
        except ValueError:
            policy = None
        if policy not in GPU_POLICIES:
            raise EngineError(
                f"unknown memory_policy '{forced}' in [engines.{self.name}]; "
                f"use one of auto, {', '.join(p.value for p in GPU_POLICIES)}",
                code=ErrorCode.BAD_PARAMS,
            )
        if memory.SPECS[policy].needs_quantisation and not memory.quantisation_available():
            raise EngineError(
                f"memory_policy '{forced}' needs bitsandbytes: pip install bitsandbytes",
                code=ErrorCode.BAD_PARAMS,
            )
        return policy

    def choose_plan(
        self, preset: DiffusionPreset, device: Any, free_vram_gb: float | None, ram_gb: float | None
    ) -> Plan:
        """The memory plan for this load: CPU without a GPU, else forced by config or the
        planner's first fit for free VRAM *and* host RAM."""
        if device.type == "cpu":
            return Plan(preset.name, None, ram_gb, Policy.CPU, None, "running on the CPU", "float32")
        forced = self.forced_policy()
        plan = memory.plan(
            preset,
            free_vram_gb,
            ram_gb,
            quantisation=memory.quantisation_available(),
            forced=forced,
            dtype=str(self.options.get("dtype") or preset.dtype),
        )
        if not plan.fits:
            raise EngineError(
                f"'{preset.name}' {plan.reason} (this machine: {free_vram_gb:.1f} GiB VRAM free, "
                f"{ram_gb or 0:.0f} GiB RAM available); see `touchup models plan --preset {preset.name}`, "
                f'or force a policy with memory_policy = "..." under [engines.{self.name}]',
                code=ErrorCode.OUT_OF_MEMORY,
            )
        return plan

    def load(self, preset: str | None = None) -> None:
        """Load the preset's pipeline (unloading another preset first). Offline: local files only."""
        from ... import models

        p = self.preset(preset)
        if self._pipe is not None and self._loaded is not None and self._loaded.name == p.name:
            return
        self._check_options()
        self.unload()
        torch = self._torch()
        located = models.resolve(p, self.options.get("models_dir"))
        device = self._pick_device(torch)
        free_gb = torch.cuda.mem_get_info(device)[0] / 2**30 if device.type == "cuda" else None
        plan = self.choose_plan(p, device, free_gb, memory.available_ram_gb())
        policy = plan.policy
        assert policy is not None  # choose_plan raises when nothing fits
        if device.type == "cpu":
            dtype = torch.float32
        else:
            bf16 = bool(torch.cuda.is_bf16_supported())
            dtype = getattr(torch, memory.compute_dtype(p, bf16, self.options.get("dtype")))
        started = time.perf_counter()
        try:
            pipe = self._build(p, located, device, dtype, policy)
        except torch.OutOfMemoryError:
            self._free_memory()
            raise EngineError(
                f"out of GPU memory while loading '{p.name}' with memory policy '{policy.value}'"
                f"{self._free_text(free_gb)}; {self._advice(p, policy.value)}",
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
        self._pipe, self._loaded, self._plan = pipe, p, plan
        self._device, self._dtype = device, dtype
        log.info(
            "loaded %s (%s, %s) in %.1fs: %s",
            p.name,
            policy.value,
            dtype,
            time.perf_counter() - started,
            plan.reason,
        )

    def _build(self, p: DiffusionPreset, located: list[Any], device: Any, dtype: Any, policy: Policy) -> Any:
        import diffusers

        cls = getattr(diffusers, p.pipeline)
        kwargs = loading.from_pretrained_kwargs(p, policy, device, dtype)
        kwargs.update(self._extra_components(p, located[0].folder, dtype))
        pipe = cls.from_pretrained(str(located[0].folder), **kwargs)
        loading.apply_scheduler(pipe, p)
        if p.refine_strength is not None:  # inpainting: seed-independent condition latents
            loading.encode_to_mean(pipe)
        self._configure(pipe, p)
        loading.load_loras(
            pipe, p, located[1:], self.options.get("lora_path"), float(self.options.get("lora_scale", 1.0))
        )
        if "device_map" not in kwargs:
            loading.place(pipe, p, policy, device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

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
    def call_arguments(self, p: DiffusionPreset, request: EngineRequest) -> dict[str, Any]:
        """Every keyword argument of the pipeline call except the generator and callback."""
        params = request.params
        text = (request.prompt or "").strip() or p.default_prompt
        if params.mode == "regenerate":
            text = p.regenerate_prompt.format(prompt=text)
        steps = int(params.steps or p.defaults.get("steps", 20))
        guidance = params.guidance if params.guidance is not None else p.defaults.get("guidance")
        kwargs: dict[str, Any] = dict(p.call)
        kwargs.update(self.pipeline_inputs(p, request, text))
        kwargs["num_inference_steps"] = steps
        if guidance is not None:
            kwargs[p.guidance_arg] = float(guidance)
        return kwargs

    def refine(self, request: EngineRequest) -> EngineOutput:
        outputs = self.refine_variants(request, [request.params.seed])
        try:
            return next(outputs)
        finally:
            outputs.close()  # leaves the prompt memo at once, not when the generator is collected

    def refine_variants(
        self, request: EngineRequest, seeds: Sequence[int]
    ) -> Generator[EngineOutput, None, None]:
        """The seeds in as few pipeline calls as memory allows (see :meth:`seeds_per_call`).

        The call's arguments -- the prompt, the crop, mask and references as the pipeline takes
        them -- are made once; within a call the pipeline encodes the prompt and the condition
        images once for all its images, and later calls reuse the first call's prompt encoding
        (:func:`~.run.prompt_encoded_once`). Each image has its own ``torch.Generator`` seeded
        with its seed, so its starting noise is that of a single run with that seed.
        """
        params = request.params
        p = self.preset(params.preset) if params.preset else (self._loaded or self.preset(None))
        self.load(p.name)
        height, width = request.crop.shape[:2]
        kwargs = self.call_arguments(p, request)
        batch = self.seeds_per_call(p, len(seeds), width * height)
        # Calls of equal size where memory splits the seeds (4 as 2 + 2, not 3 + 1), so that
        # every call's prompt encoding is the first call's, answered from memory.
        calls = -(-len(seeds) // batch)
        size = -(-len(seeds) // calls)
        with prompt_encoded_once(self._pipe) as memo:
            for start in range(0, len(seeds), size):
                if request.is_cancelled():
                    raise Cancelled()
                outputs = self._run(p, kwargs, list(seeds[start : start + size]), request, size)
                for output in outputs:
                    output.meta["prompt_encodings"] = memo.encoded
                yield from outputs

    def seeds_per_call(self, p: DiffusionPreset, count: int, area: int) -> int:
        """How many seeds one pipeline call denoises: the engine option ``variant_batch`` when
        set (1 = one call per seed), else the memory planner's figure for the loaded plan."""
        forced = self.options.get("variant_batch")
        if forced:
            return max(1, min(count, int(forced)))
        if self._plan is None:
            return 1
        ram = memory.available_ram_gb() if self._plan.policy is Policy.CPU else None
        return memory.variant_batch(p, self._plan, count, area, ram)

    def _run(
        self,
        p: DiffusionPreset,
        call: dict[str, Any],
        seeds: list[int],
        request: EngineRequest,
        batch: int,
    ) -> list[EngineOutput]:
        """One pipeline call denoising ``seeds`` together; one output per seed, in order."""
        torch = self._torch()
        pipe = self._pipe
        height, width = request.crop.shape[:2]
        kwargs = dict(call)
        gen_device = "cuda" if self._device.type == "cuda" else "cpu"
        generators = [torch.Generator(gen_device).manual_seed(int(seed)) for seed in seeds]
        # A list of generators, one per image: diffusers draws each image's noise (and any VAE
        # sampling) from its own generator, exactly as a single run with that seed does.
        kwargs["generator"] = generators if len(seeds) > 1 else generators[0]
        if len(seeds) > 1:
            kwargs["num_images_per_prompt"] = len(seeds)
        out_h, out_w = int(kwargs.get("height") or height), int(kwargs.get("width") or width)

        def preview(pipeline: Any, latents: Any) -> np.ndarray | None:
            try:
                return latent_preview(self._unpack_latents(pipeline, latents, out_h, out_w))
            except Exception:  # a preview must never fail a job
                return None

        try:
            result = run_pipeline(
                pipe,
                kwargs,
                torch=torch,
                device=self._device,
                denoiser=getattr(pipe, loading.denoiser_name(p)),
                preview=preview,
                preview_every=int(self.options.get("preview_every", DEFAULT_PREVIEW_EVERY)),
                on_progress=request.on_progress,
                is_cancelled=request.is_cancelled,
            )
        except torch.OutOfMemoryError:
            self._after_failure(pipe)
            several = f" ({len(seeds)} seeds at once)" if len(seeds) > 1 else ""
            raise EngineError(
                f"out of GPU memory refining a {width}x{height} crop{several} with '{p.name}' under memory "
                f"policy '{self._policy}'; {self._advice(p, self._policy or 'gpu')}",
                code=ErrorCode.OUT_OF_MEMORY,
            ) from None
        except Cancelled:
            self._after_failure(pipe)
            raise
        if len(result.images) != len(seeds):
            raise EngineError(f"'{p.name}' returned {len(result.images)} images for {len(seeds)} seeds")
        outputs = []
        for seed, image in zip(seeds, result.images, strict=True):
            if image.shape[:2] != (height, width):
                import cv2

                log.warning(
                    "%s returned %dx%d for a %dx%d crop",
                    p.name,
                    image.shape[1],
                    image.shape[0],
                    width,
                    height,
                )
                image = np.ascontiguousarray(
                    np.clip(cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
                )
            meta: dict[str, Any] = {
                "engine": self.name,
                "preset": p.name,
                "memory_policy": self._policy,
                "device": str(self._device),
                "steps": result.steps,
                "seed": int(seed),
                "prompt": kwargs.get("prompt"),
                "timings": result.timings,
                "seeds_per_call": len(seeds),
                "variant_batch": batch,
            }
            if result.peak_vram_gb is not None:
                meta["peak_vram_gb"] = result.peak_vram_gb
            # Inpainting models take strength as their denoising strength; paste-back then must
            # not weaken the blend by the same factor a second time.
            outputs.append(EngineOutput(image, strength_applied="strength" in kwargs, meta=meta))
        self._last = {k: outputs[-1].meta[k] for k in ("preset", "steps", "timings", "seeds_per_call")}
        return outputs

    def _after_failure(self, pipe: Any) -> None:
        """Drop the activations of an aborted run; the weights stay resident for the next job."""
        with contextlib.suppress(Exception):
            pipe.maybe_free_model_hooks()
        self._free_memory()

    # -- messages --------------------------------------------------------------------------------
    @staticmethod
    def _free_text(free_gb: float | None) -> str:
        return f" ({free_gb:.1f} GiB free at load)" if free_gb is not None else ""

    def _advice(self, p: DiffusionPreset, policy: str) -> str:
        order = [x.value for x in GPU_POLICIES]
        lighter = order[order.index(policy) + 1 :] if policy in order else []
        if lighter:
            return (
                f'set memory_policy = "{lighter[0]}" under [engines.{self.name}] in config.toml '
                f"(`touchup models plan --preset {p.name}` shows what fits), close other programs "
                "using the GPU, or use a smaller selection"
            )
        return "use a lighter preset (e.g. sdxl-inpaint) or a smaller selection"
