"""The ``classic`` engine through the real job pipeline (Focus-and-Refine crop, engine,
paste-back) on the bundled example: what a user refining that photo would get."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from touchup.backend.engines import create_engine
from touchup.backend.engines.base import EngineRequest, RefineParams
from touchup.backend.engines.classic.native import native_size, unenlarge
from touchup.backend.engines.classic.registration import plausibility
from touchup.backend.errors import Cancelled
from touchup.backend.pipeline.focus import resize
from touchup.backend.pipeline.refine import RefineJob, run_refine
from touchup.backend.tools.example import make_example, region_psnr

#: Required improvement of the selected region with the true reference, and the most a
#: useless or missing reference may cost.
MIN_GAIN_DB = 6.0
MAX_LOSS_DB = 0.5


@pytest.fixture(scope="module")
def example():
    return make_example()


@pytest.fixture(scope="module")
def engine():
    eng = create_engine("classic")
    eng.load()
    return eng


def refine(example, engine, references, source=None, **params):
    source = example.input if source is None else source
    job = RefineJob(
        source.copy(), example.mask.copy(), [r.copy() for r in references], "", RefineParams(**params)
    )
    return run_refine(job, engine)


def check_outside_untouched(example, out, source=None):
    source = example.input if source is None else source
    outside = example.mask == 0
    assert out.composite.dtype == source.dtype
    assert np.array_equal(out.composite[outside], source[outside])
    assert (out.layer[:, :, 3][outside] == 0).all()


@pytest.fixture(scope="module")
def with_reference(example, engine):
    return refine(example, engine, [example.reference])


def test_reference_restores_the_region(example, with_reference):
    before = region_psnr(example.input, example.clean, example.mask)
    after = region_psnr(with_reference.composite, example.clean, example.mask)
    print(
        f"\nregion PSNR vs clean: degraded {before:.2f} dB, with reference {after:.2f} dB ({after - before:+.2f})"
    )
    check_outside_untouched(example, with_reference)
    assert with_reference.meta["reference"] == "used"
    assert with_reference.meta["inliers"] >= 15
    assert after - before >= MIN_GAIN_DB


def test_unrelated_reference_is_rejected_and_does_no_harm(example, engine):
    out = refine(example, engine, [example.unrelated_reference])
    before = region_psnr(example.input, example.clean, example.mask)
    after = region_psnr(out.composite, example.clean, example.mask)
    print(f"\nunrelated reference: {before:.2f} -> {after:.2f} dB ({out.meta['reference']})")
    check_outside_untouched(example, out)
    assert out.meta["reference"].startswith("rejected: ")
    assert out.meta["restoration"] == "reference-free"
    assert after >= before - MAX_LOSS_DB


def test_without_reference_does_no_harm(example, engine):
    out = refine(example, engine, [])
    before = region_psnr(example.input, example.clean, example.mask)
    after = region_psnr(out.composite, example.clean, example.mask)
    print(f"\nno reference: {before:.2f} -> {after:.2f} dB")
    check_outside_untouched(example, out)
    assert out.meta["reference"] == "none"
    assert after >= before - MAX_LOSS_DB


def test_reference_whose_region_disagrees_is_rejected(example, engine):
    """Same surroundings, different content where the selection is (the patch painted over):
    features still match on the context, but the region's low frequencies do not agree, so
    pasting it would invent content -- the engine must refuse it."""
    ref = example.reference.copy()
    h, w = ref.shape[:2]
    suit = np.median(ref[:12, :12].reshape(-1, 3), axis=0)
    cv2.circle(ref, (w // 2, h // 2), int(0.36 * w), tuple(int(v) for v in suit), -1)
    out = refine(example, engine, [ref])
    before = region_psnr(example.input, example.clean, example.mask)
    assert out.meta["reference"].startswith("rejected: ")
    assert region_psnr(out.composite, example.clean, example.mask) >= before - MAX_LOSS_DB


def test_deterministic(example, engine, with_reference):
    again = refine(example, engine, [example.reference])
    assert np.array_equal(again.layer, with_reference.layer)
    assert np.array_equal(again.composite, with_reference.composite)


@pytest.mark.parametrize("scale", [0.6, 2.0])
def test_reference_of_another_size(example, engine, scale):
    ref = cv2.resize(
        example.reference,
        None,
        fx=scale,
        fy=scale,
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
    )
    out = refine(example, engine, [ref])
    before = region_psnr(example.input, example.clean, example.mask)
    after = region_psnr(out.composite, example.clean, example.mask)
    print(f"\nreference x{scale}: {before:.2f} -> {after:.2f} dB")
    check_outside_untouched(example, out)
    assert out.meta["reference"] == "used"
    # A smaller reference carries less detail than the region needs, so a smaller gain.
    assert after - before >= (MIN_GAIN_DB if scale >= 1 else 4.0)


def test_best_of_several_references_is_used(example, engine, with_reference):
    out = refine(example, engine, [example.unrelated_reference, example.reference])
    assert out.meta["reference"] == "used"
    assert out.meta["reference_index"] == 1
    assert out.meta["references"][0]["status"].startswith("rejected: ")
    assert np.array_equal(out.composite, with_reference.composite)


def test_u16_source_keeps_depth_and_improves(example, engine):
    source = example.input.astype(np.uint16) * 257
    out = refine(example, engine, [example.reference.astype(np.uint16) * 257], source=source)
    check_outside_untouched(example, out, source)
    clean16 = example.clean.astype(np.uint16) * 257
    gain = region_psnr(out.composite, clean16, example.mask) - region_psnr(source, clean16, example.mask)
    assert gain >= MIN_GAIN_DB
    # Real 16-bit output, not 8-bit values scaled up.
    assert (out.composite[example.mask > 0] % 257 != 0).any()


def test_strength_blends_with_the_input(example, engine):
    crop = cv2.resize(example.input[330:440, 115:225], (440, 440), interpolation=cv2.INTER_CUBIC)
    crop = crop.astype(np.float32) / 255
    mask = np.zeros(crop.shape[:2], np.float32)
    cv2.circle(mask, (220, 220), 180, 1.0, -1)
    ref = example.reference.astype(np.float32) / 255

    def run(strength):
        return engine.refine(EngineRequest(crop, mask, [ref], "", RefineParams(strength=strength))).image

    full, half, none = run(1.0), run(0.5), run(0.0)
    assert np.array_equal(none, crop)
    assert np.abs(full - crop).max() > 0.2
    np.testing.assert_allclose(half, crop + 0.5 * (full - crop), atol=1e-5)
    assert np.array_equal(full[mask == 0], crop[mask == 0])


def test_progress_and_cancel(example, engine):
    crop = cv2.resize(example.input[330:440, 115:225], (320, 320)).astype(np.float32) / 255
    mask = np.zeros(crop.shape[:2], np.float32)
    mask[80:240, 80:240] = 1
    events = []
    engine.refine(EngineRequest(crop, mask, [], "", RefineParams(), on_progress=lambda *e: events.append(e)))
    assert events and events[-1][1] == events[-1][2]  # last step reports completion
    with pytest.raises(Cancelled):
        engine.refine(
            EngineRequest(
                crop,
                mask,
                [example.reference / 255.0],
                "",
                RefineParams(),
                on_progress=lambda *e: None,
                is_cancelled=lambda: True,
            )
        )


def test_restoration_removes_measurable_noise(example, engine):
    """Without a reference, noise is removed at the scale it was made, even though the engine
    sees the region enlarged three times: the result is closer to the clean photo than the
    enlarged noisy input."""
    clean = example.clean[300:460, 90:250].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 0.03, clean.shape), 0, 1).astype(np.float32)
    size = (clean.shape[1] * 3, clean.shape[0] * 3)
    crop = np.clip(cv2.resize(noisy, size, interpolation=cv2.INTER_CUBIC), 0, 1)
    mask = np.ones(crop.shape[:2], np.float32)
    out = engine.refine(EngineRequest(crop, mask, [], "", RefineParams()))
    assert out.meta["restoration"] == "reference-free"

    def psnr_back(image):
        back = cv2.resize(image, clean.shape[1::-1], interpolation=cv2.INTER_AREA)
        return 10 * np.log10(1 / np.mean((back - clean) ** 2))

    assert psnr_back(out.image) - psnr_back(crop) >= 0.5


@pytest.mark.parametrize(
    ("native", "work"), [((85, 103), (696, 848)), ((300, 200), (376, 248)), ((384, 191), (1088, 544))]
)
def test_the_photos_own_pixels_are_recovered_from_an_enlarged_crop(example, native, work):
    """What the focus crop enlarged (by up to 8x, or by as little as 1.25x) is recovered pixel for
    pixel, so reference-free restoration works on the photo's own noise, not on its smoothed copy."""
    w, h = native
    photo = example.input[100 : 100 + h, 100 : 100 + w].astype(np.float32) / 255
    crop = np.clip(resize(photo, *work), 0.0, 1.0)  # as the job pipeline hands it to the engine
    assert native_size(crop) == native
    error = np.abs(unenlarge(crop, w, h) - photo)
    # The 8-bit values come back, except near dark or bright edges where the enlargement
    # overshot [0, 1] and was clipped.
    assert np.mean(error < 0.5 / 255) > 0.95 and np.median(error) < 1e-5
    assert native_size(photo) is None  # not enlarged: restored as it is


