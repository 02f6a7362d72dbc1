"""Krita's wording of the shared user texts (``touchup.shared.texts``).

Only what is Krita's own lives here: the docker has a *Start backend* button, so a backend that
is not running gets advice that names it.
"""

from __future__ import annotations

from touchup.shared.protocol import ErrorCode
from touchup.shared.texts import error_text

UNREACHABLE = (
    "The Touchup backend is not running. Press Start backend (or run `touchup serve`), then try again."
)


def human_message(code: str, message: str = "", detail: str | None = None) -> str:
    """One paragraph for the docker: plain advice first, then the backend's specific reason."""
    if code == ErrorCode.UNREACHABLE:
        return UNREACHABLE
    return error_text(code, message, detail)
