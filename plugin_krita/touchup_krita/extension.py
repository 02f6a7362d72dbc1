"""Krita registration: the Tools > Touchup menu with its actions, and the docker factory."""

from __future__ import annotations

from typing import Any

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from .docker import RefineDialog, make_docker_class
from .qt import QtWidgets

DOCKER_ID = "touchup_docker"
#: id -> menu text. Default shortcuts (Ctrl+Alt+R) live in ``touchup_krita.action``, which Krita
#: reads from the plugin folder, so users can rebind them under Settings > Keyboard Shortcuts.
ACTIONS = {
    "touchup_refine_selection": "Refine Selection…",
    "touchup_refine_again": "Refine Again",
    "touchup_cancel": "Cancel Refine",
    "touchup_compare": "Compare with Original",
}


class TouchupExtension(Extension):
    """Creates the actions in every window; the controller is shared by all of them."""

    def __init__(self, parent: Any) -> None:
        super().__init__(parent)

    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's API name
        menu_action = window.createAction("touchup_menu", "Touchup", "tools")
        menu = QtWidgets.QMenu("Touchup", window.qwindow())
        menu_action.setMenu(menu)
        # The libkis Window wrapper handed to this method is deleted afterwards: never keep it.
        handlers = {
            "touchup_refine_selection": lambda: _guarded(self.refine_selection),
            "touchup_refine_again": lambda: _guarded(lambda: _controller().refine_again()),
            "touchup_cancel": lambda: _guarded(lambda: _controller().cancel()),
            "touchup_compare": lambda: _guarded(lambda: _controller().compare()),
        }
        for action_id, text in ACTIONS.items():
            action = window.createAction(action_id, text, "")
            action.triggered.connect(handlers[action_id])
            menu.addAction(action)

    def refine_selection(self) -> None:
        """Refine Selection…: the settings dialog, then the same path as the docker's button."""
        ctl = _controller()
        window = Krita.instance().activeWindow()
        dialog = RefineDialog(ctl, window.qwindow() if window is not None else None)
        if dialog.exec():
            ctl.refine_active(dialog.form.settings())


def _guarded(handler: Any) -> None:
    """Run a menu handler; a bug shows up as a message in the docker, not a modal script error."""
    try:
        handler()
    except Exception as exc:  # the docker is the place to report it
        import traceback

        traceback.print_exc()
        _controller().report_error(f"Touchup failed: {exc.__class__.__name__}: {exc}")


def _controller() -> Any:
    from .controller import controller

    return controller()


def register() -> None:
    app = Krita.instance()
    app.addExtension(TouchupExtension(app))
    # Krita 6's PyQt6 bindings scope the enum (DockPosition.DockRight); Krita 5's do not have to.
    positions = getattr(DockWidgetFactoryBase, "DockPosition", DockWidgetFactoryBase)
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, positions.DockRight, make_docker_class()))