def test_implausible_transforms_are_named():
    box = (0, 0, 100, 100)
    assert plausibility(np.eye(3), box)[0] == ""
    shear = np.array([[1.0, 0.8, 0], [0, 1.0, 0], [0, 0, 1]])
    assert "shear" in plausibility(shear, box)[0]
    mirror = np.diag([-1.0, 1.0, 1.0])
    assert "mirror" in plausibility(mirror, box)[0]
    perspective = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.006, 0, 1]])
    assert "perspective" in plausibility(perspective, box)[0]
    assert "scale" in plausibility(np.diag([40.0, 40.0, 1.0]), box)[0]


@pytest.mark.parametrize("index", [7, 17])
def test_jpeg_region_with_a_relit_reference_does_no_harm(engine, index):
    """Evaluation cases with a JPEG-damaged region and a reference of the clean region under
    another pose, scale and lighting (7: cell texture; 17: a tiny part of a logo, downsampled
    and then JPEG-compressed): the JPEG input is already
    close in tone and coarse structure, so a transfer with the reference's own lighting, or
    registered a few pixels off, would lose to leaving the region alone."""
    from touchup.backend.tools.eval.baselines import run_ours
    from touchup.backend.tools.eval.datasets import make_case

    case = make_case(index)
    assert "jpeg" in case.degradation and case.reference_kind == "match"
    out = run_ours(case, engine, RefineParams(preset="default"))
    before = region_psnr(case.image, case.truth, case.mask)
    after = region_psnr(out.image, case.truth, case.mask)
    print(f"\n{case.name}: {before:.2f} -> {after:.2f} dB")
    assert after >= before - MAX_LOSS_DB
    assert np.array_equal(out.image[case.mask == 0], case.image[case.mask == 0])


