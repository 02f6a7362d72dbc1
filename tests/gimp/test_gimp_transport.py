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


def test_progress_names_the_variant_and_fills_the_bar_across_all_of_them() -> None:
    header = {"stage": "refine", "step": 3, "total": 6, "variant": 1, "variants": 3}
    event = transport.progress_of(header)
    assert event.text == "Touchup: Refining, variant 2 of 3…"
    assert event.fraction == pytest.approx((1 + 0.5) / 3)
    # One variant reads as it always did.
    single = transport.progress_of({"stage": "refine", "step": 3, "total": 6, "variant": 0, "variants": 1})
    assert single.text == "Touchup: Refining…" and single.fraction == pytest.approx(0.5)


def test_each_presets_default_variant_count_comes_from_hello() -> None:
    hello = {
        "capabilities": {
            "default_engine": "classic",
            "engines": [
                {
                    "name": "classic",
                    "presets": [{"name": "default", "variants": 1}],
                    "available": {"ok": True},
                },
                {
                    "name": "flux",
                    "default_preset": "fill",
                    "presets": [{"name": "dev", "variants": 2}, {"name": "fill", "variants": 4}],
                    "available": {"ok": True},
                },
            ],
        }
    }
    assert transport.preset_variants(hello) == {
        "classic/default": 1,
        "flux/dev": 2,
        "flux/fill": 4,
        "flux": 4,
    }
    offer = transport.Offer(transport.presets_from_hello(hello), transport.preset_variants(hello))
    assert offer.default_variants("flux/fill") == 4
    assert offer.default_variants("flux") == 4  # the engine alone: its default preset
    assert offer.default_variants("") == 1  # empty: the backend's default preset
    assert offer.default_variants("unknown/one") is None


def test_a_failure_after_some_variants_says_they_stay() -> None:
    exc = transport.BackendError("engine_failed", "out of luck")
    assert "stay in the image" not in transport.user_message(exc, "tcp://127.0.0.1:9")
    assert transport.user_message(exc, "tcp://127.0.0.1:9", kept=2).endswith(
        "\nThe 2 variants that finished before that stay in the image."
    )
    assert transport.user_message(exc, "tcp://127.0.0.1:9", kept=1).endswith(
        "\nThe variant that finished before that stays in the image."
    )


def test_each_variant_is_handed_over_while_the_later_ones_are_computed(backend: str) -> None:
    """Variant 1 must reach ``on_variant`` before variant 2 is computed (a backend failing
    later still leaves the plug-in the finished ones), and the progress text must name the
    variant being made."""
    rng = np.random.default_rng(1)
    src = Frame(
        FrameDesc(48, 40, 4, "u8", "RGBA", "source"), rng.integers(0, 255, (40, 48, 4), np.uint8).tobytes()
    )
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:36] = 255
    header, frames = transport.refine_request(
        src,
        Frame(FrameDesc(48, 40, 1, "u8", "RGBA", "mask"), mask.tobytes()),
        origin=(5, 7),
        doc_size=(100, 80),
        engine="seeded",
        params={"variants": 3, "seed": 5},
    )
    log: list[tuple[str, object]] = []
    result = transport.run_refine(
        backend,
        header,
        frames,
        on_progress=lambda event: log.append(("progress", event)),
        on_variant=lambda msg: log.append(("variant", msg)),
    )
    variants = [m for kind, m in log if kind == "variant"]
    assert [transport.variant_position(m.header) for m in variants] == [(0, 3), (1, 3)]
    assert transport.variant_position(result.header) == (2, 3)
    # Variant 0 came before any progress of variant 2: it was handed over mid-job.
    first = next(i for i, (kind, _m) in enumerate(log) if kind == "variant")
    later = [e.variant for kind, e in log[first:] if kind == "progress"]
    assert 2 in later
    texts = {e.text for kind, e in log if kind == "progress"}
    assert {"Touchup: Refining, variant 1 of 3…", "Touchup: Refining, variant 3 of 3…"} <= texts
    names = [transport.variant_layer_name(m.header) for m in [*variants, result]]
    assert names == ["Variant 1 of 3 (seed 5)", "Variant 2 of 3 (seed 6)", "Variant 3 of 3 (seed 7)"]


def test_a_variants_group_is_named_like_the_single_layer_would_be() -> None:
    assert transport.variants_group_name("make it gold") == "Touchup: make it gold"
    assert transport.variants_group_name("", "Logo") == "Touchup: from Logo"
    # Neither an instruction nor a reference: the group says what it holds.
    assert transport.variants_group_name("") == "Touchup: variants"
    assert transport.result_layer_name("") == "Touchup: refined selection"  # one result, as before
