"""The GIMP 3 plug-in inside real GIMP 3, against a real backend (classic engine).

One GIMP launch runs every batch case (GIMP start-up dominates the time); the assertions are
about what a user sees: the new layer's place, name, offset and pixels, the composite outside
the selection, the untouched original layer, and the message when the backend is down.
Interrupting a running job (cancel, the backend dying) needs its own launch each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import TESTS, curve_backend, free_endpoint
from editor_releases import GIMP
from gimp_harness import GimpChroot, open_gimp

from touchup.shared.client import Client, refine_request
from touchup.shared.frames import Frame, FrameDesc
from touchup.shared.geometry import Rect, context_tile

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

W, H = 160, 120
SELECTION = (58, 38, 44, 40)  # ellipse x, y, w, h
FEATHER = 6


def textured(seed: int) -> np.ndarray:
    """A float RGB image in [0, 1] with edges and fine detail (so refining visibly changes it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([xx / W, yy / H, 0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], axis=2)
    for _ in range(12):
        x, y, r = rng.integers(0, W), rng.integers(0, H), rng.integers(4, 14)
        cv2.circle(img, (int(x), int(y)), int(r), rng.random(3).tolist(), -1, lineType=cv2.LINE_AA)
    for i in range(0, W, 9):  # thin stripes: detail a blur destroys
        img[50:70, i : i + 2] = (0.1, 0.1, 0.1)
    return np.clip(img, 0, 1)


def damaged(clean: np.ndarray) -> np.ndarray:
    """``clean`` blurred inside the selection's ellipse, the way a generator smears a detail."""
    blurred = cv2.GaussianBlur(clean, (0, 0), 2.5)
    x, y, w, h = SELECTION
    disc = np.zeros((H, W), np.float32)
    cv2.ellipse(disc, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 1.0, -1)
    if clean.ndim == 3:
        disc = disc[:, :, None]
    return clean * (1 - disc) + blurred * disc


NP_DTYPES = {"u8": np.uint8, "u16": np.uint16, "float": np.float32}


def to_dtype(img: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float":
        return img.astype(np.float32)
    peak = 255 if dtype == "u8" else 65535
    return np.round(img * peak).astype(NP_DTYPES[dtype])


def peak(dtype: np.dtype) -> float:
    return 1.0 if np.issubdtype(dtype, np.floating) else float(np.iinfo(dtype).max)


def raw(host: Path, name: str, img: np.ndarray) -> str:
    (host / name).write_bytes(np.ascontiguousarray(img).tobytes())
    return name


def load(host: Path, name: str, size: tuple[int, int], channels: int, dtype: str) -> np.ndarray:
    data = np.frombuffer((host / name).read_bytes(), NP_DTYPES[dtype])
    return data.reshape(size[1], size[0], channels)


@pytest.fixture(scope="module", params=GIMP, ids=[r.id for r in GIMP])
def gimp(request: pytest.FixtureRequest) -> GimpChroot:
    g = open_gimp(release=request.param)
    yield g
    g.cleanup()


@pytest.fixture(scope="module")
def batch(gimp: GimpChroot, backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every case in one GIMP launch; results by case name, plus the folder and GIMP output."""
    from touchup.backend.tools.example import read_image, write_example

    host, inner = gimp.case_dir("batch")
    clean = textured(1)
    cases: list[dict[str, Any]] = []
    for dtype in ("u8", "u16", "float"):
        ref = cv2.resize(clean[20:100, 40:120], (100, 100), interpolation=cv2.INTER_CUBIC)
        cases.append(
            {
                "name": f"refine_{dtype}",
                "dtype": dtype,
                "width": W,
                "height": H,
                "input_raw": raw(host, f"input_{dtype}.raw", to_dtype(damaged(clean), dtype)),
                "reference_raw": raw(host, f"reference_{dtype}.raw", to_dtype(ref, dtype)),
                "reference_size": [100, 100],
                "selection": {"ellipse": list(SELECTION), "feather": FEATHER},
                "args": {"endpoint": backend, "instruction": f"restore the stripes {dtype}", "context": 64},
            }
        )
    gray_clean = clean.mean(axis=2)
    gray_ref = cv2.resize(gray_clean[20:100, 40:120], (100, 100), interpolation=cv2.INTER_CUBIC)
    cases.append(
        {
            **cases[0],
            "name": "refine_gray",
            "gray": True,
            "input_raw": raw(host, "input_gray.raw", to_dtype(damaged(gray_clean), "u8")),
            "reference_raw": raw(host, "reference_gray.raw", to_dtype(gray_ref, "u8")),
            "args": {"endpoint": backend, "instruction": "restore the stripes gray", "context": 64},
        }
    )
    cases.append({"name": "defaults", "defaults_of": ["strength", "seed", "context", "feather"]})
    cases.append(
        {
            **cases[0],
            "name": "backend_down",
            "args": {"endpoint": "tcp://127.0.0.1:9", "instruction": "anything"},
        }
    )
    cases.append({**cases[0], "name": "no_selection", "selection": {"none": True}})
    example_dir = tmp_path_factory.mktemp("example")
    write_example(example_dir)
    for png in ("input.png", "reference.png"):
        (host / png).write_bytes((example_dir / png).read_bytes())
    mask = read_image(example_dir / "mask.png")
    mask = mask if mask.ndim == 2 else mask[..., 0]
    ex_h, ex_w = mask.shape
    cases.append(
        {
            "name": "example",
            "dtype": "u8",
            "width": ex_w,
            "height": ex_h,
            "input_png": str(inner / "input.png"),
            "reference_png": str(inner / "reference.png"),
            "selection": {"mask_raw": raw(host, "example_mask.raw", mask.astype(np.uint8))},
            "args": {"endpoint": backend, "instruction": ""},
        }
    )
    # A CurveZMQ backend reached only through a connection file (the endpoint field points
    # nowhere), and a backend that answers with a tile far outside the one sent.
    curve, connection_file = curve_backend(tmp_path_factory.mktemp("curve"), engine="classic")
    (host / "gimp-user.touchup").write_bytes(connection_file.read_bytes())
    cases.append(
        {
            **cases[0],
            "name": "via_connection",
            "args": {"endpoint": "tcp://127.0.0.1:9", "connection": str(inner / "gimp-user.touchup"),
                     "instruction": "via connection", "context": 64},
        }
    )  # fmt: skip
    lying_endpoint = free_endpoint()
    lying = subprocess.Popen([sys.executable, str(TESTS / "fake_backend.py"), lying_endpoint, "outside"])
    cases.append(
        {**cases[0], "name": "lying_backend", "args": {"endpoint": lying_endpoint, "instruction": "x"}}
    )
    try:
        results, output = gimp.run("batch", {"cases": cases})
    finally:
        curve.stop()
        lying.terminate()
        lying.wait(10)
    by_name = {r["name"]: r for r in results}
    for r in results:
        assert r["status"] != "driver-error", r["message"]
    return {
        "results": by_name,
        "cases": {c["name"]: c for c in cases},
        "host": host,
        "output": output,
        "example_dir": example_dir,
    }


def _check_refined(batch: dict[str, Any], name: str, instruction: str) -> dict[str, np.ndarray]:
    """Checks every successful refine must pass; returns the arrays for case-specific checks."""
    r, case, host = batch["results"][name], batch["cases"][name], batch["host"]
    assert r["status"] == "success", r.get("message")
    dtype, w, h = case["dtype"], case["width"], case["height"]

    # A new layer, directly above the active (background) layer; nothing else added or removed.
    layer = r["layer"]
    assert layer["name"] == f"Touchup: {instruction}"
    assert [n for n in r["stack_after"] if n != layer["name"]] == r["stack_before"]
    assert layer["index"] == layer["active_index"] - 1

    # It sits inside the context tile around the selection and covers the selection (pixels
    # selected below ~1% may round to a zero blend weight, so they need not be covered).
    mask = load(host, f"{name}.selection.raw", (w, h), 1, dtype)[..., 0]
    ys, xs = np.nonzero(mask)
    tile = context_tile(Rect.from_corners(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), w, h, 64)
    ys, xs = np.nonzero(mask >= 3 * peak(mask.dtype) / 255)
    core = Rect.from_corners(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    x, y = layer["offsets"]
    lw, lh = layer["size"]
    placed = Rect(x, y, lw, lh)
    assert placed.intersect(core) == core, (placed, core)
    assert placed.intersect(tile) == placed, (placed, tile)

    before = load(host, f"{name}.before.raw", (w, h), 4, dtype)
    after = load(host, f"{name}.after.raw", (w, h), 4, dtype)
    result = load(host, f"{name}.result.raw", (lw, lh), 4, dtype)
    local_mask = mask[y : y + lh, x : x + lw]

    # The layer is transparent wherever nothing was selected, and the soft edge travelled.
    alpha = result[..., 3]
    full = peak(result.dtype)
    assert (alpha[local_mask == 0] == 0).all()
    opaque = alpha >= full * (1 - 1e-4)  # float blends may stop a rounding error short of 1
    assert opaque.any(), "the selection's core should be fully covered"
    assert ((alpha > 0) & ~opaque).any(), "a feathered selection should give a soft edge"

    # The composite outside the selection is bit-for-bit what it was; inside, it changed.
    assert np.array_equal(after[mask == 0], before[mask == 0])
    assert not np.array_equal(after[mask > 0], before[mask > 0])

    # The user's own layer is untouched.
    layer_before = load(host, f"{name}.layer_before.raw", (w, h), 4, dtype)
    layer_after = load(host, f"{name}.layer_after.raw", (w, h), 4, dtype)
    assert np.array_equal(layer_before, layer_after)
    return {"before": before, "after": after, "result": result, "mask": mask}


def test_refine_8bit_with_reference_adds_layer_above(batch: dict[str, Any]) -> None:
    _check_refined(batch, "refine_u8", "restore the stripes u8")


def test_refine_16bit_keeps_16bit_precision(batch: dict[str, Any]) -> None:
    arrays = _check_refined(batch, "refine_u16", "restore the stripes u16")
    rgb = arrays["result"][..., :3][arrays["result"][..., 3] > 0]
    # Had the pixels been squeezed through 8 bits, every value would be a multiple of 257.
    assert (rgb % 257 != 0).mean() > 0.5


def test_refine_linear_float_stays_float(batch: dict[str, Any]) -> None:
    arrays = _check_refined(batch, "refine_float", "restore the stripes float")
    rgb = arrays["result"][..., :3][arrays["result"][..., 3] > 0]
    # Linear float pixels travel as float: no 8- or 16-bit quantisation steps.
    assert (np.abs(rgb * 65535 - np.round(rgb * 65535)) > 1e-3).mean() > 0.5


def test_grayscale_image_gets_a_grayscale_layer(batch: dict[str, Any]) -> None:
    _check_refined(batch, "refine_gray", "restore the stripes gray")
    assert batch["results"]["refine_gray"]["layer"]["gray"], "the result layer is not grayscale"


def test_dialog_defaults_are_the_protocol_defaults(batch: dict[str, Any]) -> None:
    """GIMP's dialog starts from the values Krita's docker and the backend use."""
    from touchup.shared.client import DEFAULT_PARAMS

    defaults = batch["results"]["defaults"]["defaults"]
    assert defaults == {k: DEFAULT_PARAMS[k] for k in defaults}


def test_backend_down_fails_cleanly_with_instructions(batch: dict[str, Any]) -> None:
    r = batch["results"]["backend_down"]
    assert r["status"] == "execution-error"
    assert "touchup serve" in r["message"]
    assert "tcp://127.0.0.1:9" in r["message"]
    assert r["stack_after"] == r["stack_before"]
    assert "layer" not in r
    # The same text is shown to the user through Gimp.message.
    assert "The Touchup backend is not running" in batch["output"]


def test_empty_selection_is_refused_with_a_message(batch: dict[str, Any]) -> None:
    r = batch["results"]["no_selection"]
    assert r["status"] == "execution-error"
    assert "nothing is selected" in r["message"].lower()
    assert r["stack_after"] == r["stack_before"]


def test_bundled_example_end_to_end(batch: dict[str, Any]) -> None:
    from touchup.backend.tools.example import read_image, region_psnr

    arrays = _check_refined(batch, "example", "from Reference")
    clean = read_image(batch["example_dir"] / "clean.png")
    mask = arrays["mask"]
    before = arrays["before"][..., :3]
    after = arrays["after"][..., :3]
    gain = region_psnr(after, clean, mask) - region_psnr(before, clean, mask)
    assert gain > 1.0, f"the refined patch is only {gain:.2f} dB closer to the clean photo"


def _slow_case(host: Path, name: str, endpoint: str) -> dict[str, Any]:
    """A case whose job runs long enough to interrupt: 60 identity steps of 0.2 s (12 s)."""
    return {
        "name": name,
        "dtype": "u8",
        "width": W,
        "height": H,
        "input_raw": raw(host, f"{name}.input.raw", to_dtype(damaged(textured(2)), "u8")),
        "selection": {"ellipse": list(SELECTION)},
        "args": {"endpoint": endpoint, "preset": "identity", "steps": 60},
    }


def _interrupt_running_job(
    gimp: GimpChroot, case: dict[str, Any], endpoint: str, interrupt: Callable[[Client], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``case`` in GIMP and, once the backend reports its job running, call ``interrupt``
    from another thread. Returns (the case's results, what the interrupting thread saw)."""
    seen: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        with Client(endpoint) as client:
            while time.monotonic() < deadline:
                running = client.status()["queue"]["running"]
                if running and running["step"] >= 2:
                    seen["at"] = time.monotonic()
                    interrupt(client)
                    return
                time.sleep(0.05)
        seen["error"] = "the job never ran"

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    [r], _output = gimp.run(case["name"], {"cases": [case]})
    seen["gimp_done"] = time.monotonic()
    thread.join(30)
    assert "error" not in seen, seen
    return r, seen


def _assert_image_unchanged(gimp: GimpChroot, r: dict[str, Any]) -> None:
    """No layer added, and the composite is exactly what it was."""
    host = gimp.path(gimp.inner / r["name"])
    assert r["stack_after"] == r["stack_before"] and "layer" not in r
    before = load(host, f"{r['name']}.before.raw", (W, H), 4, "u8")
    after = load(host, f"{r['name']}.after.raw", (W, H), 4, "u8")
    assert np.array_equal(after, before)


def test_cancelled_progress_leaves_the_image_and_stops_the_backend_job(
    gimp: GimpChroot, backend_factory: Any
) -> None:
    slow = backend_factory(engine="classic", engines={"identity": {"delay": 0.2}})
    host, _ = gimp.case_dir("cancel")

    def cancel_like_gimp(client: Client) -> None:
        # GIMP's progress-cancel handler closes the plug-in with kill_it: a SIGKILL (no PDB call
        # cancels another plug-in's progress, so the test does the same).
        cancel["killed"] = gimp.plugin_pids()
        for pid in cancel["killed"]:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while client.status()["queue"]["running"] and time.monotonic() - killed_at < 30:
            time.sleep(0.05)
        cancel["job_stopped_after_s"] = time.monotonic() - killed_at

    cancel: dict[str, Any] = {}
    r, _ = _interrupt_running_job(
        gimp, _slow_case(host, "cancel", slow.endpoint), slow.endpoint, cancel_like_gimp
    )
    assert len(cancel["killed"]) == 1, cancel

    # GIMP reports the call as not successful; the image is exactly as it was.
    assert r["status"] != "success", r
    _assert_image_unchanged(gimp, r)

    # The backend dropped the job at its next progress message instead of finishing it...
    assert cancel["job_stopped_after_s"] < 2.0, cancel
    assert "cancelled" in slow.log()
    # ... and serves the next job at once.
    src = Frame(FrameDesc(32, 32, 4, "u8", "RGBA", "source"), bytes(32 * 32 * 4))
    mask = Frame(FrameDesc(32, 32, 1, "u8", "RGBA", "mask"), b"\xff" * (32 * 32))
    header, frames = refine_request(src, mask, (0, 0), (32, 32), engine="identity", params={"steps": 2})
    t0 = time.monotonic()
    with Client(slow.endpoint) as client:
        assert client.refine(header, frames, timeout=30).kind == "result"
    assert time.monotonic() - t0 < 3.0


def test_backend_dying_mid_job_fails_with_a_message_and_leaves_the_image(
    gimp: GimpChroot, backend_factory: Any
) -> None:
    doomed = backend_factory(engine="classic", engines={"identity": {"delay": 0.2}})
    host, _ = gimp.case_dir("backend_dies")
    case = _slow_case(host, "backend_dies", doomed.endpoint)
    r, seen = _interrupt_running_job(gimp, case, doomed.endpoint, lambda _client: doomed.proc.kill())

    assert r["status"] == "execution-error", r
    assert "not running" in r["message"] and doomed.endpoint in r["message"], r["message"]
    _assert_image_unchanged(gimp, r)
    # Noticed within the plug-in's idle timeout plus one ping, not after minutes.
    assert seen["gimp_done"] - seen["at"] < 30, seen


def test_a_connection_file_reaches_a_curve_backend(batch: dict[str, Any]) -> None:
    """The plug-in's connection-file argument: keys from `touchup keys add`, encrypted transport."""
    _check_refined(batch, "via_connection", "via connection")


def test_a_result_that_does_not_fit_is_refused(batch: dict[str, Any]) -> None:
    r = batch["results"]["lying_backend"]
    assert r["status"] != "success" and "does not fit" in r["message"], r
    assert r["stack_after"] == r["stack_before"] and "layer" not in r
