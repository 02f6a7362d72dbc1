"""Linear documents: the sRGB transfer function, and what it does for a refine job.

A retoucher working in a linear document (Krita's scRGB float, GIMP's linear precision) must get
the same refinement as in an sRGB document: the engine sees sRGB-encoded values, the result goes
back into linear light, and nothing outside the selection changes by even one bit. The transfer
function itself is checked against scikit-image's sRGB <-> XYZ conversion, an independent
implementation of the same standard.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2xyz, xyz2rgb
from skimage.color.colorconv import xyz_from_rgb

from touchup.backend.engines.base import (
    Capabilities,
    Engine,
    EngineOutput,
    EngineRequest,
    Preset,
    WorkingSize,
)
from touchup.backend.pipeline.colour import decode_srgb, encode_srgb
from touchup.backend.pipeline.imaging import array_to_frame
from touchup.backend.pipeline.refine import RefineJob, run_refine
from touchup.shared.client import BackendError, Client, refine_request
from touchup.shared.protocol import ErrorCode, Transfer
from touchup.shared.request import REFINE_FIELDS, RequestError, check_fields

#: Linear light of sRGB mid-grey (encoded 0.5): ((0.5 + 0.055) / 1.055) ** 2.4.
MID_GREY = 0.21404114048223255


# -- the transfer function -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linear", "encoded"),
    [
        (0.0, 0.0),
        (1.0, 1.0),
        (MID_GREY, 0.5),
        (0.0031308, 0.040449936),  # where the linear segment meets the power law
        (0.001, 0.01292),  # on the linear segment: 12.92 x
        (0.18, 0.46135613),  # photographic mid-grey card
        (0.5, 0.73535698),
    ],
)
def test_known_values(linear: float, encoded: float) -> None:
    assert float(encode_srgb(np.float32([linear]))[0]) == pytest.approx(encoded, abs=2e-7)
    assert float(decode_srgb(np.float32([encoded]))[0]) == pytest.approx(linear, abs=2e-7)


def test_white_and_black_are_exact() -> None:
    ends = np.float32([0.0, 1.0])
    np.testing.assert_array_equal(encode_srgb(ends), ends)
    np.testing.assert_array_equal(decode_srgb(ends), ends)


def test_agrees_with_scikit_image() -> None:
    """scikit-image decodes inside rgb2xyz and encodes inside xyz2rgb; undoing its matrix leaves
    the bare transfer function."""
    encoded = np.linspace(0.0, 1.0, 4097)
    linear = rgb2xyz(np.repeat(encoded[:, None], 3, axis=1)[None]) @ np.linalg.inv(xyz_from_rgb).T
    np.testing.assert_allclose(decode_srgb(encoded.astype(np.float32)), linear[0, :, 0], atol=3e-7)
    light = np.linspace(0.0, 1.0, 4097)
    xyz = np.repeat(light[:, None], 3, axis=1)[None] @ xyz_from_rgb.T
    np.testing.assert_allclose(encode_srgb(light.astype(np.float32)), xyz2rgb(xyz)[0, :, 0], atol=3e-7)


def test_round_trip_within_float_precision_including_hdr_and_negatives() -> None:
    """scRGB holds values below 0 and above 1: the curve is mirrored and continued, not clipped."""
    light = np.linspace(-2.0, 16.0, 200_001, dtype=np.float32)
    encoded = encode_srgb(light)
    assert (np.diff(encoded) >= 0).all(), "the curve must be monotonic"
    np.testing.assert_array_equal(encode_srgb(-light), -encoded)
    back = decode_srgb(encoded)
    np.testing.assert_allclose(back, light, rtol=1e-6, atol=1e-7)
    values = np.linspace(-1.5, 3.0, 100_001, dtype=np.float32)
    np.testing.assert_allclose(encode_srgb(decode_srgb(values)), values, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_samples_map_to_unit_range_first(dtype, top) -> None:
    samples = np.arange(0, top + 1, 1 if top == 255 else 97, dtype=dtype)
    want = encode_srgb(samples.astype(np.float32) / np.float32(top))
    np.testing.assert_allclose(encode_srgb(samples), want, atol=1e-7)
    np.testing.assert_allclose(decode_srgb(samples), decode_srgb(samples.astype(np.float32) / top), atol=1e-7)
    # every 8-bit code decodes as scikit-image decodes it
    if dtype == np.uint8:
        xyz = rgb2xyz(np.repeat(samples[:, None], 3, axis=1)[None])
        ref = (xyz @ np.linalg.inv(xyz_from_rgb).T)[0, :, 0]
        np.testing.assert_allclose(decode_srgb(samples), ref, atol=3e-7)


def test_half_float_and_in_place() -> None:
    half = np.float16([0.0, MID_GREY, 1.0, 4.0])
    out = encode_srgb(half)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:3], [0.0, 0.5, 1.0], atol=2e-4)  # MID_GREY is rounded to half
    image = np.full((4, 5, 3), MID_GREY, np.float32)
    same = encode_srgb(image, out=image)
    assert same is image
    np.testing.assert_allclose(image, 0.5, atol=1e-6)
    decode_srgb(image, out=image)
    np.testing.assert_allclose(image, MID_GREY, rtol=1e-6)


# -- the refine job --------------------------------------------------------------------------

#: The crop reaches the engine at its own size, so an identity round trip is exact but for float
#: rounding: what is checked is the encoding alone, not resampling.
NATIVE = WorkingSize(target_area=1, multiple=1, min_side=1, max_side=4096, allow_downscale=False)


class RecordingEngine(Engine):
    """Returns its input unchanged and keeps a copy of what it received."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.crops: list[np.ndarray] = []
        self.references: list[list[np.ndarray]] = []

    def make_presets(self) -> dict[str, Preset]:
        return {
            "default": Preset(
                "default", working=NATIVE, capabilities=Capabilities(reference=True, max_references=2)
            )
        }

    def refine(self, request: EngineRequest) -> EngineOutput:
        self.crops.append(request.crop.copy())
        self.references.append([r.copy() for r in request.references])
        return EngineOutput(request.crop.copy())


