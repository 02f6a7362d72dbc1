"""Qwen-Image-Edit family: RefineAnything (a LoRA on 2511) and plain Qwen-Image-Edit 2509/2511.

All run through diffusers' ``QwenImageEditPlusPipeline``. RefineAnything gets what its reference
script gives it: ``image = [crop, reference?, selection as a black-and-white RGB image]`` and no
``height``/``width`` -- the pipeline sizes its output from the last image, which has the crop's
size, so the output grid is the crop's condition grid. Plain Qwen-Image-Edit never saw such a
mask picture in training, so it gets ``[crop, reference?]`` and the instruction alone, with the
output size given explicitly as the crop's (a reference of another shape must not size it).

The crop arrives at exactly the size the pipeline resizes condition images to
(:data:`~.presets.QWEN_CONDITION_SIZE`), so the pipeline's own resize is a no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..base import EngineRequest
from .engine import DiffusionEngine, binary_mask, to_pil
from .presets import DiffusionPreset

log = logging.getLogger(__name__)


def _torchvision_works() -> bool:
    """Whether torchvision imports and matches torch (a mismatched wheel fails at import)."""
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


def images_only_video_processor() -> Any:
    """A video processor stand-in for ``Qwen2VLProcessor`` when torchvision is unusable.

    The processor insists on a video sub-processor, and transformers' Qwen2-VL one needs
    torchvision; Qwen-Image-Edit never sends videos, so an empty one is enough and keeps
    torchvision optional.
    """
    from transformers.video_processing_utils import VideoProcessorMixin

    class ImagesOnlyVideoProcessor(VideoProcessorMixin):
        merge_size = 2
        temporal_patch_size = 2
        patch_size = 14

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("video input is not supported by Touchup")

    return ImagesOnlyVideoProcessor()


def processor_without_video(image_processor: Any, tokenizer: Any) -> Any:
    """A ``Qwen2VLProcessor`` whose video part is the stand-in above.

    transformers checks each sub-processor's class by looking it up in its namespace, which
    fails for video processors when torchvision is absent; the check is skipped for that slot only.
    """
    from transformers import Qwen2VLProcessor

    class Qwen2VLProcessorWithoutVideo(Qwen2VLProcessor):
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor":
                return type(argument)
            return super().check_argument_for_proper_class(argument_name, argument)

    return Qwen2VLProcessorWithoutVideo(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=images_only_video_processor()
    )


def load_qwen_processor(folder: Path) -> Any:
    """The checkpoint's ``processor`` folder as a ``Qwen2VLProcessor``, offline.

    With a working torchvision this is the stock loader; without it the image processor and
    tokenizer are loaded from the same files and the video part is stubbed.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLProcessor

    if _torchvision_works():
        return Qwen2VLProcessor.from_pretrained(str(folder), local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return processor_without_video(image_processor, tokenizer)


class QwenEditEngine(DiffusionEngine):
    name = "qwen-edit"
    family = "qwen-edit"
    description = "RefineAnything and Qwen-Image-Edit (2509/2511): instruction and reference refinement."
    packed_latents = True

    def _extra_components(self, preset: DiffusionPreset, folder: Path, dtype: Any) -> dict[str, Any]:
        return {"processor": load_qwen_processor(Path(folder) / "processor")}

    def _configure(self, pipe: Any, preset: DiffusionPreset) -> None:
        """Apply the preset's ``zero_cond_t`` (None keeps what the checkpoint's config says)."""
        value = preset.options.get("zero_cond_t")
        if value is None:
            return
        for module in pipe.transformer.modules():
            if hasattr(module, "zero_cond_t"):
                module.zero_cond_t = bool(value)
        pipe.transformer.register_to_config(zero_cond_t=bool(value))

    def pipeline_inputs(self, preset: DiffusionPreset, request: EngineRequest, prompt: str) -> dict[str, Any]:
        crop, references = request.crop, list(request.references)
        images = [to_pil(crop), *(to_pil(r) for r in references[: preset.capabilities.max_references])]
        if preset.spatial_image:
            images.append(to_pil(np.repeat(binary_mask(request.mask)[:, :, None], 3, axis=2)))
            return {"image": images, "prompt": prompt}
        # The output size is the pipeline's own condition size of the crop (the crop's size at
        # the default working size), so the output grid is the crop's condition grid even when
        # a reference of another shape is the last image.
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as pipeline_module

        h, w = crop.shape[:2]
        width, height = pipeline_module.calculate_dimensions(pipeline_module.VAE_IMAGE_SIZE, w / h)
        return {"image": images, "prompt": prompt, "height": height, "width": width}
