"""Every diffusion preset, with tiny random weights, through the real loading and refine path.

Weights sit in a temporary HF-cache folder; they are loaded with ``from_pretrained`` and
``load_lora_weights`` exactly as real ones, offline, and each job goes through ``run_refine`` (or
the backend server), so what is checked is what a user gets: the new layer's pixels, progress,
cancel, and the errors they would read.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np
import pytest
from tiny_models import ALL_PRESETS, require_diffusion, tiny_engine, tiny_hub, use_hub, writable_copy

require_diffusion()
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from touchup.backend.engines.base import RefineParams  # noqa: E402
from touchup.backend.engines.diffusion.presets import PRESETS  # noqa: E402
from touchup.backend.errors import Cancelled, EngineError  # noqa: E402
from touchup.backend.pipeline.refine import RefineJob, run_refine  # noqa: E402
from touchup.shared.protocol import ErrorCode  # noqa: E402

pytestmark = [pytest.mark.diffusion, pytest.mark.slow]
#: ... and one preset per family runs through the server (every preset runs in the other tests).
ONE_PER_FAMILY = ["refine-anything", "flux-kontext", "flux-fill", "sdxl-inpaint"]


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    return tiny_hub(tmp_path_factory)


@pytest.fixture
def tiny(hub, monkeypatch):
    use_hub(monkeypatch, hub)
    return hub


def make_source(h: int = 72, w: int = 88, dtype=np.uint8) -> np.ndarray:
    """A smooth RGBA tile with some texture, in ``dtype``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)], axis=2)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    out = np.empty((h, w, 4), np.float32)
    out[:, :, :3] = np.clip(rgb, 0, 1) * top
    out[:, :, 3] = top
    return (np.rint(out) if top != 1.0 else out).astype(dtype)


def make_mask(h: int = 72, w: int = 88) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2 <= 1
    return (inside * 255).astype(np.uint8)


def two_steps(preset: str) -> int:
    """Steps that make 2 denoising steps run. Inpainting presets refine from the selection
    noised part-way (their refine strength) and skip the schedule's first steps: SDXL runs
    ``int(steps * strength)`` of them, FLUX ``steps - int(steps * (1 - strength))``."""
    p = PRESETS[preset]
    if p.refine_strength is None or p.family != "sdxl-inpaint":
        return 2
    return math.ceil(2 / p.refine_strength)


def make_job(preset: str, steps: int | None = None, seed: int = 3, refs: int = 0, **kw) -> RefineJob:
    source = kw.pop("source", None)
    source = make_source() if source is None else source
    mask = kw.pop("mask", None)
    mask = make_mask(*source.shape[:2]) if mask is None else mask
    references = [make_source(40, 48)[:, :, :3] for _ in range(refs)]
    params = RefineParams(preset=preset, steps=steps or two_steps(preset), seed=seed, **kw)
    return RefineJob(source, mask, references, prompt="restore the logo", params=params, doc_size=(640, 480))


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_every_preset_refines_the_selection_only(tiny, name):
    preset = PRESETS[name]
    engine = tiny_engine(name)
    job = make_job(name, refs=1 if preset.capabilities.reference else 0)
    source, mask = job.source.copy(), job.mask.copy()
    events = []
    outcome = run_refine(job, engine, lambda *e: events.append(e))

    layer, composite = outcome.layer, outcome.composite
    assert layer.shape == (72, 88, 4) and layer.dtype == np.uint8
    assert composite.shape == source.shape and composite.dtype == source.dtype
    outside = mask == 0
    assert np.array_equal(composite[outside], source[outside]), "pixels outside the selection changed"
    assert (layer[:, :, 3][outside] == 0).all()
    assert (layer[:, :, 3][mask == 255] > 0).all()
    assert not np.array_equal(composite[mask == 255], source[mask == 255]), "the model changed nothing"

    steps = [(step, total) for stage, step, total, _ in events if stage == "refine"]
    assert steps == [(1, 2), (2, 2)], "one progress event per denoising step"
    previews = [p for stage, _s, _t, p in events if stage == "refine" and p is not None]
    assert previews and all(
        p.dtype == np.float32 and p.shape[2] == 3 and max(p.shape[:2]) <= 64 for p in previews
    )

    assert outcome.meta["preset"] == name and outcome.meta["memory_policy"] == "cpu"
    assert set(outcome.meta["timings"]) >= {"condition_encode", "denoise", "vae_decode"}
    adapters = [lora.adapter for lora in preset.loras]
    if adapters:  # the LoRAs were loaded through load_lora_weights and are active
        assert sorted(engine._pipe.get_active_adapters()) == sorted(adapters)
    engine.unload()
    assert engine.status()["loaded"] is False


