"""The plug-in's backend side (no GIMP needed): presets offered, messages shown, a real job."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugin_gimp" / "touchup-refine"))
import touchup_transport as transport

from touchup.shared.frames import Frame, FrameDesc


def test_presets_come_from_the_backend(backend: str) -> None:
    presets, status = transport.fetch_presets(backend)
    assert status is None
    assert presets[0] == "classic/default"  # the backend's default engine comes first


def test_backend_down_gives_fallback_presets_and_start_hint() -> None:
    presets, status = transport.fetch_presets("tcp://127.0.0.1:9", timeout=0.3)
    assert presets == list(transport.FALLBACK_PRESETS)
    assert "touchup serve" in status and "tcp://127.0.0.1:9" in status


def test_unavailable_engines_are_not_offered() -> None:
    hello = {
        "capabilities": {
            "default_engine": "classic",
            "engines": [
                {
                    "name": "big",
                    "presets": [{"name": "fast"}],
                    "available": {"ok": False, "reason": "no torch"},
                },
                {"name": "classic", "presets": [{"name": "default"}], "available": {"ok": True}},
            ],
        }
    }
    assert transport.presets_from_hello(hello) == ["classic/default"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", (None, None)), ("classic", ("classic", None)), ("classic/default", ("classic", "default"))],
)
def test_split_preset(text: str, expected: tuple) -> None:
    assert transport.split_preset(text) == expected


def test_refused_job_surfaces_the_backend_message(backend: str) -> None:
    src = Frame(FrameDesc(32, 32, 4, "u8", "RGBA", "source"), bytes(32 * 32 * 4))
    empty = Frame(FrameDesc(32, 32, 1, "u8", "RGBA", "mask"), bytes(32 * 32))
    header, frames = transport.refine_request(src, empty, origin=(0, 0), doc_size=(32, 32))
    with pytest.raises(transport.BackendError) as info:
        transport.run_refine(backend, header, frames)
    text = transport.user_message(info.value, backend)
    assert text.startswith("Touchup could not refine the selection:")
    assert f"[{info.value.code}]" in text


def test_job_reports_progress_and_returns_the_layer(backend: str) -> None:
    rng = np.random.default_rng(0)
    src = Frame(
        FrameDesc(48, 40, 4, "u16", "RGBA", "source"),
        rng.integers(0, 65535, (40, 48, 4), np.uint16).tobytes(),
    )
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:36] = 255
    header, frames = transport.refine_request(
        src,
        Frame(FrameDesc(48, 40, 1, "u8", "RGBA", "mask"), mask.tobytes()),
        origin=(5, 7),
        doc_size=(100, 80),
    )
    events: list[transport.Progress] = []
    result = transport.run_refine(backend, header, frames, on_progress=events.append)
    out = result.frame("result")
    assert out.desc.dtype == "u16" and out.desc.channels == 4
    assert events and all(0.0 <= e.fraction <= 1.0 for e in events)


def test_presets_whose_weights_are_missing_are_not_offered() -> None:
    """An engine can be importable while one of its presets has no weights downloaded."""
    hello = {
        "capabilities": {
            "default_engine": "qwen-edit",
            "engines": [
                {"name": "classic", "presets": [{"name": "default"}], "available": {"ok": True}},
                {
                    "name": "qwen-edit",
                    "presets": [
                        {
                            "name": "refine-anything",
                            "present": False,
                            "download": "touchup models download refine-anything",
                        },
                        {"name": "qwen-image-edit-2509", "present": True},
                    ],
                    "available": {"ok": True},
                },
            ],
        }
    }
    assert transport.presets_from_hello(hello) == ["qwen-edit/qwen-image-edit-2509", "classic/default"]
