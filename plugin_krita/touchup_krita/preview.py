"""The canvas preview: the chosen result drawn over Krita's canvas, outside the document.

Why not a layer: libkis records every node it adds or removes (``addChildNode``, ``remove``)
as an undo step, and its one unrecorded path (``setChildNodes``) removes only the first child
and refuses nodes that still have a parent (measured in Krita 5.1). A preview layer would thus
either show in the undo history or reorder the user's layers. A transparent widget over the
canvas widget shows the same pixels where Apply will put them, and can never be undone, saved
or painted on: the document is exactly as it was until Apply.

The overlay follows pans and zooms by polling the view (Krita gives Python no view signals);
rotated or mirrored views are not mapped (``canvas_map``) and show no preview.
"""

from __future__ import annotations

from typing import Any

from touchup.shared.geometry import Rect

from .canvas_map import CanvasMapping, canvas_mapping
from .qt import Qt, QtCore, QtGui, QtWidgets

CANVAS_CLASSES = ("KisOpenGLCanvas2", "KisQPainterCanvas")
POLL_MS = 100


class _Overlay(QtWidgets.QWidget):
    """Paints one image at a document position; lets every mouse and tablet event through."""

    def __init__(self, canvas: QtWidgets.QWidget) -> None:
        super().__init__(canvas)
        self.setObjectName("touchup_preview_overlay")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground, True)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground, True)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.image: QtGui.QImage | None = None
        self.place = Rect(0, 0, 0, 0)  # where the image lies in the document
        self.mapping: CanvasMapping | None = None

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        if self.image is None or self.mapping is None:
            return
        x, y = self.mapping.to_widget(self.place.x, self.place.y)
        scale = self.mapping.scale
        target = QtCore.QRectF(x, y, self.place.width * scale, self.place.height * scale)
        painter = QtGui.QPainter(self)
        # Past 100 % the retoucher inspects pixels: show them as blocks, as Krita does.
        painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(target, self.image)
        painter.end()


class CanvasPreview(QtCore.QObject):
    """Shows one image over the active view of a document; hides it again."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._overlay: _Overlay | None = None
        self._document: Any = None
        self._wanted = False  # shown when its view is active and mappable again (doc switches)
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._follow)

    @property
    def visible(self) -> bool:
        return self._overlay is not None and self._overlay.isVisible()

    def show(self, document: Any, image: QtGui.QImage, place: Rect) -> bool:
        """Draw ``image`` over ``place`` (document pixels) in ``document``'s active view; False
        where that view is not showing (another document active) or cannot be mapped (rotated,
        mirrored)."""
        canvas = _active_canvas(document)
        if canvas is None:
            self.hide()
            return False
        if self._overlay is None or self._overlay.parentWidget() is not canvas:
            self._drop_overlay()
            self._overlay = _Overlay(canvas)
        self._document = document
        self._overlay.image = image
        self._overlay.place = place
        self._overlay.update()  # another result at the same zoom: the mapping alone is unchanged
        self._wanted = True
        if not self._follow():
            self.hide()
            return False
        self._timer.start()
        return True

    def hide(self) -> None:
        self._wanted = False
        self._timer.stop()
        if self._overlay is not None:
            self._overlay.hide()

    def close(self) -> None:
        self.hide()
        self._drop_overlay()

    def _follow(self) -> bool:
        """Keep the overlay over the canvas and its mapping current; False when unmappable."""
        overlay = self._overlay
        if overlay is None:
            return False
        try:
            canvas = overlay.parentWidget()
            mapping = _mapping(self._document, canvas)
        except RuntimeError:  # the view (and the canvas widget with it) was closed
            self._overlay = None
            self._timer.stop()
            return False
        if mapping is None:  # another document active, or a rotated view: wait for it to return
            overlay.hide()
            return False
        if overlay.geometry() != canvas.rect():
            overlay.setGeometry(canvas.rect())
        if mapping != overlay.mapping:
            overlay.mapping = mapping
            overlay.update()
        if self._wanted and not overlay.isVisible():
            overlay.show()
            overlay.raise_()
        return True

    def _drop_overlay(self) -> None:
        if self._overlay is not None:
            try:
                self._overlay.hide()
                self._overlay.deleteLater()
            except RuntimeError:
                pass
            self._overlay = None


def _active_view(document: Any) -> tuple[Any, Any]:
    """(window, view) of the active view when it shows ``document``, else (window, None)."""
    from krita import Krita

    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    if view is None or view.document() is None or view.document() != document:
        return window, None
    return window, view


def _active_canvas(document: Any) -> QtWidgets.QWidget | None:
    """The canvas widget of the active view, if that view shows ``document``."""
    window, view = _active_view(document)
    if view is None:
        return None
    controller = _controller(window.qwindow())
    if controller is None:
        return None
    for widget in controller.viewport().findChildren(QtWidgets.QWidget):
        if widget.metaObject().className() in CANVAS_CLASSES:
            return widget
    return None


def _controller(qwindow: QtWidgets.QWidget) -> QtWidgets.QAbstractScrollArea | None:
    """The canvas scroll area of the active sub-window (Krita's ``KisCanvasController``)."""
    area = qwindow.findChild(QtWidgets.QMdiArea)
    sub = area.activeSubWindow() if area is not None else None
    root = sub.widget() if sub is not None else qwindow
    for scroll in root.findChildren(QtWidgets.QAbstractScrollArea):
        if scroll.metaObject().className() == "KisCanvasController" and scroll.isVisible():
            return scroll
    return None


def _mapping(document: Any, canvas: QtWidgets.QWidget) -> CanvasMapping | None:
    _, view = _active_view(document)
    if view is None:
        return None
    scroll = canvas.parentWidget().parentWidget() if canvas.parentWidget() is not None else None
    if not isinstance(scroll, QtWidgets.QAbstractScrollArea):
        return None
    c = view.canvas()
    return canvas_mapping(
        c.zoomLevel(),
        float(document.xRes()),
        (scroll.horizontalScrollBar().value(), scroll.verticalScrollBar().value()),
        c.rotation(),
        c.mirror(),
    )