def test_pipeline_stays_resident_and_switching_presets_reloads(tiny):
    engine = tiny_engine("refine-anything")
    engine.load("refine-anything")
    pipe = engine._pipe
    # RefineAnything runs as its authors' environment did: the 2511 zero-cond-t path off ...
    assert pipe.transformer.zero_cond_t is False
    engine.load("refine-anything")
    assert engine._pipe is pipe, "loading the loaded preset again must not reload"
    engine.load("qwen-image-edit-2511")
    assert engine._pipe is not pipe and engine.status()["preset"] == "qwen-image-edit-2511"
    # ... while plain 2511 keeps its checkpoint's setting.
    assert engine._pipe.transformer.zero_cond_t is True
    assert not engine._pipe.get_list_adapters(), "the previous preset's LoRAs must be gone"
    engine.unload()


def test_same_seed_same_pixels_other_seed_other_pixels(tiny):
    engine = tiny_engine("flux-kontext")
    a = run_refine(make_job("flux-kontext", seed=7), engine).layer
    b = run_refine(make_job("flux-kontext", seed=7), engine).layer
    c = run_refine(make_job("flux-kontext", seed=8), engine).layer
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_layer_keeps_the_source_sample_type(tiny, dtype):
    engine = tiny_engine("flux-fill")
    job = make_job("flux-fill", source=make_source(dtype=dtype))
    source = job.source.copy()
    outcome = run_refine(job, engine)
    assert outcome.layer.dtype == dtype and outcome.composite.dtype == dtype
    outside = job.mask == 0
    assert np.array_equal(outcome.composite[outside], source[outside])


def test_regenerate_with_nothing_selected_covers_the_whole_tile(tiny):
    engine = tiny_engine("qwen-image-edit-2509")
    job = make_job("qwen-image-edit-2509", mode="regenerate", mask=np.zeros((72, 88), np.uint8))
    outcome = run_refine(job, engine)
    assert (outcome.layer[:, :, 3] > 0).all()
    assert outcome.meta["prompt"].startswith("Change the subject in the middle of this image")
    assert "restore the logo" in outcome.meta["prompt"]


def test_cancel_stops_at_the_next_step_and_the_engine_keeps_working(tiny):
    engine = tiny_engine("flux-kontext")
    steps_seen = []

    def progress(stage, step, total, preview):
        if stage == "refine":
            steps_seen.append(step)

    with pytest.raises(Cancelled):
        run_refine(make_job("flux-kontext", steps=6), engine, progress, lambda: len(steps_seen) >= 1)
    assert steps_seen == [1]
    outcome = run_refine(make_job("flux-kontext"), engine)
    assert outcome.layer.shape == (72, 88, 4)


@contextlib.contextmanager
def serving(config):
    """The backend server in this process (so the tiny-model patches apply), stopped afterwards."""
    from touchup.backend.server import Server

    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert server.ready.wait(60)
        yield server
    finally:
        server.stop()
        thread.join(30)


def _out_of_memory(*_args):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_reported_with_the_policy_and_the_engine_recovers(tiny):
    engine = tiny_engine("sdxl-inpaint")
    engine.load("sdxl-inpaint")
    hook = engine._pipe.unet.register_forward_pre_hook(_out_of_memory)
    with pytest.raises(EngineError) as err:
        run_refine(make_job("sdxl-inpaint"), engine)
    assert err.value.code == ErrorCode.OUT_OF_MEMORY
    assert "memory policy 'cpu'" in err.value.message
    hook.remove()
    assert run_refine(make_job("sdxl-inpaint"), engine).layer.shape == (72, 88, 4)


def test_missing_weights_name_the_download_command(tmp_path, monkeypatch):
    use_hub(monkeypatch, tmp_path / "empty-cache")
    engine = tiny_engine("flux-fill")
    with pytest.raises(EngineError) as err:
        engine.load("flux-fill")
    assert err.value.code == ErrorCode.MODEL_MISSING
    assert "`touchup models download flux-fill`" in err.value.message
    info = engine.available()
    assert info["ok"] is False and "touchup models download" in info["reason"]


def _replace(path, data: bytes) -> None:
    """Replace a snapshot file (a symlink to a shared blob) by a private damaged copy."""
    path.unlink()
    path.write_bytes(data)


