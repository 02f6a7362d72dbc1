"""Reading from Krita: the selection, the context tile's pixels and the reference layer.

Only the tile that ``touchup.shared.geometry.context_tile`` names is read, never the whole
canvas, and pixels are sent exactly as Krita hands them over (BGRA for integer depths, RGBA
for float depths) -- the backend reorders with numpy, which the embedded Python lacks. Nothing
here changes the user's document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from touchup.shared.frames import DTYPE_SIZES, Frame, FrameDesc
from touchup.shared.geometry import Rect, context_tile
from touchup.shared.protocol import Transfer

from .config import SOURCE_LAYER, RefineSettings

#: Krita colour depth -> (wire dtype, channel order Krita uses for RGBA at that depth).
DEPTHS: dict[str, tuple[str, str]] = {
    "U8": ("u8", "BGRA"),
    "U16": ("u16", "BGRA"),
    "F16": ("f16", "RGBA"),
    "F32": ("f32", "RGBA"),
}
SUPPORTED_TEXT = "RGB/Alpha at 8-bit or 16-bit integer, or 16-bit or 32-bit float"
#: Node types whose pixels can be read as a layer.
LAYER_TYPES = {
    "paintlayer",
    "grouplayer",
    "filelayer",
    "filllayer",
    "clonelayer",
    "vectorlayer",
    "filterlayer",
}


#: The gamma-1.0 marker in profile names such as ``sRGB-elle-V2-g10.icc``.
_G10 = re.compile(r"(^|[^a-z0-9])g10([^0-9]|$)")


class PluginError(Exception):
    """Something the user must fix (no selection, unsupported colour model...): shown as is."""


@dataclass
class ColorSpace:
    model: str
    depth: str
    profile: str

    @property
    def dtype(self) -> str:
        return DEPTHS[self.depth][0]

    @property
    def order(self) -> str:
        return DEPTHS[self.depth][1]

    @property
    def transfer(self) -> Transfer:
        return profile_transfer(self.profile)


@dataclass(frozen=True)
class ResultTarget:
    """Where a result layer goes: the document, the colour space it must have, and the source
    layer it goes above (None: the top of the stack). Kept by the results strip, without pixels."""

    document: Any
    colorspace: ColorSpace
    source_node_id: Any = None


@dataclass
class Capture:
    """Everything read from the document for one job: the request's frames and where to paste."""

    document: Any
    tile: Rect
    colorspace: ColorSpace
    source: Frame
    mask: Frame
    references: list[Frame] = field(default_factory=list)
    #: ``uniqueId`` of the source layer (the result goes right above it); None: visible image.
    source_node_id: Any = None
    doc_size: tuple[int, int] = (0, 0)
    #: The selection's bounds (the region the strip's thumbnails zoom on); empty: whole canvas.
    selection: Rect = field(default_factory=lambda: Rect(0, 0, 0, 0))

    @property
    def target(self) -> ResultTarget:
        return ResultTarget(self.document, self.colorspace, self.source_node_id)


def capture(document: Any, settings: RefineSettings) -> Capture:
    """Read the context tile, its selection mask and the reference layer for ``settings``."""
    if document is None:
        raise PluginError("Open a document first.")
    document.waitForDone()  # the projection must reflect the last brush stroke
    width, height = document.width(), document.height()
    node = None
    if settings.source == SOURCE_LAYER:
        node = find_node(document, settings.layer) if settings.layer else document.activeNode()
        if node is None or node.type() not in LAYER_TYPES:
            raise PluginError("Select a layer (not a mask) in the Layers docker, or use the visible image.")
        space = _colorspace(node, f"the layer '{node.name()}'")
    else:
        space = _colorspace(document, "this document")

    selection = document.selection()
    bounds = Rect(0, 0, 0, 0)
    if selection is not None and selection.width() > 0 and selection.height() > 0:
        bounds = Rect(selection.x(), selection.y(), selection.width(), selection.height()).intersect(
            Rect(0, 0, width, height)
        )
    if bounds.empty and settings.mode != "regenerate":
        raise PluginError(
            "Select the region to refine first (any selection tool; feathered selections work)."
        )
    tile = context_tile(bounds, width, height, settings.context)
    if tile.empty:
        raise PluginError("The selection lies outside the canvas.")

    if bounds.empty:  # regenerate without a selection: the whole canvas is the region
        mask = b"\xff" * tile.area
    else:
        mask = bytes(selection.pixelData(tile.x, tile.y, tile.width, tile.height))
        if not mask.strip(b"\x00") and settings.mode != "regenerate":
            raise PluginError("The selection is empty. Select the region to refine first.")

    if node is None:
        pixels = bytes(document.pixelData(tile.x, tile.y, tile.width, tile.height))
    else:
        pixels = bytes(node.projectionPixelData(tile.x, tile.y, tile.width, tile.height))
    source = _frame(pixels, tile.width, tile.height, space, "source")
    mask_frame = Frame(FrameDesc(tile.width, tile.height, 1, "u8", "RGBA", "mask"), mask)

    references = []
    if settings.reference:
        references.append(read_reference(document, settings.reference))
    return Capture(
        document=document,
        tile=tile,
        colorspace=space,
        source=source,
        mask=mask_frame,
        references=references,
        source_node_id=node.uniqueId() if node is not None else None,
        doc_size=(width, height),
        selection=bounds if not bounds.empty else tile,
    )


