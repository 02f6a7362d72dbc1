"""The ``touchup`` command end to end: what a user typing it sees and gets."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import free_endpoint


def touchup(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "touchup.backend", *args], capture_output=True, text=True, timeout=timeout
    )


def photo(h: int = 120, w: int = 160, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A smooth, photo-like test image (noise would not survive any resampling)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [xx / w, yy / h, 0.5 + 0.4 * np.sin(xx / 9) * np.cos(yy / 7), np.ones_like(xx)][:channels]
    top = np.iinfo(dtype).max
    return (np.stack(planes, axis=2) * top).astype(dtype) if channels > 1 else (planes[0] * top).astype(dtype)


@pytest.mark.parametrize(
    "channels, dtype",
    [(3, np.uint8), (4, np.uint8), (3, np.uint16), (1, np.uint8)],
    ids=["rgb8", "rgba8", "rgb16", "grey8"],
)
def test_refine_keeps_size_mode_depth_and_outside_pixels(backend, tmp_path, channels, dtype):
    image = photo(channels=channels, dtype=dtype)
    if channels == 4:
        image[:, :80, 3] = np.iinfo(dtype).max // 2  # the source's own alpha must survive
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), image)
    r = touchup("refine", str(src), "--box", "40,30,50,40", "-o", str(out), "--endpoint", backend)
    assert r.returncode == 0, r.stderr
    result = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert result.shape == image.shape and result.dtype == image.dtype
    outside = np.ones(image.shape[:2], bool)
    outside[30:70, 40:90] = False
    assert np.array_equal(result[outside], image[outside])
    if channels == 4:
        assert np.array_equal(result[:, :, 3], image[:, :, 3])


def test_layer_out_is_what_a_plugin_receives(backend, tmp_path):
    image = photo()
    cv2.imwrite(str(tmp_path / "in.png"), image)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(mask, (80, 60), 20, 255, -1)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    r = touchup(
        "refine",
        str(tmp_path / "in.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "-o",
        str(tmp_path / "out.png"),
        "--layer-out",
        str(tmp_path / "layer.png"),
        "--endpoint",
        backend,
    )
    assert r.returncode == 0, r.stderr
    layer = cv2.imread(str(tmp_path / "layer.png"), cv2.IMREAD_UNCHANGED)
    info = json.loads((tmp_path / "layer.png.json").read_text())
    assert layer.shape[2] == 4
    assert (info["x"], info["y"]) == (60, 40) and (info["width"], info["height"]) == (41, 41)
    alpha = layer[:, :, 3]
    under = mask[info["y"] : info["y"] + info["height"], info["x"] : info["x"] + info["width"]]
    assert (alpha[under == 0] == 0).all()  # alpha 0 wherever the selection is 0
    assert alpha[20, 20] == 255  # deep inside: fully replaced


def test_refine_starts_a_backend_when_none_runs(tmp_path):
    cv2.imwrite(str(tmp_path / "in.png"), photo())
    endpoint = free_endpoint()
    r = touchup(
        "refine",
        str(tmp_path / "in.png"),
        "--box",
        "10,10,20,20",
        "-o",
        str(tmp_path / "o.png"),
        "--endpoint",
        endpoint,
    )
    assert r.returncode == 0, r.stderr
    assert "starting one for this call" in r.stderr
    assert (tmp_path / "o.png").exists()
    ping = touchup("ping", "--endpoint", endpoint, "--timeout", "0.5")
    assert ping.returncode == 1  # it was stopped again after the call


@pytest.mark.parametrize(
    "case, code",
    [
        ("missing", "file_not_found"),
        ("mask-size", "size_mismatch"),
        ("empty", "empty_mask"),
        ("engine", "unknown_engine"),
        ("unreachable", "unreachable"),
    ],
)
def test_errors_exit_non_zero_with_one_clear_line(backend, tmp_path, case, code):
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), photo())
    cv2.imwrite(str(tmp_path / "small.png"), np.full((10, 10), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((120, 160), np.uint8))
    args = {
        "missing": [str(tmp_path / "nope.png"), "--box", "1,1,5,5"],
        "mask-size": [str(src), "--mask", str(tmp_path / "small.png")],
        "empty": [str(src), "--mask", str(tmp_path / "empty.png")],
        "engine": [str(src), "--box", "1,1,5,5", "--engine", "warp-drive"],
        "unreachable": [str(src), "--box", "1,1,5,5", "--no-start"],
    }[case]
    endpoint = free_endpoint() if case == "unreachable" else backend
    r = touchup("refine", *args, "-o", str(tmp_path / "out.png"), "--endpoint", endpoint)
    assert r.returncode == 1
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and f"[{code}]" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.png").exists()


def test_ping_and_status(backend):
    r = touchup("ping", "--endpoint", backend)
    assert r.returncode == 0 and "pong" in r.stdout
    r = touchup("status", "--endpoint", backend, "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["kind"] == "status"


def test_help_lists_the_commands():
    r = touchup("--help")
    assert r.returncode == 0
    listed = {
        line.split()[0] for line in r.stdout.split("COMMAND", 2)[-1].splitlines() if line.startswith("    ")
    }
    expected = {"serve", "refine", "ping", "status", "stop", "example", "models", "bench", "eval"}
    assert expected <= listed, expected - listed


@pytest.mark.parametrize(
    "reference, min_gain",
    [("reference.png", 6.0), ("unrelated_reference.png", -0.5), (None, -0.5)],
    ids=["reference", "unrelated-reference", "no-reference"],
)
def test_bundled_example_through_cli_and_backend(backend, tmp_path, reference, min_gain):
    """The quick start's job, end to end: >= 6 dB with the real reference, no harm without one."""
    from touchup.backend.tools.example import read_image, region_psnr

    r = touchup("example", "make", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    args = [
        "refine",
        str(tmp_path / "input.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "-o",
        str(tmp_path / "o.png"),
    ]
    if reference:
        args += ["--reference", str(tmp_path / reference)]
    r = touchup(*args, "--endpoint", backend)
    assert r.returncode == 0, r.stderr
    before, after = read_image(tmp_path / "input.png"), read_image(tmp_path / "o.png")
    clean, mask = (
        read_image(tmp_path / "clean.png"),
        cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_GRAYSCALE),
    )
    assert np.array_equal(after[mask == 0], before[mask == 0])
    gain = region_psnr(after, clean, mask) - region_psnr(before, clean, mask)
    print(f"example {reference}: region PSNR gain {gain:+.2f} dB")
    assert gain >= min_gain


def test_serve_flags_override_config_and_engine_options(tmp_path):
    """Every setting can come from a flag; engine options too (ENGINE.KEY=VALUE)."""
    import time

    from touchup.backend.app.commands.serve import parse_engine_option
    from touchup.shared.client import Client

    assert parse_engine_option("qwen-edit.memory_policy=model_offload") == (
        "qwen-edit",
        "memory_policy",
        "model_offload",
    )
    assert parse_engine_option("identity.delay=0.5") == ("identity", "delay", 0.5)
    with pytest.raises(ValueError, match=r"ENGINE\.KEY=VALUE"):
        parse_engine_option("delay=0.5")

    endpoint = free_endpoint()
    config = tmp_path / "config.toml"
    config.write_text(f'max_side = 9000\nlog_file = "{tmp_path / "b.log"}"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "touchup.backend",
            "serve",
            "--endpoint",
            endpoint,
            "--config",
            str(config),
            "--max-side",
            "512",
            "--max-references",
            "2",
            "--engine-option",
            "identity.delay=0.01",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Client(endpoint) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    limits = c.hello(timeout=1)["capabilities"]["limits"]
                    break
                except Exception:
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            assert limits["max_side"] == 512 and limits["max_references"] == 2
            c.shutdown()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_refine_variants_writes_numbered_results_and_a_contact_sheet(backend, tmp_path):
    image = photo()
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), image)
    args = (
        "refine",
        str(src),
        "--box",
        "40,30,50,40",
        "--engine",
        "seeded",
        "--seed",
        "5",
        "--endpoint",
        backend,
    )
    r = touchup(*args, "--variants", "3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert not out.exists()
    results = [cv2.imread(str(tmp_path / f"out-{i}.png"), cv2.IMREAD_UNCHANGED) for i in (1, 2, 3)]
    outside = np.ones(image.shape[:2], bool)
    outside[30:70, 40:90] = False
    for result in results:
        assert result.shape == image.shape and np.array_equal(result[outside], image[outside])
    inside = ~outside
    assert all(not np.array_equal(a[inside], b[inside]) for a, b in itertools.pairwise(results))
    # out-2 is seed 6: the same pixels as a one-variant run with --seed 6.
    r = touchup(*args[:-4], "--seed", "6", "--endpoint", backend, "-o", str(tmp_path / "alone.png"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(cv2.imread(str(tmp_path / "alone.png")), results[1])
    sheet = cv2.imread(str(tmp_path / "out-sheet.png"))
    assert sheet is not None and sheet.shape[1] >= 4 * 160  # before + three variants, side by side
    r = touchup(*args, "--variants", "9", "-o", str(out))
    assert r.returncode == 1 and "variants must be between 1 and 8" in r.stderr and "[bad_params]" in r.stderr
