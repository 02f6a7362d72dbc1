"""The diffusion presets against the reference recipe: exact pipeline calls, pixels, grids, sigmas.

The golden table below is written from RefineAnything's inference script
(``scripts/fast_inference.py``: scheduler, image order, no size arguments, CFG settings,
adapters) and the model cards (SDXL inpainting: strength below 1), independently of the
preset table, so a change to ``presets.py`` that drifts from the reference fails here. The
tiny pipelines are built from the vendored real configs (``configs/``), so class names,
flags and scheduler configs are the real ones; only sizes are shrunk.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from tiny_models import require_diffusion, tiny_engine, tiny_hub, use_hub

require_diffusion()
torch = pytest.importorskip("torch")

from touchup.backend.engines.base import EngineRequest, RefineParams  # noqa: E402
from touchup.backend.engines.diffusion.presets import PRESETS  # noqa: E402
from touchup.backend.pipeline.focus import working_size  # noqa: E402

pytestmark = [pytest.mark.diffusion]

#: RefineAnything's scheduler, as ``fast_inference.py`` builds it for every run.
REFERENCE_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

#: What each preset's pipeline call must look like. ``images``: the order of the ``image`` list
#: ("crop", "reference", "mask"); ``sizes``: whether height/width are passed; ``adapters``: the
#: active LoRA adapters and weights; ``scheduler``: the reference config or None (the checkpoint's).
GOLDEN = {
    "refine-anything": dict(
        pipeline="QwenImageEditPlusPipeline",
        images=["crop", "reference", "mask"],
        sizes=False,
        steps=8,
        call={"true_cfg_scale": 1.0, "negative_prompt": " "},
        adapters={"refine_anything": 1.0, "lightning": 1.0},
        scheduler=REFERENCE_SCHEDULER,
        zero_cond_t=False,
    ),
    "refine-anything-fast": dict(
        pipeline="QwenImageEditPlusPipeline",
        images=["crop", "reference", "mask"],
        sizes=False,
        steps=4,
        call={"true_cfg_scale": 1.0, "negative_prompt": " "},
        adapters={"refine_anything": 1.0, "lightning": 1.0},
        scheduler=REFERENCE_SCHEDULER,
        zero_cond_t=False,
    ),
    "refine-anything-full": dict(
        pipeline="QwenImageEditPlusPipeline",
        images=["crop", "reference", "mask"],
        sizes=False,
        steps=28,
        call={"true_cfg_scale": 4.0, "negative_prompt": " "},
        adapters={"refine_anything": 1.0},
        scheduler=REFERENCE_SCHEDULER,  # app.py keeps the same scheduler without Lightning
        zero_cond_t=False,
    ),
    "qwen-image-edit-2511": dict(
        pipeline="QwenImageEditPlusPipeline",
        images=["crop", "reference"],  # the mask picture is a RefineAnything input only
        sizes=True,
        steps=40,
        call={"true_cfg_scale": 4.0, "negative_prompt": " "},
        adapters={},
        scheduler=None,
        zero_cond_t=True,
    ),
    "qwen-image-edit-2509": dict(
        pipeline="QwenImageEditPlusPipeline",
        images=["crop", "reference"],
        sizes=True,
        steps=40,
        call={"true_cfg_scale": 4.0, "negative_prompt": " "},
        adapters={},
        scheduler=None,
        zero_cond_t=False,
    ),
    "flux-kontext": dict(
        pipeline="FluxKontextPipeline",
        images=["crop"],
        sizes=True,
        steps=28,
        call={"guidance_scale": 2.5, "_auto_resize": False},
        adapters={},
        scheduler=None,
    ),
    "flux-fill": dict(
        pipeline="FluxFillPipeline",
        images=["crop"],
        sizes=True,
        steps=50,
        call={"guidance_scale": 30.0},
        adapters={},
        scheduler=None,
        strength={"refine": (0.5, 0.95), "regenerate": (1.0, 1.0)},
    ),
    "sdxl-inpaint": dict(
        pipeline="StableDiffusionXLInpaintPipeline",
        images=["crop"],
        sizes=True,
        steps=30,
        call={"guidance_scale": 7.5},
        adapters={},
        scheduler=None,
        # The model card: below 1.0; refine keeps part of the selected content.
        strength={"refine": (0.5, 0.9), "regenerate": (0.95, 0.99)},
    ),
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return tiny_hub(tmp_path_factory)


@pytest.fixture
def tiny(hub, monkeypatch):
    use_hub(monkeypatch, hub)
    return hub


def _crop(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    crop = rng.random((h, w, 3), dtype=np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    mask[h // 4, w // 4] = 0.4  # a soft edge pixel: the model must see it as selected
    reference = rng.random((40, 24, 3), dtype=np.float32)
    return crop, mask, reference


class Spy:
    """Records the keyword arguments of a pipeline's ``__call__`` and the transformer's
    ``img_shapes`` (the output grid first, then one grid per condition image)."""

    def __init__(self, monkeypatch, cls):
        self.calls: list[dict] = []
        self.grids: list = []
        real = cls.__call__
        spy = self

        def call(pipe, *args, **kwargs):
            spy.calls.append(kwargs)
            return real(pipe, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", call)

    def watch_grids(self, transformer) -> None:
        def hook(_module, _args, kwargs):
            if "img_shapes" in kwargs:
                self.grids.append(kwargs["img_shapes"][0])

        transformer.register_forward_pre_hook(hook, with_kwargs=True)


def _run(engine, name: str, crop, mask, references, mode: str = "refine", steps: int | None = None):
    params = RefineParams(preset=name, mode=mode, steps=steps, seed=5)
    return engine.refine(EngineRequest(crop, mask, references, "", params))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_call_contract_matches_the_reference_recipe(tiny, monkeypatch, name):
    import diffusers

    golden = GOLDEN[name]
    preset = PRESETS[name]
    assert preset.pipeline == golden["pipeline"]
    spy = Spy(monkeypatch, getattr(diffusers, golden["pipeline"]))
    engine = tiny_engine(name, presets={})  # the preset table's own defaults (steps included)
    engine.load(name)
    pipe = engine._pipe
    h, w = working_size(120, 50, engine.presets[name].working)
    crop, mask, reference = _crop(h, w)
    refs = [reference] if "reference" in golden["images"] else []
    # Steps: the table's default must be the recipe's; the run itself uses 2 to stay fast.
    assert preset.defaults["steps"] == golden["steps"]
    if "transformer" in pipe.components and hasattr(pipe.transformer.config, "zero_cond_t"):
        spy.watch_grids(pipe.transformer)
    out = _run(engine, name, crop, mask, refs, steps=2)
    (kwargs,) = spy.calls

    images = kwargs["image"] if isinstance(kwargs["image"], list) else [kwargs["image"]]
    assert len(images) == len(golden["images"])
    for role, image in zip(golden["images"], images, strict=True):
        arr = np.asarray(image)
        if role == "crop":
            assert image.size == (w, h)
            assert np.abs(arr / 255.0 - crop).max() <= 0.5 / 255 + 1e-6
        elif role == "reference":
            assert image.size == (24, 40)
        else:  # the selection as a black-and-white RGB picture, every selected pixel white
            assert image.mode == "RGB" and image.size == (w, h)
            assert set(np.unique(arr)) <= {0, 255}
            assert np.array_equal(arr[:, :, 0] == 255, mask > 0)
    assert ("height" in kwargs) == golden["sizes"] and ("width" in kwargs) == golden["sizes"]
    if golden["sizes"]:
        assert (kwargs["height"], kwargs["width"]) == (h, w)
    for key, value in golden["call"].items():
        assert kwargs[key] == value, key
    if name == "flux-kontext":
        assert kwargs["max_area"] == h * w
    assert out.image.shape == (h, w, 3)

    active = pipe.get_active_adapters() if golden["adapters"] else []
    assert sorted(active) == sorted(golden["adapters"])
    if golden["adapters"]:
        denoiser = pipe.transformer
        for module in denoiser.modules():
            scaling = getattr(module, "scaling", None)
            if isinstance(scaling, dict) and scaling:
                assert set(scaling) == set(golden["adapters"])
                break
    if golden["scheduler"] is not None:
        config = dict(pipe.scheduler.config)
        for key, value in golden["scheduler"].items():
            assert config[key] == value, key
    if "zero_cond_t" in golden:
        assert pipe.transformer.zero_cond_t is golden["zero_cond_t"]
    if spy.grids:  # Qwen: the output grid is the first condition image's grid
        grid = spy.grids[0]
        assert grid[0] == grid[1], grid
    if "strength" in golden:
        lo, hi = golden["strength"]["refine"]
        assert lo <= kwargs["strength"] <= hi
        spy.calls.clear()
        _run(engine, name, crop, mask, refs, mode="regenerate", steps=2)
        lo, hi = golden["strength"]["regenerate"]
        assert lo <= spy.calls[0]["strength"] <= hi
    else:
        assert "strength" not in kwargs and "mask_image" not in kwargs
    engine.unload()


def test_differential_refine_anything_equals_a_reference_style_call(tiny):
    """Same tiny weights, seed and crop: the engine's refine and a pipeline built and called
    the way ``fast_inference.py`` does it give identical pixels."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline
    from PIL import Image

    from touchup.backend import models
    from touchup.backend.engines.diffusion.qwen_edit import load_qwen_processor

    name = "refine-anything"
    engine = tiny_engine(name)
    h, w = working_size(90, 60, engine.presets[name].working)
    crop, mask, reference = _crop(h, w, seed=3)
    ours = _run(engine, name, crop, mask, [reference], steps=2).image
    engine.unload()

    located = models.resolve(PRESETS[name])
    base = located[0].folder
    pipe = QwenImageEditPlusPipeline.from_pretrained(
        str(base),
        torch_dtype=torch.float32,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(REFERENCE_SCHEDULER),
        processor=load_qwen_processor(base / "processor"),  # the stock loader needs torchvision
        local_files_only=True,
    )
    pipe.transformer.zero_cond_t = False  # the authors' diffusers 0.36 has no zero-cond-t path
    for module in pipe.transformer.modules():
        if hasattr(module, "zero_cond_t"):
            module.zero_cond_t = False
    for lora, loc in zip(PRESETS[name].loras, located[1:], strict=True):
        pipe.load_lora_weights(str(loc.folder), weight_name=lora.weight_name, adapter_name=lora.adapter)
    pipe.set_adapters(["refine_anything", "lightning"], adapter_weights=[1.0, 1.0])

    def pil(x):
        return Image.fromarray(np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))

    mask_rgb = Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").convert("RGB")
    gen = torch.Generator(device="cpu").manual_seed(5)
    with torch.inference_mode():
        theirs = pipe(
            image=[pil(crop), pil(reference), mask_rgb],
            prompt=PRESETS[name].default_prompt,
            generator=gen,
            true_cfg_scale=1.0,
            negative_prompt=" ",
            num_inference_steps=2,
            guidance_scale=1.0,
            num_images_per_prompt=1,
            output_type="np",
        ).images[0]
    assert theirs.shape == ours.shape
    assert np.array_equal(np.clip(theirs, 0, 1).astype(np.float32), ours)


