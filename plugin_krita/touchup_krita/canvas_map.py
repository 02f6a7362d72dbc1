"""Where a document pixel appears in Krita's canvas widget (no Qt: tested on its own).

Krita 5.1's scripting API has no view transform, so the preview overlay computes it from what
the API and the canvas' scroll area do expose, as measured in Krita 5.1 to 6.0: the canvas'
``zoomLevel()`` is in document units (points), so one image pixel spans
``zoomLevel * 72 / resolution`` widget pixels, and the scroll bars' values are the widget
position of the image's origin, negated. Rotated or mirrored views are not mapped (None).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CanvasMapping:
    """image pixel (x, y) -> canvas widget point ``(x * scale - dx, y * scale - dy)``."""

    scale: float
    dx: float
    dy: float

    def to_widget(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale - self.dx, y * self.scale - self.dy


def canvas_mapping(
    zoom_level: float, resolution: float, scroll: tuple[int, int], rotation: float = 0.0, mirror: bool = False
) -> CanvasMapping | None:
    """The mapping for a view, or None where it cannot be computed (rotated or mirrored view)."""
    if mirror or abs(rotation % 360.0) > 1e-6 or zoom_level <= 0 or resolution <= 0:
        return None
    return CanvasMapping(zoom_level * 72.0 / resolution, float(scroll[0]), float(scroll[1]))