# -- reference-free restoration --------------------------------------------------------------


def _damaged_photo(damage):
    """A 256 px window of the astronaut photo (float RGB), a disc in it damaged by ``damage``,
    and the disc's mask."""
    from touchup.backend.tools.eval.datasets import load_photo

    clean = load_photo("astronaut")[40:296, 150:406].astype(np.float32) / 255
    region = np.zeros(clean.shape[:2], np.float32)
    cv2.circle(region, (128, 128), 80, 1.0, -1)
    damaged = damage(clean)
    image = np.where(region[..., None] > 0, damaged, clean).astype(np.float32)
    return np.rint(image * 255) / 255, clean, region


def _restore(engine, image, region):
    h, w = image.shape[:2]
    # The photo's own pixels: the native size is the image's.
    return engine.refine(EngineRequest(image, region, native_size=(w, h)))


def _psnr(a, b, sel):
    return 10 * np.log10(1 / np.mean((a[sel] - b[sel]) ** 2))


def test_measured_blur_is_deconvolved(engine):
    """A region blurred (sigma 2.5 px) inside a sharp photo: the engine measures the blur from
    the region's edges against the surroundings' and undoes it -- a clear gain, which a
    restore that does nothing would not reach."""
    image, clean, region = _damaged_photo(lambda im: cv2.GaussianBlur(im, (0, 0), 2.5))
    out = _restore(engine, image, region)
    sel = region > 0
    gain = _psnr(out.image, clean, sel) - _psnr(image, clean, sel)
    print(f"\nblur 2.5: measured {out.meta['damage']['blur']:.2f}, gain {gain:+.2f} dB")
    assert "deconvolve" in out.meta["restoration_steps"]
    assert 1.5 <= out.meta["damage"]["blur"] <= 3.5
    assert gain >= 1.5
    assert np.array_equal(out.image[~sel], image[~sel])


