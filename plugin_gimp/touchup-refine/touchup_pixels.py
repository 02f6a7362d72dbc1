"""GIMP-side pixel I/O for the plug-in: which Babl format to use, reading tiles, writing the layer.

Pixels are read and written in one format chosen from the image itself -- its component type
(8/16-bit integer, half, float) and its transfer curve (linear, perceptual sRGB-like, or
perceptual "~") in the image's own colour space -- so the round trip through the backend never
quantises a 16-bit image to 8 bits nor converts a linear image to gamma-encoded values.
"""

from __future__ import annotations

from dataclasses import dataclass

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp  # noqa: E402

from touchup.shared.frames import Frame, FrameDesc  # noqa: E402
from touchup.shared.geometry import Rect, context_tile  # noqa: E402
from touchup.shared.protocol import Transfer  # noqa: E402

__all__ = ["PixelFormat", "Rect", "context_tile", "pixel_format"]

#: Image component type -> (Babl type name, wire dtype). The wire has no u32 or double: those
#: travel as float, which holds them without visible loss.
_COMPONENTS: dict[str, tuple[str, str]] = {
    "U8": ("u8", "u8"),
    "U16": ("u16", "u16"),
    "U32": ("float", "f32"),
    "HALF": ("half", "f16"),
    "FLOAT": ("float", "f32"),
    "DOUBLE": ("float", "f32"),
}
#: Image transfer curve -> Babl's RGBA model name.
_MODELS: dict[str, str] = {"LINEAR": "RGBA", "NON_LINEAR": "R'G'B'A", "PERCEPTUAL": "R~G~B~A"}


@dataclass(frozen=True)
class PixelFormat:
    """How the plug-in reads and writes pixels of one image."""

    babl: str  # format name for Gegl.Buffer.get/set, colour space included
    dtype: str  # wire dtype of the same samples
    mask_babl: str  # selection format: 8-bit images send an u8 mask, deeper ones a float mask
    mask_dtype: str
    #: Linear precisions hold light intensities; the backend encodes them for the engine.
    transfer: Transfer = Transfer.SRGB


def pixel_format(image: Gimp.Image, drawable: Gimp.Drawable | None = None) -> PixelFormat:
    """The RGBA format matching ``image``'s precision and the colour space of its pixels."""
    name = image.get_precision().value_nick.upper().replace("-", "_")  # e.g. "U16_NON_LINEAR"
    component, _, trc = name.partition("_")
    babl_type, dtype = _COMPONENTS.get(component, ("float", "f32"))
    model = _MODELS.get(trc, "RGBA")
    encoding = f"{model} {babl_type}"
    babl_name = encoding
    if drawable is not None:
        # Keep the image's own primaries: a plain name would mean sRGB and convert wide-gamut
        # images on the way out and back.
        space = Babl.format_get_space(drawable.get_format())
        if space is not None:
            babl_name = Babl.get_name(Babl.format_with_space(encoding, space))
    transfer = Transfer.LINEAR if model == "RGBA" else Transfer.SRGB  # the pixels read are linear
    if dtype == "u8":
        return PixelFormat(babl_name, dtype, "Y u8", "u8", transfer)
    return PixelFormat(babl_name, dtype, "Y float", "f32", transfer)


def read_rgba(drawable: Gimp.Drawable, rect: Rect, fmt: PixelFormat, role: str) -> Frame:
    """``rect`` (image coordinates) of ``drawable`` as an RGBA frame; outside the layer is transparent."""
    _ok, off_x, off_y = drawable.get_offsets()
    local = Gegl.Rectangle.new(rect.x - off_x, rect.y - off_y, rect.width, rect.height)
    data = drawable.get_buffer().get(local, 1.0, fmt.babl, Gegl.AbyssPolicy.NONE)
    return Frame(FrameDesc(rect.width, rect.height, 4, fmt.dtype, "RGBA", role), bytes(data))


def read_whole(drawable: Gimp.Drawable, fmt: PixelFormat, role: str) -> Frame:
    """All of ``drawable`` (a reference layer) as an RGBA frame, whatever its position."""
    _ok, off_x, off_y = drawable.get_offsets()
    return read_rgba(drawable, Rect(off_x, off_y, drawable.get_width(), drawable.get_height()), fmt, role)


def read_visible(image: Gimp.Image, rect: Rect, fmt: PixelFormat) -> Frame:
    """The visible composite inside ``rect``, through a temporary layer that is never inserted.

    ``Gimp.Layer.new_from_visible`` copies the projection into a free-floating layer: the
    user's layers, their order and the undo history stay exactly as they were.
    """
    merged = Gimp.Layer.new_from_visible(image, image, "touchup-visible")
    try:
        return read_rgba(merged, rect, fmt, "source")
    finally:
        merged.delete()


