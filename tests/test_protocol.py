"""Protocol v1: frames and headers survive a round trip; every malformed input has its code."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

from touchup.backend.pipeline.imaging import array_to_frame, frame_to_array
from touchup.shared.client import refine_request
from touchup.shared.frames import Frame, FrameDesc, FrameError
from touchup.shared.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Kind,
    ProtocolError,
    decode,
    encode,
    make_header,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_frames_round_trip_bit_exact(dtype, channels):
    rng = np.random.default_rng(channels)
    arr = (rng.random((7, 5, channels)) * (255 if dtype == np.uint8 else 1000)).astype(dtype)
    parts = encode(make_header(Kind.RESULT), [array_to_frame(arr, "result")])
    msg = decode([bytes(memoryview(p)) for p in parts])
    back = frame_to_array(msg.frame("result"))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)


def test_bgra_frames_arrive_in_rgba_order():
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)
    frame = array_to_frame(rgba, "source", order="BGRA")
    assert bytes(frame.data) == bytes([30, 20, 10, 40])  # what Krita's pixelData holds
    assert frame_to_array(frame).tolist() == rgba.tolist()


def test_pixels_travel_raw_never_encoded():
    """The pixel frame is exactly width*height*channels samples -- no PNG, no base64."""
    arr = np.arange(4 * 3 * 4, dtype=np.uint8).reshape(4, 3, 4)
    header, frames = refine_request(
        array_to_frame(arr, "x"), array_to_frame(arr[:, :, 0], "y"), origin=(1, 2), doc_size=(10, 10)
    )
    parts = encode(header, frames)
    assert bytes(memoryview(parts[1])) == arr.tobytes()
    assert len(bytes(memoryview(parts[2]))) == 12
    decoded = msgpack.unpackb(parts[0])
    assert [f["role"] for f in decoded["frames"]] == ["source", "mask"]
    assert decoded["v"] == list(PROTOCOL_VERSION)
    assert b"PNG" not in bytes(memoryview(parts[1]))


@pytest.mark.parametrize(
    "parts, code",
    [
        ([b"\xc1\xc1"], ErrorCode.MALFORMED),  # 0xc1 is never valid msgpack
        ([msgpack.packb([1, 2])], ErrorCode.MALFORMED),  # not a map
        ([msgpack.packb({"kind": "ping", "v": [2, 0]})], ErrorCode.PROTOCOL_MISMATCH),
        (
            [msgpack.packb({"kind": "ping", "frames": [{"width": 1, "height": 1, "channels": 1}]})],
            ErrorCode.FRAME_COUNT,
        ),
        ([msgpack.packb({"kind": "ping"}), b"x"], ErrorCode.FRAME_COUNT),
        (
            [
                msgpack.packb(
                    {"kind": "r", "frames": [{"width": 2, "height": 2, "channels": 3, "dtype": "u8"}]}
                ),
                b"x" * 11,
            ],
            ErrorCode.FRAME_SIZE,
        ),
        (
            [msgpack.packb({"kind": "r", "frames": [{"width": 2, "height": 2, "channels": 2}]}), b"x" * 4],
            ErrorCode.BAD_FRAME,
        ),
        (
            [
                msgpack.packb(
                    {"kind": "r", "frames": [{"width": 1, "height": 1, "channels": 1, "dtype": "f64"}]}
                ),
                b"x" * 8,
            ],
            ErrorCode.BAD_FRAME,
        ),
    ],
)
def test_decode_rejects_with_stable_codes(parts, code):
    with pytest.raises(ProtocolError) as info:
        decode(parts)
    assert info.value.code == code
    assert info.value.message  # a human line, always


def test_major_version_mismatch_message_is_actionable():
    with pytest.raises(ProtocolError) as info:
        decode([msgpack.packb({"kind": "hello", "v": [3, 1]})])
    assert "update the plugin and the backend" in info.value.message


def test_minor_version_difference_is_accepted():
    msg = decode([msgpack.packb({"kind": "hello", "v": [PROTOCOL_VERSION[0], 99]})])
    assert msg.kind == "hello"


def test_frame_validate_reports_sizes():
    frame = Frame(FrameDesc(4, 4, 4, "u16"), b"\0" * 10)
    with pytest.raises(FrameError, match="needs 128"):
        frame.validate()


def test_f32_frames_keep_hdr_values():
    arr = np.array([[[2.5, -1.0, 1e6]]], np.float32)
    back = frame_to_array(decode(encode({"kind": "x"}, [array_to_frame(arr, "s")])).frames[0])
    assert back.tolist() == arr.tolist()
    assert struct.unpack("<f", bytes(array_to_frame(arr, "s").data)[:4])[0] == 2.5
