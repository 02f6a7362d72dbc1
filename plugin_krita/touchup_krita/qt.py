"""The Qt binding Krita runs on: PyQt5 for Krita 5, PyQt6 for Krita 6.

Krita 6 refuses PyQt5 imports outright, and Krita 5 has no PyQt6, so the choice is made once,
here, and every other module imports Qt from this module. Only scoped enum names
(``Qt.AlignmentFlag.AlignLeft``) are used elsewhere: both bindings accept them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING


def _wanted_major() -> int:
    forced = os.environ.get("TOUCHUP_QT")
    if forced in ("5", "6"):
        return int(forced)
    try:  # Krita 6 tells which binding it embeds
        import pykrita  # type: ignore[import-not-found]

        return int(pykrita.qt_major_version())
    except Exception:
        pass
    try:
        import PyQt5  # noqa: F401

        return 5
    except ImportError:
        return 6


QT_MAJOR = _wanted_major()

if TYPE_CHECKING:  # the type checker reads PyQt5's stubs; PyQt6 has the same names used here
    from PyQt5 import QtCore, QtGui, QtWidgets

    QAction = QtWidgets.QAction
elif QT_MAJOR == 6:
    from PyQt6 import QtCore, QtGui, QtWidgets

    QAction = QtGui.QAction
else:
    from PyQt5 import QtCore, QtGui, QtWidgets

    QAction = QtWidgets.QAction

Signal = QtCore.pyqtSignal
Qt = QtCore.Qt

__all__ = ["QT_MAJOR", "QAction", "Qt", "QtCore", "QtGui", "QtWidgets", "Signal"]
