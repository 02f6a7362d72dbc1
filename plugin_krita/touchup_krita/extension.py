"""Krita registration: the Tools > Touchup menu with its three actions, and the docker factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from .docker import RefineDialog, make_docker_class
from .qt import QtGui, QtWidgets

DOCKER_ID = "touchup_docker"
ACTIONS = {
    # id: (menu text, default shortcut used when the .action file is not installed)
    "touchup_refine_selection": ("Refine Selection…", "Ctrl+Alt+R"),
    "touchup_refine_again": ("Refine Again", ""),
    "touchup_cancel": ("Cancel Refine", ""),
}
ACTION_FILE = Path(__file__).with_name("touchup_krita.action")


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
        handlers = {
            "touchup_refine_selection": lambda: self.refine_selection(window),
            "touchup_refine_again": lambda: _controller().refine_again(),
            "touchup_cancel": lambda: _controller().cancel(),
        }
        for action_id, (text, shortcut) in ACTIONS.items():
            action = window.createAction(action_id, text, "")
            if shortcut and action.shortcut().isEmpty() and not _action_file_installed():
                action.setShortcut(QtGui.QKeySequence(shortcut))
            action.triggered.connect(handlers[action_id])
            menu.addAction(action)

    def refine_selection(self, window: Any) -> None:
        """Refine Selection…: the settings dialog, then the same path as the docker's button."""
        ctl = _controller()
        dialog = RefineDialog(ctl, window.qwindow())
        if dialog.exec():
            ctl.refine_active(dialog.form.settings())


def _controller() -> Any:
    from .controller import controller

    return controller()


def _action_file_installed() -> bool:
    """Whether Krita loaded our ``.action`` file (it reads them from the resource ``actions``
    folder, not from the plugin folder), in which case Krita owns the shortcut."""
    resources = Path(__file__).resolve().parents[2]  # <resources>/pykrita/touchup_krita/
    return (resources / "actions" / ACTION_FILE.name).exists()


def register() -> None:
    app = Krita.instance()
    app.addExtension(TouchupExtension(app))
    app.addDockWidgetFactory(
        DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, make_docker_class())
    )
