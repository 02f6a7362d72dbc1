"""The results strip's model and the canvas preview's geometry, outside Krita.

The strip keeps each document's recent results for the session (newest first, at most
``KEEP``), so an earlier candidate can still be applied; Discard drops one refine's variants
and nothing else; the preview overlay puts a result's pixels where Apply will put them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from touchup.shared.frames import Frame, FrameDesc
from touchup.shared.geometry import Rect

PLUGIN = Path(__file__).resolve().parents[2] / "plugin_krita" / "touchup_krita"


def _load(name: str) -> ModuleType:
    """A Qt-free plugin module by path (the package itself imports Qt, absent from this venv)."""
    spec = importlib.util.spec_from_file_location(f"touchup_krita_{name}", PLUGIN / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


results = _load("results")
canvas_map = _load("canvas_map")


class Doc:
    """Stands in for a libkis Document: equal when it wraps the same document."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Doc) and other.name == self.name

    __hash__ = None  # type: ignore[assignment]  # libkis wrappers are not hashable by content


def entry(history: Any, doc: Doc, job: int, variant: int = 0, variants: int = 1) -> Any:
    frame = Frame(FrameDesc(2, 2, 4, "u8", "BGRA", "result"), bytes([variant]) * 16)
    return results.ResultEntry(
        key=history.new_key(),
        document=doc,
        target=None,
        frame=frame,
        origin=(10, 20),
        selection=Rect(10, 20, 2, 2),
        layer_name=f"Touchup: x (seed {variant})",
        seed=100 + variant,
        preset="seeded",
        instruction="crisp lettering",
        variant=variant,
        variants=variants,
        job_key=job,
    )


def test_history_keeps_newest_refine_first_per_document_and_drops_the_oldest() -> None:
    history = results.ResultHistory(keep=3)
    a, b = Doc("a"), Doc("b")
    added = [entry(history, a, job=1, variant=i, variants=4) for i in range(4)]
    dropped = []
    for e in added:
        dropped += history.add(e)
    history.add(entry(history, b, job=2))
    shown = history.entries(Doc("a"))  # a fresh wrapper of the same document
    assert [e.variant for e in shown] == [1, 2, 3]  # one refine's variants in reading order
    assert dropped == [added[0]]
    assert [e.seed for e in history.entries(b)] == [100]
    assert history.find(added[2].key) is added[2]


def test_history_stays_under_its_byte_budget_oldest_first() -> None:
    history = results.ResultHistory(max_bytes=40)  # each test entry holds 16 bytes of pixels
    a, b = Doc("a"), Doc("b")
    first, second, third = entry(history, a, job=1), entry(history, b, job=2), entry(history, a, job=3)
    assert history.add(first) == [] and history.add(second) == []
    assert history.add(third) == [first]  # the oldest goes, whichever document it belongs to
    assert history.nbytes() == 32 and history.entries(b) == [second]
    tiny = results.ResultHistory(max_bytes=1)
    only = entry(tiny, a, job=1)
    assert tiny.add(only) == [] and tiny.entries(a) == [only]  # the newest always stays


def test_discard_drops_one_refines_variants_only() -> None:
    history = results.ResultHistory()
    doc = Doc("a")
    earlier = entry(history, doc, job=1)
    history.add(earlier)
    batch = [entry(history, doc, job=2, variant=i, variants=3) for i in range(3)]
    for e in batch:
        history.add(e)
    gone = history.remove({e.key for e in history.batch(batch[1].key)})
    assert sorted(e.key for e in gone) == sorted(e.key for e in batch)
    assert history.entries(doc) == [earlier]  # an earlier result can still be applied


def test_closed_documents_are_forgotten() -> None:
    history = results.ResultHistory()
    history.add(entry(history, Doc("open"), job=1))
    history.add(entry(history, Doc("closed"), job=2))
    history.forget(lambda d: d.name == "open")
    assert history.count() == 1 and history.entries(Doc("closed")) == []


def test_tooltip_names_seed_preset_and_instruction() -> None:
    history = results.ResultHistory()
    tip = entry(history, Doc("a"), job=1, variant=1, variants=4).tooltip
    assert tip.splitlines() == ["Seed 101", "Preset seeded", "Instruction: crisp lettering", "Variant 2 of 4"]


def test_thumbnail_zooms_on_the_selection_inside_the_result() -> None:
    frame_rect = Rect(100, 100, 200, 100)
    assert results.zoom_rect(Rect(150, 120, 40, 40), frame_rect) == Rect(144, 114, 52, 52)
    # A selection reaching past the result is clipped to it; none inside: the whole result.
    assert results.zoom_rect(Rect(90, 90, 30, 30), frame_rect) == Rect(100, 100, 23, 23)
    assert results.zoom_rect(Rect(0, 0, 5, 5), frame_rect) == frame_rect


def test_canvas_mapping_matches_what_krita_shows() -> None:
    # Measured in Krita 5.1.5 under Xvfb: a 300 ppi document at zoomLevel 8.333 (200 %) scrolled
    # to (125, 95) showed image pixel (100, 80) at canvas widget (75, 65).
    mapping = canvas_map.canvas_mapping(8.333333333333334, 300.0, (125, 95))
    assert mapping is not None
    x, y = mapping.to_widget(100, 80)
    assert (round(x), round(y)) == (75, 65)
    assert canvas_map.canvas_mapping(1.0, 72.0, (0, 0), rotation=90.0) is None
    assert canvas_map.canvas_mapping(1.0, 72.0, (0, 0), mirror=True) is None


def test_a_newer_refine_comes_first_and_its_variants_read_left_to_right() -> None:
    history = results.ResultHistory()
    a = Doc("a")
    for job in (1, 2):
        for i in (2, 0, 1):  # variants may arrive in any order
            history.add(entry(history, a, job=job, variant=i, variants=3))
    assert [(e.job_key, e.variant) for e in history.entries(a)] == [
        (2, 0),
        (2, 1),
        (2, 2),
        (1, 0),
        (1, 1),
        (1, 2),
    ]
