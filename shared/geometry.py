"""Region geometry every client must agree on: which tile to read and send for a selection.

Clients send only the selection's bounding box grown by the context margin, clamped to the
canvas -- never the whole canvas. The margin is given at 1-megapixel scale (as RefineAnything
measures it) and scaled with the document, so a 64 px margin means the same *fraction* of a
small sketch and of a 40-megapixel photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: RefineAnything's default context margin, in pixels at 1-megapixel scale.
DEFAULT_CONTEXT = 64
REFERENCE_AREA = 1024 * 1024


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixel coordinates; ``x1``/``y1`` exclusive."""

    x: int
    y: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    @classmethod
    def from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Rect:
        return cls(x0, y0, x1 - x0, y1 - y0)

    def grow(self, px: int) -> Rect:
        return Rect(self.x - px, self.y - px, self.width + 2 * px, self.height + 2 * px)

    def intersect(self, other: Rect) -> Rect:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        return Rect.from_corners(x0, y0, max(x0, x1), max(y0, y1))

    def union(self, other: Rect) -> Rect:
        if self.empty:
            return other
        if other.empty:
            return self
        return Rect.from_corners(
            min(self.x, other.x), min(self.y, other.y), max(self.x1, other.x1), max(self.y1, other.y1)
        )

    def translate(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height)

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


def scaled_margin(context: float, doc_width: int, doc_height: int) -> int:
    """The context margin in document pixels for a margin given at 1-megapixel scale."""
    if context <= 0:
        return 0
    scale = math.sqrt(max(doc_width * doc_height, 1) / REFERENCE_AREA)
    return max(1, round(context * scale))


def context_tile(selection: Rect, doc_width: int, doc_height: int, context: float = DEFAULT_CONTEXT) -> Rect:
    """The tile a client reads and sends: the selection's bounds grown by the context margin.

    ``selection`` is the bounding box of all non-zero selection pixels in document coordinates.
    The result is clamped to the canvas. An empty selection yields the whole canvas (regenerate
    mode uses this: with nothing selected the whole image is the region).
    """
    canvas = Rect(0, 0, doc_width, doc_height)
    selection = selection.intersect(canvas)  # a selection hanging off the canvas counts inside only
    if selection.empty:
        return canvas
    return selection.grow(scaled_margin(context, doc_width, doc_height)).intersect(canvas)


def mask_bounds(mask: bytes | bytearray | memoryview, width: int, height: int) -> Rect:
    """Bounding box of the non-zero bytes of a one-byte-per-pixel mask (empty Rect when none).

    Pure Python for editors whose API gives no selection bounds; it scans rows with
    ``bytes.strip`` rather than per pixel (about 25 ms for a 4K mask).
    """
    data = bytes(mask)
    if len(data) != width * height:
        raise ValueError(f"mask holds {len(data)} bytes, expected {width}x{height} = {width * height}")
    rows = [y for y in range(height) if data[y * width : (y + 1) * width].strip(b"\x00")]
    if not rows:
        return Rect(0, 0, 0, 0)
    x0, x1 = width, 0
    for y in rows:
        row = data[y * width : (y + 1) * width]
        x0 = min(x0, len(row) - len(row.lstrip(b"\x00")))
        x1 = max(x1, len(row.rstrip(b"\x00")))
    return Rect.from_corners(x0, rows[0], x1, rows[-1] + 1)
