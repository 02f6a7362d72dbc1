"""Writing to Krita: the result becomes a new paint layer; existing layers are never touched.

The node is created, filled with ``setPixelData`` and only then added to the tree: libkis
records ``addChildNode`` as one undoable command while ``setPixelData`` on a node outside the
tree records nothing, so a single Undo removes the whole result.
"""

from __future__ import annotations

from typing import Any

from touchup.shared.frames import Frame

from .document import Capture, PluginError, ResultTarget, find_node
from .qt import QtCore


def is_open(document: Any) -> bool:
    """Whether ``document`` is still open in Krita (results for closed documents are dropped)."""
    from krita import Krita

    return any(d == document for d in Krita.instance().documents())


def insert_result(capture: Capture | ResultTarget, frame: Frame, origin: tuple[int, int], name: str) -> Any:
    """Add ``frame`` (RGBA result, alpha = blend mask) as layer ``name``; return the new node.

    ``capture``: the job's capture, or the :class:`ResultTarget` the results strip kept of it."""
    document = capture.document
    if not is_open(document):
        raise PluginError("The document was closed before the result arrived; the result was dropped.")
    desc = frame.desc
    space = capture.colorspace
    if desc.channels != 4 or desc.dtype != space.dtype or desc.order != space.order:
        raise PluginError(
            f"The backend answered with {desc.channels}-channel {desc.dtype} {desc.order} pixels, "
            f"but this layer needs 4-channel {space.dtype} {space.order}; update the backend."
        )
    node = document.createNode(name, "paintlayer")
    if (document.colorModel(), document.colorDepth()) != (space.model, space.depth):
        # The source layer has its own colour space: match it on the new (detached) node.
        node.setColorSpace(space.model, space.depth, space.profile)
    node.setPixelData(
        QtCore.QByteArray(bytes(frame.data)), int(origin[0]), int(origin[1]), desc.width, desc.height
    )
    parent, above = _placement(document, capture.source_node_id)
    parent.addChildNode(node, above)
    document.waitForDone()
    return node


def _placement(document: Any, source_node_id: Any) -> tuple[Any, Any]:
    """(parent, node to go above): right above the source layer, else the top of the stack."""
    if source_node_id is not None:
        source = find_node(document, source_node_id)
        if source is not None and source.parentNode() is not None:
            return source.parentNode(), source
    root = document.rootNode()
    layers = [n for n in root.childNodes() if not n.type().endswith("mask")]
    return root, (layers[-1] if layers else None)