def _shapes(n: int = 240) -> list[tuple[int, int]]:
    """Crop shapes with aspect ratios from 1:20 to 20:1 and sides from 16 to 4096 px."""
    rng = random.Random(11)
    out = [(16, 16), (4096, 4096), (16, 320), (320, 16), (4096, 205), (205, 4096), (120, 50), (1000, 90)]
    while len(out) < n:
        ratio = math.exp(rng.uniform(math.log(1 / 20), math.log(20)))
        long = rng.randint(16, 4096)
        w, h = (long, round(long / ratio)) if ratio >= 1 else (round(long * ratio), long)
        if min(w, h) >= 16:
            out.append((w, h))
    return out


@pytest.mark.parametrize("name", ["refine-anything", "qwen-image-edit-2509"])
def test_grid_output_equals_condition_grid_for_every_crop_shape(name):
    """For every crop shape the working size is a size the pipeline keeps as it is: its
    condition images are not resized again, and the output grid equals the condition grid
    (computed with the pipeline's own ``calculate_dimensions`` and constants)."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as mod

    calc = getattr(mod.calculate_dimensions, "real", mod.calculate_dimensions)
    preset = PRESETS[name]
    scale = 2 ** len(_vae_downsampling(preset.base.repo))
    for w, h in _shapes():
        ww, wh = working_size(w, h, preset.working)
        condition = calc(mod.VAE_IMAGE_SIZE, ww / wh)
        assert condition == (ww, wh), (w, h, ww, wh, condition)
        out_w, out_h = calc(1024 * 1024, ww / wh)  # the pipeline's output when no size is passed
        mult = scale * 2
        assert (out_w // mult * mult, out_h // mult * mult) == condition
        assert abs(math.log((ww / wh) / (w / h))) < 0.2, "aspect kept within the pipeline's rounding"


def _vae_downsampling(repo: str) -> list:
    from tiny_pipelines import real_config

    return real_config(repo, "vae")["temperal_downsample"]


def test_grid_in_real_runs_of_refine_anything(tiny, monkeypatch):
    """Real (tiny) runs: the transformer sees the output grid equal to the crop's grid."""
    import diffusers

    spy = Spy(monkeypatch, diffusers.QwenImageEditPlusPipeline)
    engine = tiny_engine("refine-anything")
    engine.load("refine-anything")
    spy.watch_grids(engine._pipe.transformer)
    for shape in [(120, 50), (30, 300)]:
        spy.grids.clear()
        h, w = working_size(*shape, engine.presets["refine-anything"].working)
        crop, mask, _ = _crop(h, w)
        out = _run(engine, "refine-anything", crop, mask, [], steps=1)
        assert out.image.shape == (h, w, 3)
        grid = spy.grids[0]
        assert grid[0] == grid[1] == grid[2], grid
        assert grid[0][1:] == (h // 16, w // 16)
    engine.unload()


@pytest.mark.parametrize("name", ["refine-anything", "refine-anything-fast", "refine-anything-full"])
def test_scheduler_sigmas_equal_the_reference(tiny, name):
    """The loaded scheduler gives the reference's sigmas at 4, 8 and 28 steps (1 MP: 4096
    image tokens)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_shift

    engine = tiny_engine(name)
    engine.load(name)
    ours = engine._pipe.scheduler
    reference = FlowMatchEulerDiscreteScheduler.from_config(REFERENCE_SCHEDULER)
    for steps in (4, 8, 28):
        sigmas = np.linspace(1.0, 1 / steps, steps)
        for scheduler in (ours, reference):
            mu = calculate_shift(
                4096,
                scheduler.config.get("base_image_seq_len", 256),
                scheduler.config.get("max_image_seq_len", 4096),
                scheduler.config.get("base_shift", 0.5),
                scheduler.config.get("max_shift", 1.15),
            )
            scheduler.set_timesteps(sigmas=sigmas, mu=mu)
        assert torch.allclose(ours.sigmas, reference.sigmas, atol=1e-6), (
            steps,
            ours.sigmas,
            reference.sigmas,
        )
    engine.unload()


def test_tiny_pipelines_keep_the_real_classes_and_configs(hub):
    """What the tiny checkpoints say about themselves is what the real repositories say."""
    import json

    from tiny_pipelines import real_config

    from touchup.backend.models import repo_folder_name

    for preset in PRESETS.values():
        repo = preset.base.repo
        snapshot = next((hub / repo_folder_name(repo) / "snapshots").iterdir())
        index = json.loads((snapshot / "model_index.json").read_text())
        real = real_config(repo, "")
        assert index["_class_name"] == real["_class_name"] == preset.pipeline
        for key, value in real.items():
            # Tokenizers are built locally (byte-level), every other component is the real class.
            if not key.startswith(("_", "tokenizer")) and isinstance(value, list) and value[0] is not None:
                assert index[key][1] == value[1], (repo, key)
        saved = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
        for key, value in real_config(repo, "scheduler").items():
            if not key.startswith("_"):
                assert saved[key] == value, (repo, key)
