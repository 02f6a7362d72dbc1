"""One denoising run: the pipeline call with progress, previews, cancel and stage timings.

The call's arguments come from the preset (table) and the family (how images become
arguments); this module only drives the call and measures it, the same way for every model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import Cancelled
from ..base import CancelFn, ProgressFn

log = logging.getLogger(__name__)

#: Steps between two preview images (engine option ``preview_every``; 0 disables previews).
DEFAULT_PREVIEW_EVERY = 4
PREVIEW_SIDE = 64


@dataclass
class RunResult:
    """The pipeline's images (float32 RGB, the output's own size; one per generator of the call,
    in order) and the run's measurements (for the whole call)."""

    images: list[np.ndarray]
    timings: dict[str, float]
    steps: int
    peak_vram_gb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        return self.images[0]


def run_pipeline(
    pipe: Any,
    kwargs: dict[str, Any],
    *,
    torch: Any,
    device: Any,
    denoiser: Any,
    preview: Callable[[Any, Any], np.ndarray | None] | None,
    preview_every: int,
    on_progress: ProgressFn,
    is_cancelled: CancelFn,
) -> RunResult:
    """Call ``pipe(**kwargs)`` with a step callback: one progress event per step, a preview
    every ``preview_every`` steps, :class:`Cancelled` at the next step once cancelled.

    Stage timings: condition encoding (until the denoiser's first call), denoising (until the
    last step ends), VAE decoding (the rest). Raises what the pipeline raises (the engine turns
    out-of-memory into its error).
    """
    cuda = device.type == "cuda"
    steps_wanted = int(kwargs.get("num_inference_steps") or 0)
    marks: dict[str, float] = {}
    step_times: list[float] = []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def first_denoiser_call(_module: Any, _args: Any) -> None:
        if "denoise_start" not in marks:
            sync()
            marks["denoise_start"] = time.perf_counter()

    def on_step_end(pipeline: Any, index: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        sync()
        step_times.append(time.perf_counter())
        total = int(getattr(pipeline, "_num_timesteps", steps_wanted) or steps_wanted)
        if is_cancelled():
            raise Cancelled()
        image = None
        step = index + 1
        if (
            preview
            and preview_every > 0
            and step < total
            and step % preview_every == 0
            and "latents" in tensors
        ):
            image = preview(pipeline, tensors["latents"])
        on_progress("denoise", step, total, image)
        return {}

    kwargs = {**kwargs, "callback_on_step_end": on_step_end, "output_type": "np", "return_dict": True}
    if is_cancelled():
        raise Cancelled()
    hook = denoiser.register_forward_pre_hook(first_denoiser_call)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            out = pipe(**kwargs)
        sync()
    finally:
        hook.remove()
    end = time.perf_counter()
    # diffusers hands back an NHWC view of an NCHW tensor: make each a plain C-ordered array.
    images = [np.ascontiguousarray(np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)) for im in out.images]
    last_step = step_times[-1] if step_times else end
    denoise_start = marks.get("denoise_start", start)
    timings = {
        "condition_encode": denoise_start - start,
        "denoise": last_step - denoise_start,
        "vae_decode": end - last_step,
        "pipeline": end - start,
    }
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return RunResult(images, timings, len(step_times), peak)


@dataclass
class PromptMemo:
    """How often a job's pipeline calls encoded their prompt, and how often they reused it."""

    encoded: int = 0
    reused: int = 0


@contextlib.contextmanager
def prompt_encoded_once(pipe: Any) -> Iterator[PromptMemo]:
    """Within the block, a pipeline call whose ``encode_prompt`` arguments equal an earlier
    call's gets that call's embeddings back instead of running the text encoder again.

    The seeds of one job run in as few calls as memory allows, but where it allows only a few
    at a time, every call would encode the same instruction (and, for Qwen, the same condition
    images) once more -- for Qwen-Image-Edit a pass of a 7B vision-language model, plus moving it
    to the GPU under offloading. Arguments are compared by value (text, numbers, devices,
    images by their pixels); a call with anything else (caller-made embeddings) is not reused.
    """
    memo = PromptMemo()
    encode = getattr(pipe, "encode_prompt", None)
    if encode is None:
        yield memo
        return
    cache: dict[Hashable, Any] = {}

    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        key = _value_key((args, sorted(kwargs.items())))
        if key is None:
            return encode(*args, **kwargs)
        if key in cache:
            memo.reused += 1
        else:
            cache[key] = encode(*args, **kwargs)
            memo.encoded += 1
        return cache[key]

    pipe.encode_prompt = encode_prompt
    try:
        yield memo
    finally:
        del pipe.encode_prompt  # the class's method again


def _value_key(value: Any) -> Hashable | None:
    """A hashable stand-in for ``value`` compared by content, or None for what is not known."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        keys = [_value_key(v) for v in value]
        return (
            None
            if any(k is None and v is not None for k, v in zip(keys, value, strict=True))
            else tuple(keys)
        )
    kind = type(value).__name__
    if kind == "device":  # torch.device
        return ("device", str(value))
    if hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        return (
            "image",
            value.mode,
            tuple(value.size),
            hashlib.blake2b(value.tobytes(), digest_size=16).digest(),
        )
    return None


def latent_preview(latents: Any) -> np.ndarray | None:
    """A rough, cheap look at (B, C, [T,] h, w) latents: three channels stretched to [0, 1]."""
    try:
        lat = latents
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