def read_selection(image: Gimp.Image, rect: Rect, fmt: PixelFormat) -> Frame:
    """The selection's soft values inside ``rect`` as a one-channel mask frame."""
    selection = image.get_selection()
    data = selection.get_buffer().get(
        Gegl.Rectangle.new(rect.x, rect.y, rect.width, rect.height), 1.0, fmt.mask_babl, Gegl.AbyssPolicy.NONE
    )
    return Frame(FrameDesc(rect.width, rect.height, 1, fmt.mask_dtype, "RGBA", "mask"), bytes(data))


def selection_rect(image: Gimp.Image) -> Rect:
    """The selection's bounding box (empty when nothing is selected)."""
    ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not (ok and non_empty):
        return Rect(0, 0, 0, 0)
    return Rect.from_corners(x1, y1, x2, y2)


def insertion_point(image: Gimp.Image, drawable: Gimp.Drawable) -> tuple[Gimp.Item | None, int]:
    """(parent, position) that puts a new layer directly above ``drawable``'s layer."""
    layer = drawable
    if isinstance(drawable, Gimp.LayerMask):
        layer = Gimp.Layer.from_mask(drawable)
    if not isinstance(layer, Gimp.Layer):  # a channel: put the result on top of the stack
        return None, 0
    return layer.get_parent(), image.get_item_position(layer)


def add_result_layer(
    image: Gimp.Image,
    above: Gimp.Drawable,
    name: str,
    origin: tuple[int, int],
    frame: Frame,
    fmt: PixelFormat,
) -> Gimp.Layer:
    """Insert the backend's result as a new layer above ``above``, as one undo step.

    The result's alpha is the blend mask, so the new layer is transparent wherever nothing was
    selected and the composite there stays exactly what it was. Existing layers are not touched.
    """
    parent, position = insertion_point(image, above)
    image.undo_group_start()
    try:
        layer = _new_result_layer(image, name, frame)
        image.insert_layer(layer, parent, position)
        _fill(layer, origin, frame, fmt)
    finally:
        image.undo_group_end()
    return layer


def _new_result_layer(image: Gimp.Image, name: str, frame: Frame) -> Gimp.Layer:
    """A layer the size of the result, of the image's base type, not yet inserted."""
    layer_type = (
        Gimp.ImageType.GRAYA_IMAGE
        if image.get_base_type() == Gimp.ImageBaseType.GRAY
        else Gimp.ImageType.RGBA_IMAGE
    )
    return Gimp.Layer.new(
        image, name, frame.desc.width, frame.desc.height, layer_type, 100.0, Gimp.LayerMode.NORMAL
    )


def _fill(layer: Gimp.Layer, origin: tuple[int, int], frame: Frame, fmt: PixelFormat) -> None:
    """Place an inserted layer at ``origin`` and write the result's pixels into it."""
    desc = frame.desc
    layer.set_offsets(int(origin[0]), int(origin[1]))
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, desc.width, desc.height), fmt.babl, bytes(frame.data))
    buffer.flush()
    layer.update(0, 0, desc.width, desc.height)


@dataclass(frozen=True)
class Variant:
    """One finished variant, checked against the tile that was sent, waiting to be inserted."""

    name: str
    index: int
    origin: tuple[int, int]
    frame: Frame


class VariantGroup:
    """One request's variants as layers of one layer group above the active layer.

    The first variant is visible and the others hidden (toggling the eye compares them; the
    composite shows one candidate at a time), in index order from the top. All variants go in
    together, inside one short undo group, once the job has ended (or failed part-way): an undo
    group held open while the backend computes would swallow whatever the retoucher does to the
    image meanwhile (a Select None would be undone with the variants). Existing layers are
    never touched.
    """

    def __init__(self, image: Gimp.Image, above: Gimp.Drawable, name: str, fmt: PixelFormat) -> None:
        self.image = image
        self.above = above
        self.name = name
        self.fmt = fmt
        self.group: Gimp.GroupLayer | None = None
        #: The variants inserted so far, by index (they may arrive in any order).
        self.layers: dict[int, Gimp.Layer] = {}

    def insert(self, variants: list[Variant]) -> None:
        """Insert every variant at its place in index order (they may have arrived in any
        order), the first shown and selected, as one undo step; nothing when the list is empty."""
        if not variants:
            return
        parent, position = insertion_point(self.image, self.above)
        self.image.undo_group_start()
        try:
            self.group = Gimp.GroupLayer.new(self.image, self.name)
            self.image.insert_layer(self.group, parent, position)
            for variant in sorted(variants, key=lambda v: v.index):
                layer = _new_result_layer(self.image, variant.name, variant.frame)
                self.image.insert_layer(layer, self.group, len(self.layers))
                _fill(layer, variant.origin, variant.frame, self.fmt)
                layer.set_visible(not self.layers)
                self.layers[variant.index] = layer
            # Inserting selects the newest layer; select the one on show, so that what the
            # user paints or looks at next is the visible candidate, not a hidden one.
            self.image.set_selected_layers([self.layers[min(self.layers)]])
        finally:
            self.image.undo_group_end()