@pytest.mark.parametrize(
    "damage, expect",
    [
        ("garbage-json", "not valid JSON"),
        ("bad-config", "could not be loaded"),
        ("pickle-only", "pickle"),
    ],
)
def test_broken_model_folder_is_a_clear_error(hub, tmp_path, monkeypatch, damage, expect):
    repo = "black-forest-labs/FLUX.1-Kontext-dev"
    cache = writable_copy(hub, tmp_path / "cache", [repo])
    use_hub(monkeypatch, cache)
    snapshot = next((cache / ("models--" + repo.replace("/", "--")) / "snapshots").iterdir())
    if damage == "garbage-json":
        _replace(snapshot / "transformer" / "config.json", b"{ not json")
    elif damage == "bad-config":
        _replace(
            snapshot / "transformer" / "config.json",
            b'{"_class_name": "FluxTransformer2DModel", "num_layers": -3}',
        )
    else:
        weights = snapshot / "transformer" / "diffusion_pytorch_model.safetensors"
        weights.rename(weights.with_suffix(".bin"))
    engine = tiny_engine("flux-kontext")
    with pytest.raises(EngineError) as err:
        engine.load("flux-kontext")
    assert err.value.code == ErrorCode.MODEL_BROKEN
    assert expect in err.value.message
    assert engine.status()["loaded"] is False


def test_user_lora_loads_and_pickle_lora_is_refused(tiny, tmp_path):
    from tiny_pipelines import make_lora

    plain = tiny_engine("flux-kontext")
    plain.load("flux-kontext")
    lora = make_lora(plain._pipe, tmp_path / "lora", "detail.safetensors", seed=5)
    before = run_refine(make_job("flux-kontext"), plain).layer
    plain.unload()

    engine = tiny_engine("flux-kontext", lora_path=str(lora))
    after = run_refine(make_job("flux-kontext"), engine).layer
    assert engine._pipe.get_active_adapters() == ["user"]
    assert not np.array_equal(before, after), "the user LoRA changed nothing"

    pickle = tmp_path / "detail.bin"
    pickle.write_bytes(b"\x80\x04not really")
    with pytest.raises(EngineError) as err:
        tiny_engine("flux-kontext", lora_path=str(pickle)).load("flux-kontext")
    assert err.value.code == ErrorCode.MODEL_BROKEN and "safetensors" in err.value.message


def test_memory_policy_follows_free_vram_ram_and_config(monkeypatch):
    from touchup.backend.engines.diffusion import memory
    from touchup.backend.engines.diffusion.qwen_edit import QwenEditEngine

    monkeypatch.setattr(memory, "quantisation_available", lambda: False)
    cuda = torch.device("cuda")
    p = PRESETS["refine-anything"]
    engine = QwenEditEngine()
    assert engine.choose_plan(p, cuda, 79.0, 128.0).policy.value == "gpu"
    assert engine.choose_plan(p, cuda, 47.0, 128.0).policy.value == "model_offload"
    # 47 GB of VRAM but 32 GB of RAM: offloading would hold the model in RAM, so nothing fits
    # without quantisation, and the error says what is needed.
    with pytest.raises(EngineError) as err:
        engine.choose_plan(p, cuda, 47.0, 32.0)
    assert err.value.code == ErrorCode.OUT_OF_MEMORY and "bitsandbytes" in err.value.message
    assert engine.choose_plan(p, torch.device("cpu"), None, 8.0).policy.value == "cpu"
    monkeypatch.setattr(memory, "quantisation_available", lambda: True)
    assert engine.choose_plan(p, cuda, 22.0, 32.0).policy.value == "quant4_gpu"
    forced = QwenEditEngine({"memory_policy": "group_offload"}).choose_plan(p, cuda, 79.0, 128.0)
    assert forced.policy.value == "group_offload" and forced.forced
    with pytest.raises(EngineError) as err:
        QwenEditEngine({"memory_policy": "fast"}).choose_plan(p, cuda, 79.0, 128.0)
    assert err.value.code == ErrorCode.BAD_PARAMS and "model_offload" in err.value.message
    assert 'memory_policy = "model_offload"' in engine._advice(p, "gpu")


