"""A linear-precision image in real GIMP 3: the engine gets sRGB-encoded values, the selection
comes back as it was, and nothing outside it changes.

The backend runs the identity engine with its ``record`` option, so the test reads what the
engine received from outside the backend; a recording proxy shows what the plug-in sent. A
gamma-encoded image in the same GIMP launch is the control: its values reach the engine as they
are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BackendProcess
from gimp_harness import GimpChroot, RecordingProxy, open_gimp

from touchup.backend.pipeline.colour import encode_srgb

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

#: Linear light of sRGB mid-grey (encoded 0.5).
MID_GREY = ((0.5 + 0.055) / 1.055) ** 2.4
#: 1024 x 1024 with the context margin (64 px) reaching every edge: the identity preset's working
#: size is then the crop's own, nothing is resampled, and only the encoding is under test.
N, BORDER = 1024, 40


def ramp_image(n: int, blue: float) -> np.ndarray:
    """RGB float: red ramps 0..1 across, green 0..1 down, blue constant."""
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    img = np.empty((n, n, 3), np.float32)
    img[:, :, 0] = ramp[None, :]
    img[:, :, 1] = ramp[:, None]
    img[:, :, 2] = blue
    return img


def rect_mask(n: int, border: int) -> np.ndarray:
    mask = np.zeros((n, n), np.uint8)
    mask[border : n - border, border : n - border] = 255
    return mask


@pytest.fixture(scope="module")
def gimp() -> GimpChroot:
    g = open_gimp()
    yield g
    g.cleanup()


@pytest.fixture(scope="module")
def linear_run(gimp: GimpChroot, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One GIMP launch refining both images through a proxy into a recording identity backend."""
    work = tmp_path_factory.mktemp("linear")
    record = work / "received.jsonl"
    backend = BackendProcess(
        work / "backend", engine="identity", engines={"identity": {"record": str(record)}}
    )
    proxy = RecordingProxy(backend.endpoint)
    try:
        host, _ = gimp.case_dir("linear")
        (host / "linear.raw").write_bytes(ramp_image(N, MID_GREY).tobytes())
        (host / "mask.raw").write_bytes(rect_mask(N, BORDER).tobytes())
        control = np.rint(ramp_image(64, 0.5) * 255).astype(np.uint8)
        (host / "control.raw").write_bytes(control.tobytes())
        (host / "control_mask.raw").write_bytes(rect_mask(64, 8).tobytes())
        args = {"endpoint": proxy.endpoint, "preset": "identity", "context": 64, "feather": 0}
        cases = [
            {
                "name": "linear_float",
                "dtype": "float",  # the driver makes float images with FLOAT_LINEAR precision
                "width": N,
                "height": N,
                "input_raw": "linear.raw",
                "selection": {"mask_raw": "mask.raw"},
                "args": args,
            },
            {
                "name": "control_u8",
                "dtype": "u8",  # U8_NON_LINEAR: sRGB-encoded values
                "width": 64,
                "height": 64,
                "input_raw": "control.raw",
                "selection": {"mask_raw": "control_mask.raw"},
                "args": args,
            },
        ]
        results, output = gimp.run("linear", {"cases": cases})
        return {
            "results": {r["name"]: r for r in results},
            "host": host,
            "received": [json.loads(line) for line in record.read_text().splitlines()],
            "sent": proxy.refines(),
            "output": output,
        }
    finally:
        proxy.close()
        backend.stop()


def load(host: Path, name: str, n: int, channels: int, dtype: type) -> np.ndarray:
    return np.frombuffer((host / name).read_bytes(), dtype).reshape(n, n, channels)


def test_linear_precision_is_sent_as_linear_and_the_engine_receives_srgb(linear_run: dict[str, Any]) -> None:
    r = linear_run["results"]["linear_float"]
    assert r["status"] == "success", r.get("message") or linear_run["output"][-3000:]
    sent, received = linear_run["sent"], linear_run["received"]
    assert [h["transfer"] for h in sent] == ["linear", "srgb"], sent
    assert len(received) == 2, received
    got = received[0]
    assert got["size"] == [N, N], got["size"]  # the whole image, not resampled
    # Blue is mid-grey light: the engine got 0.5 (unconverted it would be 0.214) ...
    for stat in ("mean", "min", "max"):
        assert got[stat][2] == pytest.approx(0.5, abs=1e-4), (stat, got[stat])
    # ... and the ramps arrive encoded, their mean well above the linear 0.5.
    encoded_mean = float(encode_srgb(np.linspace(0.0, 1.0, N, dtype=np.float32)).mean())
    assert got["mean"][0] == pytest.approx(encoded_mean, abs=1e-4)
    assert got["mean"][1] == pytest.approx(encoded_mean, abs=1e-4)
    assert encoded_mean > 0.6


def test_linear_selection_round_trips_and_outside_is_bit_identical(linear_run: dict[str, Any]) -> None:
    r, host = linear_run["results"]["linear_float"], linear_run["host"]
    assert r["status"] == "success", r.get("message")
    before = load(host, "linear_float.before.raw", N, 4, np.float32)
    after = load(host, "linear_float.after.raw", N, 4, np.float32)
    mask = load(host, "linear_float.selection.raw", N, 1, np.float32)[..., 0]
    assert before[..., :3] == pytest.approx(ramp_image(N, MID_GREY), abs=1e-6)  # GIMP kept the input
    inside, outside = mask > 0, mask == 0
    assert inside.sum() == (N - 2 * BORDER) ** 2 and outside.any()
    np.testing.assert_array_equal(after[outside], before[outside])
    np.testing.assert_allclose(after[inside], before[inside], atol=2e-6)
    # The new layer itself carries the same values, fully opaque inside the selection.
    x, y = r["layer"]["offsets"]
    w, h = r["layer"]["size"]
    layer = np.frombuffer((host / "linear_float.result.raw").read_bytes(), np.float32).reshape(h, w, 4)
    local = inside[y : y + h, x : x + w]
    np.testing.assert_allclose(layer[local][:, :3], before[y : y + h, x : x + w][local][:, :3], atol=2e-6)
    assert (layer[local][:, 3] == 1.0).all()


def test_gamma_encoded_image_reaches_the_engine_as_it_is(linear_run: dict[str, Any]) -> None:
    r = linear_run["results"]["control_u8"]
    assert r["status"] == "success", r.get("message")
    got = linear_run["received"][1]
    # 0.5 stored as 8-bit code 128: passed through, not encoded a second time (0.735).
    assert got["mean"][2] == pytest.approx(128 / 255, abs=1e-3), got
