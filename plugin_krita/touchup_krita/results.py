"""The results strip's model: each document's recent refine results, kept for the session.

A retoucher asks for several candidates, looks at each on the canvas, keeps one and tries again;
an earlier candidate must stay at hand. So every result that arrives (each variant, and single
results that were inserted at once) is recorded here, the newest refine first, at most :data:`KEEP` per
document, and any of them can still be applied while its document is open.

Nothing here touches Krita or Qt: an entry carries the raw result frame (what Apply writes,
bit for bit) and opaque display images the docker made; so this module is tested on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from touchup.shared.frames import Frame
from touchup.shared.geometry import Rect

#: Results kept per document; older ones fall off the end of the strip.
KEEP = 20
#: ...and at most this many bytes of result pixels in all (a 16-bit or float 4K result is
#: hundreds of MB): past it the oldest results go first, the newest always stays.
MAX_BYTES = 1 << 30


class PreviewState(str, Enum):
    """What the canvas shows of the chosen result."""

    OFF = "off"  # nothing chosen: the document as it is
    RESULT = "result"  # the chosen result over the document
    ORIGINAL = "original"  # Compare: the document without the result, the choice kept


@dataclass
class ResultEntry:
    """One refine result as the strip holds it: enough to show it, preview it and apply it."""

    key: int
    #: The Krita document it belongs to (compared with ``==``, as libkis wrappers are fresh objects).
    document: Any
    #: Where and how to insert it: ``document.ResultTarget`` (document, colour space, source layer).
    target: Any
    frame: Frame
    origin: tuple[int, int]
    #: The selection's bounds in the document: what the thumbnail zooms on.
    selection: Rect
    layer_name: str
    seed: int
    preset: str
    instruction: str
    variant: int = 0
    variants: int = 1
    #: Which submission it came from (variants of one job share it; Discard drops them together).
    job_key: int = 0
    #: Display images made by the docker (a thumbnail and the full-size 8-bit preview).
    thumbnail: Any = None
    image: Any = None
    #: The layer it was inserted as (None: not applied yet).
    applied: Any = None

    @property
    def rect(self) -> Rect:
        """Where the result lies in the document."""
        return Rect(self.origin[0], self.origin[1], self.frame.desc.width, self.frame.desc.height)

    @property
    def tooltip(self) -> str:
        from touchup.shared.texts import result_tooltip

        return result_tooltip(self.seed, self.preset, self.instruction, self.variant, self.variants)


@dataclass
class _DocumentResults:
    document: Any
    entries: list[ResultEntry] = field(default_factory=list)


class ResultHistory:
    """Recent results per document, the newest refine first; the strip shows the active document's."""

    def __init__(
        self, keep: int = KEEP, same: Callable[[Any, Any], bool] | None = None, max_bytes: int = MAX_BYTES
    ) -> None:
        self.keep = keep
        self.max_bytes = max_bytes
        self._same = same or (lambda a, b: a == b)
        self._docs: list[_DocumentResults] = []
        self._keys = itertools.count(1)

    def new_key(self) -> int:
        return next(self._keys)

    def add(self, entry: ResultEntry) -> list[ResultEntry]:
        """Record ``entry`` in its document's list -- the newest refine first, its variants in
        reading order (variant 1 left of variant 2, as they were asked for) -- and drop the
        oldest results past :attr:`keep`; returns the entries that fell off."""
        bucket = self._bucket(entry.document, create=True)
        assert bucket is not None
        entries = bucket.entries
        at = 0
        while (
            at < len(entries) and entries[at].job_key == entry.job_key and entries[at].variant < entry.variant
        ):
            at += 1
        entries.insert(at, entry)
        dropped: list[ResultEntry] = []
        while len(entries) > self.keep:
            oldest = min(entries, key=lambda e: e.key)
            entries.remove(oldest)
            dropped.append(oldest)
        while self.nbytes() > self.max_bytes:
            older = [e for e in self._all() if e is not entry]
            if not older:
                break
            dropped += self.remove({min(older, key=lambda e: e.key).key})
        return dropped

    def nbytes(self) -> int:
        """Bytes of result pixels held (what :data:`MAX_BYTES` limits)."""
        return sum(len(e.frame.data) for e in self._all())

    def entries(self, document: Any) -> list[ResultEntry]:
        bucket = self._bucket(document)
        return list(bucket.entries) if bucket else []

    def count(self) -> int:
        return sum(len(b.entries) for b in self._docs)

    def find(self, key: int) -> ResultEntry | None:
        return next((e for e in self._all() if e.key == key), None)

    def remove(self, keys: set[int]) -> list[ResultEntry]:
        """Drop the entries with these keys; returns them."""
        gone: list[ResultEntry] = []
        for bucket in self._docs:
            gone += [e for e in bucket.entries if e.key in keys]
            bucket.entries = [e for e in bucket.entries if e.key not in keys]
        self._docs = [b for b in self._docs if b.entries]
        return gone

    def batch(self, key: int) -> list[ResultEntry]:
        """The entry ``key`` and every other variant of the same submission."""
        entry = self.find(key)
        if entry is None:
            return []
        return [e for e in self.entries(entry.document) if e.job_key == entry.job_key]

    def forget(self, keep_document: Callable[[Any], bool]) -> None:
        """Drop the results of documents for which ``keep_document`` is false (closed ones)."""
        self._docs = [b for b in self._docs if keep_document(b.document)]

    def _all(self) -> Iterator[ResultEntry]:
        for bucket in self._docs:
            yield from bucket.entries

    def _bucket(self, document: Any, create: bool = False) -> _DocumentResults | None:
        for bucket in self._docs:
            if self._same(bucket.document, document):
                return bucket
        if not create:
            return None
        bucket = _DocumentResults(document)
        self._docs.append(bucket)
        return bucket


def zoom_rect(selection: Rect, frame_rect: Rect, margin: float = 0.15) -> Rect:
    """The part of a result a thumbnail shows: the selection plus a little context, inside the
    result's own rectangle (the result covers the selection, feathered edges included)."""
    area = selection.intersect(frame_rect)
    if area.empty:
        return frame_rect
    pad = round(max(area.width, area.height) * margin)
    grown = Rect(area.x - pad, area.y - pad, area.width + 2 * pad, area.height + 2 * pad)
    out = grown.intersect(frame_rect)
    return out if not out.empty else frame_rect