def test_presets_are_described_for_the_plugins(tiny):
    from touchup.backend.engines import ENGINES, engine_class

    described = {}
    for name in ("qwen-edit", "flux-kontext", "flux-fill", "sdxl-inpaint"):
        assert name in ENGINES
        described[name] = engine_class(name)().describe()
    qwen = described["qwen-edit"]
    assert qwen["default_preset"] == "refine-anything"
    by_name = {p["name"]: p for p in qwen["presets"]}
    assert set(by_name) == {n for n, p in PRESETS.items() if p.family == "qwen-edit"}
    assert by_name["refine-anything"]["accepts"]["reference"] is True
    assert by_name["refine-anything"]["defaults"]["steps"] == 8
    assert by_name["refine-anything-fast"]["defaults"]["steps"] == 4
    assert by_name["refine-anything"]["working"]["multiple"] == 32
    assert qwen["available"]["ok"] is True and all(qwen["available"]["presets"].values())
    assert by_name["refine-anything"]["present"] is True
    assert by_name["refine-anything"]["models"] == [
        "Qwen/Qwen-Image-Edit-2511",
        "limuloo1999/RefineAnything",
        "lightx2v/Qwen-Image-Edit-2511-Lightning",
    ]
    assert described["sdxl-inpaint"]["presets"][0]["working"]["multiple"] == 8


# -- through the backend ----------------------------------------------------------------------


def _request(preset: str, engine: str, steps: int = 2, variants: int = 1):
    from touchup.backend.pipeline.imaging import array_to_frame
    from touchup.shared.client import refine_request

    return refine_request(
        array_to_frame(make_source(), "source"),
        array_to_frame(make_mask(), "mask"),
        origin=(200, 100),
        doc_size=(640, 480),
        prompt="restore the logo",
        engine=engine,
        preset=preset,
        params={"steps": steps, "seed": 1, "variants": variants},
    )


def test_refine_through_the_backend_process(tiny, backend_factory):
    """A real ``touchup serve`` child: hello lists the presets, a job streams progress and a layer."""
    from touchup.backend.pipeline.imaging import frame_to_array
    from touchup.shared.protocol import Kind

    options = {"device": "cpu", "working_area": 64 * 64, "min_side": 32, "max_side": 128}
    proc = backend_factory(engine="flux-kontext", engines={"flux-kontext": options})
    with proc.client() as c:
        hello = c.hello()
        engines = {e["name"]: e for e in hello["capabilities"]["engines"]}
        assert next(p["name"] for p in engines["qwen-edit"]["presets"]) == "refine-anything"
        diffusion = [engines[name] for name in ("qwen-edit", "flux-kontext", "flux-fill", "sdxl-inpaint")]
        assert {p["variants"] for e in diffusion for p in e["presets"]} == {4}
        events = []
        messages = c.refine_variants(
            *_request("flux-kontext", "flux-kontext", steps=3, variants=2),
            on_event=events.append,
            timeout=240,
        )
    assert [(m.kind, m.header["seed"]) for m in messages] == [(Kind.VARIANT, 1), (Kind.RESULT, 2)]
    result = messages[-1]
    layer = frame_to_array(result.frame("result"))
    mask = make_mask()
    ys, xs = np.nonzero(mask)
    assert layer.shape[2] == 4 and layer.dtype == np.uint8
    assert layer.shape[:2] == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    refine = [e.header for e in events if e.kind == Kind.PROGRESS and e.header["stage"] == "refine"]
    calls = len({h["variant"] for h in refine})  # the two seeds batched in one call, or one call each
    assert [(h["step"], h["total"]) for h in refine] == [(1, 3), (2, 3), (3, 3)] * calls
    assert all(h["variants"] == 2 for h in refine)
    assert result.header["meta"]["memory_policy"] == "cpu"
    assert proc.alive()


def test_out_of_memory_through_the_server_then_it_keeps_serving(tiny, tmp_path, monkeypatch):
    """The in-process server: a job that runs out of GPU memory gets ``out_of_memory``; the next works."""
    from conftest import free_endpoint

    from touchup.backend.config import Config
    from touchup.backend.engines.diffusion.flux_kontext import FluxKontextEngine
    from touchup.shared.client import BackendError, Client

    fail = threading.Event()
    fail.set()
    configure = FluxKontextEngine._configure

    def configure_with_fault(self, pipe, preset):
        configure(self, pipe, preset)
        pipe.transformer.register_forward_pre_hook(lambda *a: _out_of_memory() if fail.is_set() else None)

    monkeypatch.setattr(FluxKontextEngine, "_configure", configure_with_fault)
    options = {"device": "cpu", "working_area": 64 * 64, "min_side": 32, "max_side": 128}
    config = Config(
        endpoint=free_endpoint(),
        engine="flux-kontext",
        engines={"flux-kontext": options},
        log_file=str(tmp_path / "backend.log"),
    )
    with serving(config), Client(config.endpoint) as c:
        with pytest.raises(BackendError) as err:
            c.refine(*_request("flux-kontext", "flux-kontext"), timeout=240)
        assert err.value.code == ErrorCode.OUT_OF_MEMORY
        assert "memory policy 'cpu'" in err.value.message
        fail.clear()
        result = c.refine(*_request("flux-kontext", "flux-kontext"), timeout=240)
        assert result.frame("result") is not None


