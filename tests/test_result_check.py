"""Clients check a result against the tile they sent before writing a pixel of it.

A backend (or something pretending to be one) that answers with a tile elsewhere, another
channel order or sample type must make the job fail with ``bad_result`` -- in the CLI, the GIMP
plug-in's transport (and, in tests/krita, inside Krita) -- and leave the user's image alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import free_endpoint

from touchup.shared.client import BackendError, Client
from touchup.shared.frames import Frame, FrameDesc
from touchup.shared.protocol import ErrorCode, Message, make_header
from touchup.shared.result import SentTile, checked_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin_gimp" / "touchup-refine"))
import touchup_transport as transport

HERE = Path(__file__).resolve().parent
SENT = SentTile(10, 20, 100, 80, "BGRA", "u8")


def result(
    w: int, h: int, ox: int, oy: int, order: str = "BGRA", dtype: str = "u8", channels: int = 4
) -> Message:
    size = {"u8": 1, "u16": 2, "f32": 4}[dtype]
    frame = Frame(FrameDesc(w, h, channels, dtype, order, "result"), bytes(w * h * channels * size))
    return Message(make_header("result", origin=[ox, oy], size=[w, h]), [frame])


def test_a_fitting_result_is_accepted():
    frame, origin = checked_result(result(30, 20, 20, 30), SENT)
    assert origin == (20, 30) and (frame.desc.width, frame.desc.height) == (30, 20)


@pytest.mark.parametrize(
    "bad",
    [
        result(5000, 1, -100000, 999999),
        result(30, 20, 95, 30),  # runs past the right edge of the tile
        result(30, 20, 20, 30, order="RGBA"),
        result(30, 20, 20, 30, dtype="u16"),
        result(30, 20, 20, 30, channels=3),
        Message(make_header("result", origin=[20, 30], size=[31, 20]), result(30, 20, 20, 30).frames),
        Message(make_header("result", origin="here"), result(30, 20, 20, 30).frames),
    ],
    ids=["far-outside", "past-edge", "order", "dtype", "channels", "size", "origin-type"],
)
def test_a_result_that_does_not_fit_is_refused(bad):
    with pytest.raises(BackendError) as info:
        checked_result(bad, SENT)
    assert info.value.code == ErrorCode.BAD_RESULT and "nothing was changed" in info.value.message


@pytest.fixture(params=["outside", "order"])
def lying_backend(request):
    endpoint = free_endpoint()
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_backend.py"), endpoint, request.param])
    with Client(endpoint) as c:
        c.ping(timeout=20)
    yield endpoint
    proc.terminate()
    proc.wait(10)


def test_the_cli_refuses_a_lying_backend_and_writes_nothing(lying_backend, tmp_path):
    image = np.full((60, 80, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    out = subprocess.run(
        [sys.executable, "-m", "touchup.backend", "refine", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"),
         "--box", "20,20,20,15", "--endpoint", lying_backend, "--no-start", "--quiet", "--timeout", "30"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1 and "[bad_result]" in out.stderr, out.stderr
    assert not (tmp_path / "out.png").exists()


def test_the_gimp_transport_refuses_a_lying_backend(lying_backend):
    src = Frame(FrameDesc(16, 12, 4, "u8", "RGBA", "source"), bytes(16 * 12 * 4))
    mask = Frame(FrameDesc(16, 12, 1, "u8", "RGBA", "mask"), b"\xff" * (16 * 12))
    header, frames = transport.refine_request(src, mask, origin=(5, 5), doc_size=(40, 40))
    with pytest.raises(BackendError) as info:
        transport.run_refine(lying_backend, header, frames, timeout=30)
    assert info.value.code == ErrorCode.BAD_RESULT
