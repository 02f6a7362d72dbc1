"""The refine job end to end (without transport): what ends up in the new layer and the image.

The promises checked here are the ones a retoucher relies on: nothing outside the selection
changes by even one bit, the selected region gets what the engine made (minus its colour
drift), every sample type and channel count works, and bad jobs fail with a clear code.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from touchup.backend.engines.base import (
    Capabilities,
    Engine,
    EngineOutput,
    EngineRequest,
    Preset,
    RefineParams,
    WorkingSize,
)
from touchup.backend.errors import BadInput, Cancelled, EngineError
from touchup.backend.pipeline.refine import RefineJob, run_refine
from touchup.backend.tools.bench_engines import IdentityEngine
from touchup.shared.geometry import Rect
from touchup.shared.protocol import ErrorCode

SMALL = WorkingSize(target_area=96 * 96, multiple=8, min_side=16, max_side=512)
PAINT = (0.25, 0.5, 0.75)
#: What a grey source keeps of a colour (ITU-R BT.601 luma, as OpenCV converts).
GREY_PAINT = 0.299 * PAINT[0] + 0.587 * PAINT[1] + 0.114 * PAINT[2]


class FakeEngine(Engine):
    """Records every call; ``paint`` fills the selection, ``offset`` shifts the whole crop."""

    name = "fake"

    def __init__(
        self,
        working: WorkingSize = SMALL,
        paint: tuple[float, float, float] | None = PAINT,
        offset: float = 0.0,
        noise: bool = False,
        regenerate: bool = True,
    ) -> None:
        super().__init__()
        self.presets = {
            "default": Preset(
                "default",
                working=working,
                capabilities=Capabilities(reference=True, max_references=2, regenerate=regenerate),
            )
        }
        self.paint, self.offset, self.noise = paint, offset, noise
        self.calls: list[dict] = []

    def refine(self, request: EngineRequest) -> EngineOutput:
        crop, mask, references = request.crop, request.mask, request.references
        self.calls.append(
            {"shape": crop.shape, "mask_shape": mask.shape, "max": float(crop.max()), "refs": len(references)}
        )
        out = crop + np.float32(self.offset)
        if self.noise:  # changes pixels everywhere, context included
            out += np.random.default_rng(len(self.calls)).normal(0, 0.2, out.shape).astype(np.float32)
        if self.paint is not None:
            out[mask > 0] = np.float32(self.paint) + np.float32(self.offset)
        for step in (1, 2):
            if request.is_cancelled():
                raise Cancelled()
            request.on_progress("denoise", step, 2, None)
        return EngineOutput(out, meta={"fake": True, "calls": len(self.calls)})


def gradient(h: int, w: int, channels: int, dtype: np.dtype, hdr: bool = False) -> np.ndarray:
    """A smooth test picture (resampling round trips keep it) with an alpha ramp if RGBA."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 17.0 + y / 23.0)], axis=2)
    if hdr:
        base = base * 4.0 - 0.5  # HDR: values from -0.5 to 3.5
    if channels == 1:
        base = base[:, :, :1]
    elif channels == 4:
        base = np.concatenate([base, 0.3 + 0.7 * (x / w)[:, :, None]], axis=2)
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        top = np.iinfo(dtype).max
        return np.clip(np.rint(base * top), 0, top).astype(dtype)
    return base.astype(dtype)


def scale_of(dtype: np.dtype) -> float:
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def tol(dtype: np.dtype) -> float:
    """Comparison tolerance in [0, 1] units for a dtype (quantisation plus resampling)."""
    return {"u1": 2 / 255, "u2": 2e-3, "f2": 2e-3, "f4": 1e-3}[np.dtype(dtype).str[1:]]


def rect_mask(h: int, w: int, *rects: tuple[int, int, int, int], value: float = 1.0) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    for x, y, rw, rh in rects:
        mask[y : y + rh, x : x + rw] = value
    return mask


def assert_untouched(source: np.ndarray, mask: np.ndarray, outcome) -> None:
    """Every pixel whose selection value is 0 is bit-identical; the layer is transparent there."""
    outside = mask == 0
    assert outcome.composite.dtype == source.dtype and outcome.composite.shape == source.shape
    np.testing.assert_array_equal(outcome.composite[outside], source[outside])
    assert outcome.layer.shape == (*source.shape[:2], 4) and outcome.layer.dtype == source.dtype
    assert not outcome.layer[:, :, 3][outside].any()
    rgb = source if source.shape[2] >= 3 else np.repeat(source, 3, axis=2)
    np.testing.assert_array_equal(outcome.layer[:, :, :3][outside], rgb[:, :, :3][outside])
    if source.shape[2] == 4:  # the source's own alpha is never changed
        np.testing.assert_array_equal(outcome.composite[:, :, 3], source[:, :, 3])