def read_reference(document: Any, node_id: str) -> Frame:
    """The reference layer's non-transparent content (its exact bounds), as Krita holds it."""
    node = find_node(document, node_id)
    if node is None:
        raise PluginError("The reference layer no longer exists. Pick another one.")
    if node.type() not in LAYER_TYPES:
        raise PluginError(f"'{node.name()}' is not a layer; pick a layer as reference.")
    space = _colorspace(node, f"the reference layer '{node.name()}'")
    rect = node.bounds()
    if rect.width() <= 0 or rect.height() <= 0:
        raise PluginError(f"The reference layer '{node.name()}' is empty.")
    pixels = bytes(node.projectionPixelData(rect.x(), rect.y(), rect.width(), rect.height()))
    return _frame(pixels, rect.width(), rect.height(), space, "reference")


def find_node(document: Any, node_id: Any) -> Any:
    """The node whose ``uniqueId`` (a QUuid, or its text) is ``node_id``, searching the whole tree."""
    wanted = str(node_id.toString() if hasattr(node_id, "toString") else node_id)
    stack = list(document.topLevelNodes())
    while stack:
        node = stack.pop()
        if node.uniqueId().toString() == wanted:
            return node
        stack.extend(node.childNodes())
    return None


def layer_choices(document: Any) -> list[tuple[str, str]]:
    """(uniqueId text, indented name) of every layer, top first, for the reference chooser."""
    out: list[tuple[str, str]] = []

    def walk(nodes: list[Any], depth: int) -> None:
        for node in reversed(nodes):
            if node.type() in LAYER_TYPES:
                out.append((node.uniqueId().toString(), "  " * depth + node.name()))
                walk(node.childNodes(), depth + 1)

    if document is not None:
        walk(list(document.topLevelNodes()), 0)
    return out


def profile_transfer(profile: str) -> Transfer:
    """Whether pixels under the colour profile named ``profile`` hold linear light.

    Krita's scripting API names a profile but does not expose its tone curve, so the name is
    read: Krita's linear profiles are ``scRGB (linear)``, the ``...-g10.icc`` family (what new
    16-bit and float RGB documents get when no profile is named) and "...with linear gamma
    TRC"; imported ones usually say "linear" too. Every other curve (sRGB, gamma 1.8/2.2, Rec. 709, L*) is near enough to
    sRGB for a model trained on sRGB pictures.
    """
    name = profile.lower()
    linear = "linear" in name or "scrgb" in name or "gamma 1.0" in name
    return Transfer.LINEAR if linear or _G10.search(name) else Transfer.SRGB


def _colorspace(obj: Any, what: str) -> ColorSpace:
    model, depth = obj.colorModel(), obj.colorDepth()
    if model != "RGBA" or depth not in DEPTHS:
        raise PluginError(
            f"Touchup works on {SUPPORTED_TEXT}; {what} is {model} {depth}. "
            "Convert a copy with Image > Convert Image Color Space."
        )
    return ColorSpace(model, depth, obj.colorProfile())


def _frame(pixels: bytes, width: int, height: int, space: ColorSpace, role: str) -> Frame:
    expected = width * height * 4 * DTYPE_SIZES[space.dtype]
    if len(pixels) != expected:
        raise PluginError(
            f"Krita returned {len(pixels)} bytes for a {width}x{height} tile, expected {expected}."
        )
    return Frame(FrameDesc(width, height, 4, space.dtype, space.order, role), pixels)