def test_jpeg_region_is_deblocked_without_harm(engine):
    from touchup.backend.tools.eval.datasets import jpeg

    image, clean, region = _damaged_photo(lambda im: jpeg(im, 10))
    out = _restore(engine, image, region)
    sel = region > 0
    gain = _psnr(out.image, clean, sel) - _psnr(image, clean, sel)
    print(f"\njpeg 10: {out.meta['restoration_steps']}, gain {gain:+.2f} dB")
    assert "deblock" in out.meta["restoration_steps"]
    assert gain >= 0.1


@pytest.mark.parametrize("quality", [5, 12, 30])
def test_jpeg_quality_is_measured_from_the_blocks(quality):
    """The quality a region was saved at is read back from its DCT coefficients, on a grid
    that does not start at the crop's corner (crops start anywhere)."""
    from touchup.backend.engines.classic.quantisation import measure_quantisation
    from touchup.backend.tools.eval.datasets import jpeg

    image, _, region = _damaged_photo(lambda im: jpeg(im, quality))
    found = measure_quantisation(image[3:, 5:], region[3:, 5:] > 0)
    # Neighbouring qualities' tables differ in few low-frequency steps, by a few percent.
    assert found is not None and abs(found.quality - quality) <= 1
    # The damaged blocks lie inside the damaged disc.
    assert found.damaged.any() and not (found.damaged & (region[3:, 5:] == 0)).any()


@pytest.mark.parametrize("damage", ["none", "blur", "noise"])
def test_no_quantisation_is_found_where_there_was_no_jpeg(damage):
    from touchup.backend.engines.classic.quantisation import measure_quantisation

    rng = np.random.default_rng(0)
    change = {
        "none": lambda im: im,
        "blur": lambda im: cv2.GaussianBlur(im, (0, 0), 2.0),
        "noise": lambda im: np.clip(im + rng.normal(0, 0.05, im.shape), 0, 1),
    }[damage]
    image, _, region = _damaged_photo(change)
    assert measure_quantisation(image, region > 0) is None


def test_blocks_without_kept_detail_are_told_apart_from_blocks_with_detail():
    """Deblocking smooths harder where the JPEG kept only a block's mean: such blocks are found
    in a flat area, and not in textured fur."""
    from touchup.backend.engines.classic.quantisation import detail_free, measure_quantisation
    from touchup.backend.tools.eval.datasets import jpeg, load_photo

    photo = load_photo("chelsea")[100:292, 150:406].astype(np.float32) / 255
    photo[:, :128] = 0.45 + 0.05 * np.linspace(0, 1, 192)[:, None, None]  # a smooth gradient
    image = jpeg(photo, 10)
    found = measure_quantisation(image, np.ones(image.shape[:2], bool))
    assert found is not None and abs(found.quality - 10) <= 1
    flat = detail_free(image, found)
    assert flat[:, 8:120].mean() > 0.9 and flat[:, 136:].mean() < 0.5


def test_deblocking_leaves_clean_selected_surroundings_alone():
    """A retoucher selects more than the damage: the JPEG-damaged disc (radius 60) is smoothed,
    the clean ring of the selection beyond the damaged blocks' reach is not touched."""
    from touchup.backend.engines.classic.damage import blockiness
    from touchup.backend.engines.classic.deblock import REACH, SOFT_EDGE, deblock
    from touchup.backend.engines.classic.quantisation import measure_quantisation
    from touchup.backend.tools.eval.datasets import jpeg, load_photo

    clean = load_photo("astronaut")[40:296, 150:406].astype(np.float32) / 255
    damage = np.zeros(clean.shape[:2], np.uint8)
    cv2.circle(damage, (128, 128), 60, 1, -1)
    image = np.where(damage[..., None] > 0, jpeg(clean, 8), clean).astype(np.float32)
    selection = np.zeros_like(damage)
    cv2.circle(selection, (128, 128), 100, 1, -1)
    found = measure_quantisation(image, selection > 0)
    assert found is not None and found.quality == 8
    out = deblock(image, blockiness(image, region=selection > 0), selection > 0, found)
    far = cv2.dilate(damage, np.ones((3, 3), np.uint8), iterations=REACH + int(4 * SOFT_EDGE)) == 0
    assert np.abs(out - image)[far].max() < 0.5 / 255  # no change an 8-bit layer shows
    inside = damage > 0
    assert _psnr(out, clean, inside) > _psnr(image, clean, inside) + 0.3