DTYPES = [np.uint8, np.uint16, np.float16, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_outside_untouched_and_deep_inside_gets_the_engine_value(dtype, channels):
    source = gradient(80, 120, channels, dtype)
    mask = rect_mask(80, 120, (30, 20, 50, 40))
    outcome = run_refine(RefineJob(source, mask), FakeEngine())
    assert_untouched(source, mask, outcome)
    deep = outcome.composite[40, 55].astype(np.float64) / scale_of(dtype)
    want = PAINT if channels >= 3 else [GREY_PAINT]
    np.testing.assert_allclose(deep[: len(want)], want, atol=0.02)
    # The layer carries the refined colour and full opacity (times the source's own alpha).
    layer = outcome.layer[40, 55].astype(np.float64) / scale_of(dtype)
    np.testing.assert_allclose(layer[:3], PAINT if channels >= 3 else [GREY_PAINT] * 3, atol=0.02)
    own_alpha = source[40, 55, 3] / scale_of(dtype) if channels == 4 else 1.0
    assert layer[3] == pytest.approx(own_alpha, abs=tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_engine_leaves_a_smooth_picture_as_it_was(dtype):
    source = gradient(96, 96, 4, dtype)
    mask = rect_mask(96, 96, (20, 20, 50, 50))
    outcome = run_refine(RefineJob(source, mask), IdentityEngine())
    assert_untouched(source, mask, outcome)
    got = outcome.composite.astype(np.float64) / scale_of(dtype)
    np.testing.assert_allclose(got, source.astype(np.float64) / scale_of(dtype), atol=0.01)


@pytest.mark.parametrize("correct", [True, False])
def test_colour_drift_is_removed_only_when_asked(correct):
    """An engine that paints the region but also shifts everything by +0.1 (a VAE drift)."""
    source = gradient(100, 100, 3, np.float32)
    mask = rect_mask(100, 100, (35, 35, 30, 30))
    params = RefineParams(color_correct=correct)
    outcome = run_refine(RefineJob(source, mask, params=params), FakeEngine(offset=0.1))
    assert_untouched(source, mask, outcome)
    want = np.float32(PAINT) + (0.0 if correct else 0.1)
    np.testing.assert_allclose(outcome.composite[50, 50], want, atol=0.01)
    assert outcome.meta["color_correct"] is correct
    if correct:
        assert outcome.meta["regions"][0]["drift_mean"] == pytest.approx([0.1] * 3, abs=0.01)


def test_constant_offset_engine_is_fully_corrected():
    source = gradient(100, 100, 3, np.uint8)
    mask = rect_mask(100, 100, (30, 30, 40, 40))
    outcome = run_refine(RefineJob(source, mask), FakeEngine(paint=None, offset=0.08))
    diff = np.abs(outcome.composite.astype(int) - source.astype(int))
    assert diff.max() <= 2  # the +20/255 shift is gone everywhere, not just on average


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    channels=st.sampled_from([1, 3, 4]),
    feather=st.sampled_from([0.0, 3.0, 8.0]),
    strength=st.sampled_from([0.0, 0.4, 1.0]),
)
def test_property_nothing_unselected_ever_changes(data, dtype, channels, feather, strength):
    h = data.draw(st.integers(8, 48))
    w = data.draw(st.integers(8, 48))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    source = gradient(h, w, channels, dtype, hdr=np.dtype(dtype).kind == "f")
    # Sparse soft speckles plus a block: islands of every size, values down to the smallest.
    mask = np.where(rng.random((h, w)) < 0.05, rng.random((h, w)), 0).astype(np.float32)
    x, y = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
    mask[y : y + data.draw(st.integers(1, h)), x : x + data.draw(st.integers(1, w))] = 1.0
    mask[mask > 0] = np.maximum(mask[mask > 0], 1e-6)
    params = RefineParams(feather=feather, strength=strength, context=data.draw(st.sampled_from([0, 8, 64])))
    outcome = run_refine(RefineJob(source, mask, params=params), FakeEngine(noise=True, offset=0.05))
    assert_untouched(source, mask, outcome)
    if strength == 0:
        np.testing.assert_array_equal(outcome.composite, source)


def test_hdr_float_values_survive_inside_and_outside():
    source = gradient(64, 64, 3, np.float32, hdr=True)
    assert source.max() > 3 and source.min() < 0
    mask = rect_mask(64, 64, (8, 8, 48, 48))
    outcome = run_refine(RefineJob(source, mask), IdentityEngine())
    assert_untouched(source, mask, outcome)
    np.testing.assert_allclose(outcome.composite, source, atol=0.02)  # not clipped to [0, 1]
    assert outcome.meta["regions"][0]["value_range"][1] > 3


def test_selection_touching_the_canvas_border_blends_fully_there():
    source = gradient(60, 80, 3, np.uint8)
    mask = rect_mask(60, 80, (0, 0, 20, 15), (70, 50, 10, 10))
    outcome = run_refine(RefineJob(source, mask), FakeEngine())
    assert_untouched(source, mask, outcome)
    for y, x in [(0, 0), (0, 10), (59, 79), (57, 78)]:  # border pixels: the border is no edge
        assert outcome.layer[y, x, 3] == 255
        np.testing.assert_allclose(outcome.composite[y, x] / 255, PAINT, atol=0.01)


def test_one_pixel_selection_changes_exactly_that_pixel():
    source = gradient(50, 50, 4, np.uint16)
    mask = rect_mask(50, 50, (20, 31, 1, 1))
    engine = FakeEngine()
    outcome = run_refine(RefineJob(source, mask), engine)
    assert_untouched(source, mask, outcome)
    changed = np.argwhere((outcome.composite != source).any(axis=2))
    assert changed.tolist() == [[31, 20]]
    np.testing.assert_allclose(outcome.composite[31, 20, :3] / 65535, PAINT, atol=1e-3)
    # Focus: a one-pixel island is still refined at the engine's working size.
    assert engine.calls[0]["shape"][0] * engine.calls[0]["shape"][1] >= SMALL.target_area * 0.7


def test_whole_tile_selected():
    source = gradient(40, 40, 3, np.float16)
    mask = np.ones((40, 40), np.float32)
    outcome = run_refine(RefineJob(source, mask), FakeEngine(offset=0.1))
    # No context to measure drift on: nothing is corrected, every pixel gets the engine's value.
    assert outcome.meta["color_correct"] is False
    want = np.broadcast_to(np.float32(PAINT) + np.float32(0.1), source.shape)
    np.testing.assert_allclose(outcome.composite.astype(np.float32), want, atol=2e-3)
    assert (outcome.layer[:, :, 3] == 1).all()


def test_far_islands_get_their_own_crops_and_close_ones_share_one():
    h, w = 400, 400
    doc = (1024, 1024)  # 1 megapixel: margin = context
    far = rect_mask(h, w, (20, 20, 10, 10), (360, 350, 12, 8))
    engine = FakeEngine()
    outcome = run_refine(
        RefineJob(gradient(h, w, 3, np.uint8), far, doc_size=doc, params=RefineParams(context=16)), engine
    )
    assert len(engine.calls) == 2 and len(outcome.regions) == 2
    assert outcome.regions[0] == Rect(4, 4, 42, 42)  # island grown by the margin
    assert outcome.regions[1] == Rect(344, 334, 44, 40)
    for call in engine.calls:  # each small crop is upsampled to the working size on its own
        assert call["shape"][0] * call["shape"][1] >= SMALL.target_area * 0.7
    assert_untouched(gradient(h, w, 3, np.uint8), far, outcome)

    close = rect_mask(h, w, (100, 100, 10, 10), (140, 100, 10, 10))
    engine = FakeEngine()
    outcome = run_refine(
        RefineJob(gradient(h, w, 3, np.uint8), close, doc_size=doc, params=RefineParams(context=16)), engine
    )
    assert len(engine.calls) == 1
    assert outcome.regions == [Rect(84, 84, 82, 42)]
    assert outcome.composite[105, 145].tolist() == outcome.composite[105, 105].tolist()


def test_context_margin_scales_with_the_document():
    source = gradient(300, 300, 3, np.uint8)
    mask = rect_mask(300, 300, (140, 140, 20, 20))
    one_mp = run_refine(RefineJob(source, mask, doc_size=(1024, 1024)), FakeEngine())
    four_mp = run_refine(RefineJob(source, mask, doc_size=(2048, 2048)), FakeEngine())
    assert one_mp.regions == [Rect(76, 76, 148, 148)]  # 64 px at 1 megapixel
    assert four_mp.regions == [Rect(12, 12, 276, 276)]  # 128 px on a 4-megapixel document
    assert one_mp.meta["margin"] == 64 and four_mp.meta["margin"] == 128
    # Without a document size the tile stands for the document.
    tile_only = run_refine(RefineJob(source, mask), FakeEngine())
    assert tile_only.meta["margin"] == round(64 * 300 / 1024)


def test_small_logo_is_refined_at_about_one_megapixel():
    source = gradient(400, 600, 3, np.uint8)
    mask = rect_mask(400, 600, (250, 170, 90, 60))
    engine = FakeEngine(working=WorkingSize())  # 1 megapixel, multiple of 16
    outcome = run_refine(RefineJob(source, mask, doc_size=(1024, 1024)), engine)
    h, w, _ = engine.calls[0]["shape"]
    assert 0.9e6 < w * h < 1.15e6 and w % 16 == 0 and h % 16 == 0
    region = outcome.regions[0]
    assert abs(w / h - region.width / region.height) < 0.05  # aspect kept
    assert outcome.meta["scales"][0] > 4
    assert_untouched(source, mask, outcome)


def test_progress_stages_and_region_numbering():
    seen = []
    mask = rect_mask(300, 300, (10, 10, 5, 5), (280, 280, 5, 5))
    run_refine(
        RefineJob(gradient(300, 300, 3, np.uint8), mask, params=RefineParams(context=4)),
        FakeEngine(),
        on_progress=lambda stage, step, total, preview: seen.append((stage, step, total)),
    )
    assert seen == [
        ("focus", 1, 2),
        ("refine 1/2", 1, 2),
        ("refine 1/2", 2, 2),
        ("paste", 1, 2),
        ("focus", 2, 2),
        ("refine 2/2", 1, 2),
        ("refine 2/2", 2, 2),
        ("paste", 2, 2),
    ]


def test_single_region_progress_reads_refine():
    seen = []
    run_refine(
        RefineJob(gradient(50, 50, 3, np.uint8), rect_mask(50, 50, (10, 10, 5, 5))),
        FakeEngine(),
        on_progress=lambda stage, step, total, preview: seen.append(stage),
    )
    assert seen == ["focus", "refine", "refine", "paste"]


def test_cancel_stops_the_job():
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 2  # cancelled while the engine is stepping

    with pytest.raises(Cancelled):
        run_refine(
            RefineJob(gradient(50, 50, 3, np.uint8), rect_mask(50, 50, (10, 10, 5, 5))),
            FakeEngine(),
            is_cancelled=cancelled,
        )
    with pytest.raises(Cancelled):  # cancelled before anything ran
        run_refine(
            RefineJob(gradient(50, 50, 3, np.uint8), rect_mask(50, 50, (10, 10, 5, 5))),
            FakeEngine(),
            is_cancelled=lambda: True,
        )


def test_empty_mask_is_refused_unless_regenerating():
    source = gradient(40, 40, 3, np.uint8)
    with pytest.raises(BadInput) as err:
        run_refine(RefineJob(source, np.zeros((40, 40), np.float32)), FakeEngine())
    assert err.value.code == ErrorCode.EMPTY_MASK
    engine = FakeEngine()
    outcome = run_refine(
        RefineJob(source, np.zeros((40, 40), np.float32), params=RefineParams(mode="regenerate")), engine
    )
    assert outcome.regions == [Rect(0, 0, 40, 40)]
    np.testing.assert_allclose(outcome.composite[20, 20] / 255, PAINT, atol=0.01)


@pytest.mark.parametrize(
    ("job_kwargs", "engine_kwargs", "code"),
    [
        ({"mask": np.ones((30, 40), np.float32)}, {}, ErrorCode.SIZE_MISMATCH),
        ({"params": RefineParams(strength=1.5)}, {}, ErrorCode.BAD_PARAMS),
        ({"params": RefineParams(feather=-1)}, {}, ErrorCode.BAD_PARAMS),
        ({"params": RefineParams(mode="paint")}, {}, ErrorCode.BAD_PARAMS),
        ({"params": RefineParams(preset="nope")}, {}, ErrorCode.UNKNOWN_PRESET),
        ({"params": RefineParams(mode="regenerate")}, {"regenerate": False}, ErrorCode.UNSUPPORTED),
        ({"references": [np.zeros((8, 8, 3), np.uint8)] * 3}, {}, ErrorCode.UNSUPPORTED),
    ],
)
def test_bad_jobs_get_their_own_code(job_kwargs, engine_kwargs, code):
    kwargs = {"source": gradient(40, 40, 3, np.uint8), "mask": rect_mask(40, 40, (5, 5, 10, 10))}
    kwargs.update(job_kwargs)
    with pytest.raises(BadInput) as err:
        run_refine(RefineJob(**kwargs), FakeEngine(**engine_kwargs))
    assert err.value.code == code


class BrokenEngine(FakeEngine):
    def __init__(self, result):
        super().__init__()
        self.result = result

    def refine(self, request: EngineRequest) -> EngineOutput:
        return EngineOutput(self.result(request.crop))


@pytest.mark.parametrize(
    "result",
    [lambda c: c[:-1], lambda c: np.full_like(c, np.nan)],
    ids=["wrong-size", "nan"],
)
def test_unusable_engine_output_is_an_engine_error(result):
    with pytest.raises(EngineError) as err:
        run_refine(
            RefineJob(gradient(40, 40, 3, np.uint8), rect_mask(40, 40, (5, 5, 10, 10))),
            BrokenEngine(result),
        )
    assert err.value.code == ErrorCode.ENGINE_FAILED


def test_references_reach_the_engine_as_float_rgb_and_engines_may_work_in_place():
    source = gradient(40, 40, 3, np.float32)
    keep = source.copy()

    class InPlace(FakeEngine):
        def refine(self, request: EngineRequest) -> EngineOutput:
            crop, references = request.crop, request.references
            assert [r.dtype for r in references] == [np.float32, np.float32]
            assert [r.shape for r in references] == [(10, 12, 3), (7, 9, 3)]
            crop[:] = 0.5  # scribbling over its input must not reach the caller's arrays
            return EngineOutput(crop)

    references = [np.full((10, 12, 4), 200, np.uint8), np.zeros((7, 9), np.uint16)]
    mask = np.ones((40, 40), np.float32)
    outcome = run_refine(RefineJob(source, mask, references=references), InPlace())
    np.testing.assert_array_equal(source, keep)
    np.testing.assert_allclose(outcome.composite, np.full_like(source, 0.5), atol=1e-6)


def test_outcome_reports_regions_scales_and_timings():
    class Slow(FakeEngine):
        def refine(self, request: EngineRequest) -> EngineOutput:
            time.sleep(0.05)
            return super().refine(request)

    outcome = run_refine(
        RefineJob(gradient(80, 80, 3, np.uint8), rect_mask(80, 80, (30, 30, 10, 10))), Slow()
    )
    assert set(outcome.timings) == {"crop", "engine", "paste"}
    assert outcome.timings["engine"] >= 0.05  # the engine's own time is counted as such
    assert outcome.timings["crop"] > 0 and outcome.timings["paste"] > 0
    assert outcome.meta["fake"] is True  # the engine's own metadata is merged in
    region = outcome.meta["regions"][0]
    assert region["rect"] == outcome.regions[0].as_list()
    assert region["work_size"][0] * region["work_size"][1] >= SMALL.target_area * 0.7
    assert outcome.meta["scales"] == [region["scale"]]


@pytest.mark.parametrize("applied", [False, True])
def test_strength_is_not_applied_twice_when_the_engine_used_it(applied):
    """Inpainting engines take strength as denoising strength; the blend must then not halve it again."""

    class StrengthEngine(FakeEngine):
        def refine(self, request: EngineRequest) -> EngineOutput:
            out = super().refine(request)
            out.strength_applied = applied
            return out

    src = gradient(64, 64, 3, np.dtype(np.uint8))
    mask = rect_mask(64, 64, (16, 16, 32, 32))
    job = RefineJob(src, mask, params=RefineParams(strength=0.5, feather=0, color_correct=False))
    layer = run_refine(job, StrengthEngine()).layer
    assert layer[32, 32, 3] == (255 if applied else 128)


def test_engine_is_told_the_crop_size_before_upsampling():
    """Engines that work at the photo's own scale get it from the pipeline, not by guessing."""
    seen = []

    class Recorder(FakeEngine):
        def refine(self, request: EngineRequest) -> EngineOutput:
            seen.append((request.native_size, request.crop.shape[1::-1]))
            return super().refine(request)

    src = gradient(120, 160, 3, np.dtype(np.uint8))
    job = RefineJob(src, rect_mask(120, 160, (70, 50, 12, 10)), doc_size=(160, 120))
    outcome = run_refine(job, Recorder())
    ((native, work),) = seen
    rect = outcome.regions[0]
    assert native == (rect.width, rect.height)
    assert work[0] > native[0] and work[1] > native[1]  # it was upsampled for the engine