def test_unknown_preset_on_a_diffusion_engine_is_unknown_preset(tmp_path):
    """Validation knows each diffusion engine's presets without loading anything."""
    from conftest import free_endpoint

    from touchup.backend.config import Config
    from touchup.shared.client import BackendError, Client

    config = Config(endpoint=free_endpoint(), engine="classic", log_file=str(tmp_path / "backend.log"))
    with serving(config), Client(config.endpoint) as c, pytest.raises(BackendError) as err:
        c.refine(*_request("refine-anything-xl", "qwen-edit"), timeout=60)
    assert err.value.code == ErrorCode.UNKNOWN_PRESET
    assert "refine-anything" in err.value.message


def test_an_engine_wide_steps_option_is_refused_with_the_per_preset_form(tiny):
    """``steps`` under [engines.qwen-edit] would run the 40-step CFG presets at 8 steps too."""
    engine = tiny_engine("refine-anything", steps=8)
    with pytest.raises(EngineError) as err:
        engine.load("refine-anything")
    assert err.value.code == ErrorCode.BAD_PARAMS
    assert "[engines.qwen-edit.presets.refine-anything] steps" in err.value.message
    per_preset = tiny_engine("refine-anything", presets={"refine-anything-full": {"steps": 12}})
    assert per_preset.presets["refine-anything-full"].defaults["steps"] == 12
    assert per_preset.presets["qwen-image-edit-2511"].defaults["steps"] == 40


@pytest.mark.skipif(os.environ.get("TOUCHUP_GPU_TESTS") != "1", reason="GPU run: set TOUCHUP_GPU_TESTS=1")
def test_tiny_preset_on_the_gpu(tiny):
    engine = tiny_engine("flux-kontext", device="cuda")
    outcome = run_refine(make_job("flux-kontext"), engine)
    assert outcome.meta["memory_policy"] == "gpu" and outcome.meta["peak_vram_gb"] > 0


def test_every_preset_through_the_backend_server(tiny, tmp_path):
    """Each preset as a plugin would run it: hello lists it, a refine request over ZeroMQ comes
    back as a layer with alpha 0 outside the selection, one progress event per step. The server
    runs in this process so the tiny-model size patches apply; it is the same ROUTER, queue and
    worker that ``touchup serve`` runs."""
    from conftest import free_endpoint
    from tiny_pipelines import tiny_options

    from touchup.backend.config import Config
    from touchup.backend.pipeline.imaging import frame_to_array
    from touchup.shared.client import Client
    from touchup.shared.protocol import Kind

    families = sorted({PRESETS[name].family for name in ALL_PRESETS})
    config = Config(
        endpoint=free_endpoint(),
        engine="classic",
        engines={family: tiny_options(family) for family in families},
        log_file=str(tmp_path / "backend.log"),
    )
    with serving(config):
        mask = make_mask()
        ys, xs = np.nonzero(mask)
        with Client(config.endpoint) as c:
            offered = {
                (e["name"], p["name"]) for e in c.hello()["capabilities"]["engines"] for p in e["presets"]
            }
            assert {(PRESETS[n].family, n) for n in ALL_PRESETS} <= offered
            for name in ONE_PER_FAMILY:
                family = PRESETS[name].family
                events = []
                result = c.refine(
                    *_request(name, family, steps=two_steps(name)), on_event=events.append, timeout=300
                )
                layer = frame_to_array(result.frame("result"))
                assert layer.shape[:2] == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1), name
                under = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
                assert (layer[:, :, 3][under == 0] == 0).all(), name
                steps = [
                    e.header["step"]
                    for e in events
                    if e.kind == Kind.PROGRESS and e.header["stage"] == "refine"
                ]
                assert steps == [1, 2], (name, steps)
                assert result.header["meta"]["preset"] == name