@pytest.mark.parametrize(("photo", "quality"), [("moon", 60), ("hubble_deep_field", 30), ("rocket", 60)])
def test_a_lightly_compressed_region_is_not_made_worse(engine, photo, quality):
    """A fine JPEG table barely damages a region: its own smoothing of fine texture must not be
    taken for a blur and sharpened, nor its colour washed out (each of these lost 0.1-1 dB)."""
    import skimage.data

    from touchup.backend.tools.eval.datasets import as_rgb8, jpeg

    img = as_rgb8(getattr(skimage.data, photo)()).astype(np.float32) / 255
    h, w = img.shape[:2]
    clean = img[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128]
    region = np.zeros((256, 256), np.float32)
    cv2.circle(region, (128, 128), 80, 1.0, -1)
    image = np.where(region[..., None] > 0, jpeg(clean, quality), clean).astype(np.float32)
    out = _restore(engine, image, region)
    sel = region > 0
    gain = _psnr(out.image, clean, sel) - _psnr(image, clean, sel)
    print(f"\n{photo} jpeg {quality}: {out.meta['restoration_steps']}, gain {gain:+.2f} dB")
    assert gain >= -0.1


def test_an_undamaged_region_is_left_alone(engine):
    """Nothing measurable to undo: the engine does nothing rather than guess."""
    image, _, region = _damaged_photo(lambda im: im)
    out = _restore(engine, image, region)
    assert out.meta["restoration_steps"] == ["none: no damage measured"]
    assert np.array_equal(out.image, image)


def test_cancellation_is_checked_often_during_long_work(example, engine):
    """A one-megapixel region with a reference, and one without: the engine asks whether the
    job was cancelled at least every half second of work (CPU time of this process, which on
    two busy cores is at least the wall time the user waits), and stops when told."""
    import time

    from touchup.backend.tools.eval.datasets import degrade, load_photo

    big = cv2.resize(load_photo("astronaut"), (1200, 1200), interpolation=cv2.INTER_CUBIC)
    crop = big.astype(np.float32) / 255
    mask = np.zeros(crop.shape[:2], np.float32)
    mask[100:1100, 100:1100] = 1.0  # one megapixel
    damaged = degrade(crop, "blur+jpeg", np.random.default_rng(0))
    crop = np.where(mask[..., None] > 0, damaged, crop).astype(np.float32)
    ref = cv2.resize(big[60:1140, 60:1140], None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA) / 255.0
    native = (1200, 1200)
    for refs in ([ref.astype(np.float32)], []):
        stamps = [time.process_time()]
        engine.refine(
            EngineRequest(
                crop,
                mask,
                refs,
                native_size=native,
                is_cancelled=lambda s=stamps: s.append(time.process_time()),
            )
        )
        gaps = np.diff([*stamps, time.process_time()])
        print(f"\n{len(refs)} reference(s): {len(gaps)} checks, longest gap {gaps.max():.2f} s CPU")
        assert gaps.max() <= 2 * 0.5  # two cores: half a second of wall time
    calls = []
    with pytest.raises(Cancelled):
        engine.refine(
            EngineRequest(
                crop,
                mask,
                [ref.astype(np.float32)],
                native_size=native,
                is_cancelled=lambda: calls.append(1) or len(calls) > 3,
            )
        )


def test_bench_classic_prints_seconds_per_megapixel(capsys):
    """``touchup bench classic`` (small, one kind) prints a figure per damage with the load."""
    import json

    from touchup.backend.app.cli import main

    assert main(["bench", "classic", "--side", "96", "--kinds", "jpeg", "--repeat", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [timing] = report["timings"]
    assert timing["kind"] == "jpeg" and timing["wall_s_per_mp"] > 0 and "deblock" in timing["steps"]
    assert len(report["load_before"]) == 3
