"""Touchup for Krita: refine a selected region with the resident Touchup backend.

Layout inside Krita's ``pykrita`` folder::

    touchup_krita.desktop
    touchup_krita/            this package
    touchup_krita/lib/        optional: ``touchup/shared``, ``zmq``, ``msgpack`` for this Krita

``lib`` goes first on ``sys.path`` so the plugin runs the protocol code it was installed with.
Scripts can call :func:`refine` (the same path as the menu action, without the dialog).
"""

from __future__ import annotations

import sys
from pathlib import Path

_LIB = Path(__file__).with_name("lib")
if _LIB.is_dir() and str(_LIB) not in sys.path:
    sys.path.insert(0, str(_LIB))

from .api import RefineError, refine  # noqa: E402

__all__ = ["RefineError", "refine"]

try:
    import krita  # noqa: F401  (absent when the package is imported outside Krita)
except ImportError:
    pass
else:
    from .extension import register

    register()