def ramp_document(h: int, w: int, dtype: np.dtype, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Linear-light RGBA: red ramps across, green down, blue is sRGB mid-grey, alpha opaque."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgba = np.stack(
        [
            lo + (hi - lo) * x / (w - 1),
            lo + (hi - lo) * y / (h - 1),
            np.full_like(x, MID_GREY),
            np.ones_like(x),
        ],
        axis=2,
    )
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        top = np.iinfo(dtype).max
        return np.rint(np.clip(rgba, 0, 1) * top).astype(dtype)
    return rgba.astype(dtype)


def unit(image: np.ndarray) -> np.ndarray:
    top = np.iinfo(image.dtype).max if image.dtype.kind == "u" else 1.0
    return image.astype(np.float64) / top


def selection(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    mask[12 : h - 10, 9 : w - 14] = 1.0
    return mask


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_linear_document_reaches_the_engine_srgb_encoded_and_round_trips(dtype) -> None:
    source = ramp_document(60, 90, dtype)
    mask = selection(60, 90)
    engine = RecordingEngine()
    outcome = run_refine(RefineJob(source, mask, transfer=Transfer.LINEAR), engine)

    [crop] = engine.crops
    rect = outcome.regions[0]
    light = unit(source)[rect.y : rect.y1, rect.x : rect.x1, :3]
    # What the engine saw is the sRGB encoding of the linear crop: blue is mid-grey 0.5 ...
    quantised = {np.uint8: 4e-3, np.uint16: 2e-5, np.float16: 2e-3}.get(dtype, 1e-6)
    np.testing.assert_allclose(crop[:, :, 2], 0.5, atol=quantised)
    # ... and the ramps are encoded sample by sample (the old code sent ``light`` itself).
    np.testing.assert_allclose(crop, encode_srgb(light.astype(np.float32)), atol=1e-6)
    assert crop[:, :, 0].mean() > light[:, :, 0].mean() + 0.1

    # Identity engine: the selection comes back as it was, to within float rounding.
    got, want = unit(outcome.composite), unit(source)
    step = 1.0 / np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 0.0
    atol = {np.float32: 1e-6, np.float16: 1e-3}.get(dtype, step * 0.51)
    np.testing.assert_allclose(got, want, atol=atol)
    if np.dtype(dtype).kind == "u":  # integer samples round back to the very same codes
        np.testing.assert_array_equal(outcome.composite, source)
    # Outside the selection: bit-identical, never converted.
    outside = mask == 0
    np.testing.assert_array_equal(outcome.composite[outside], source[outside])
    assert not outcome.layer[:, :, 3][outside].any()
    assert outcome.meta["transfer"] == "linear"


def test_scrgb_hdr_values_round_trip_and_the_engine_still_gets_unit_range() -> None:
    """scRGB floats go below 0 and far above 1: encoded, scaled into [0, 1] for the engine, and
    restored exactly."""
    source = ramp_document(50, 70, np.float32, lo=-1.0, hi=6.0)
    mask = selection(50, 70)
    engine = RecordingEngine()
    outcome = run_refine(RefineJob(source, mask, transfer=Transfer.LINEAR), engine)
    [crop] = engine.crops
    assert crop.min() >= 0.0 and crop.max() <= 1.0
    np.testing.assert_allclose(outcome.composite, source, rtol=2e-6, atol=2e-6)
    outside = mask == 0
    np.testing.assert_array_equal(outcome.composite[outside], source[outside])
    # The engine's [0, 1] is the crop's encoded range: its darkest and brightest values.
    rect = outcome.regions[0]
    light = source[rect.y : rect.y1, rect.x : rect.x1, :3]
    assert light.min() < 0 and light.max() > 1
    want = encode_srgb(np.float32([light.min(), light.max()]))
    np.testing.assert_allclose(outcome.meta["regions"][0]["value_range"], want, atol=1e-6)


def test_references_are_encoded_too() -> None:
    source = ramp_document(40, 40, np.float32)
    reference = np.full((16, 24, 4), MID_GREY, np.float32)
    engine = RecordingEngine()
    run_refine(RefineJob(source, selection(40, 40), [reference], transfer=Transfer.LINEAR), engine)
    [[seen]] = engine.references
    np.testing.assert_allclose(seen, 0.5, atol=1e-6)


def test_srgb_documents_are_passed_as_they_are() -> None:
    source = ramp_document(40, 50, np.float32)
    engine = RecordingEngine()
    outcome = run_refine(RefineJob(source, selection(40, 50), [source]), engine)
    rect = outcome.regions[0]
    np.testing.assert_array_equal(engine.crops[0], source[rect.y : rect.y1, rect.x : rect.x1, :3])
    np.testing.assert_array_equal(engine.references[0][0], source[:, :, :3])
    assert outcome.meta["transfer"] == "srgb"


def test_default_resampling_happens_in_linear_light() -> None:
    """With an upsampling preset the crop is resized before it is encoded, and the way back
    decodes before it is shrunk: identity then round-trips as closely as in an sRGB document."""
    source = ramp_document(48, 48, np.float32)
    mask = selection(48, 48)
    engine = RecordingEngine()
    engine.presets["default"] = Preset(
        "default", working=WorkingSize(target_area=256 * 256, multiple=8, min_side=64, max_side=512)
    )
    outcome = run_refine(RefineJob(source, mask, transfer=Transfer.LINEAR), engine)
    assert engine.crops[0].shape[0] > 48
    np.testing.assert_allclose(engine.crops[0][:, :, 2], 0.5, atol=1e-5)
    np.testing.assert_allclose(outcome.composite, source, atol=2e-3)


# -- the request field -----------------------------------------------------------------------


def test_request_field_defaults_to_srgb_and_refuses_unknown_values() -> None:
    frame = array_to_frame(np.zeros((4, 4, 4), np.uint8), "source")
    mask = array_to_frame(np.full((4, 4), 255, np.uint8), "mask")
    header, _ = refine_request(frame, mask, (0, 0), (4, 4))
    assert header["transfer"] == "srgb"
    header, _ = refine_request(frame, mask, (0, 0), (4, 4), transfer=Transfer.LINEAR)
    assert header["transfer"] == "linear"

    def transfer_of(value):  # how the backend reads the field: through the one request schema
        return Transfer(check_fields(REFINE_FIELDS, {"transfer": value})["transfer"])

    assert transfer_of(None) is Transfer.SRGB and transfer_of("linear") is Transfer.LINEAR
    for bad in ("gamma", 1, ["linear"]):
        with pytest.raises(RequestError) as err:
            transfer_of(bad)
        assert err.value.code == ErrorCode.BAD_PARAMS and "transfer" in err.value.message


def test_backend_hands_the_identity_engine_srgb_values_of_a_linear_request(backend_factory, tmp_path) -> None:
    """Over the real protocol: a float linear tile of mid-grey light reaches the engine as 0.5,
    comes back as it was, and the engine's record says so from outside the backend."""
    record = tmp_path / "received.jsonl"
    proc = backend_factory(engine="identity", engines={"identity": {"record": str(record)}})
    tile = np.full((64, 64, 4), MID_GREY, np.float32)
    tile[:, :, 0] = np.linspace(0.0, 1.0, 64, dtype=np.float32)[None, :]
    tile[:, :, 3] = 1.0
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    header, frames = refine_request(
        array_to_frame(tile, "source"),
        array_to_frame(mask, "mask"),
        (0, 0),
        (64, 64),
        engine="identity",
        params={"feather": 0},
        transfer="linear",
    )
    with Client(proc.endpoint) as client:
        result = client.refine(header, frames, timeout=60)
        bad = dict(header, transfer="log")
        with pytest.raises(BackendError) as err:
            client.refine(bad, frames, timeout=60)
    assert err.value.code == ErrorCode.BAD_PARAMS and "transfer" in err.value.message
    received = result.header["meta"]["received"]
    assert received["mean"][2] == pytest.approx(0.5, abs=1e-4), received
    # The red ramp arrives encoded: its mean is that of the encoded crop, well above the linear one.
    x, y, w, h = result.header["meta"]["regions"][0]["doc_rect"]
    ramp = tile[y : y + h, x : x + w, 0]
    assert received["mean"][0] == pytest.approx(float(encode_srgb(ramp).mean()), abs=2e-3)
    assert received["mean"][0] > float(ramp.mean()) + 0.1
    assert result.header["meta"]["transfer"] == "linear"
    lines = record.read_text().splitlines()
    assert len(lines) == 1 and '"mean"' in lines[0]
    out = result.frame("result")
    x, y = result.header["origin"]
    d = out.desc
    layer = np.frombuffer(out.data, np.float32).reshape(d.height, d.width, 4)
    inside = tile[y : y + d.height, x : x + d.width][mask[y : y + d.height, x : x + d.width] > 0]
    np.testing.assert_allclose(
        layer[mask[y : y + d.height, x : x + d.width] > 0][:, :3], inside[:, :3], atol=1e-3
    )
