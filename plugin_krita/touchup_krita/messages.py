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

#: A refine already sent when the user pointed the docker at another backend (or re-applied the
#: settings): its answer can no longer arrive.
SETTINGS_CHANGED = (
    "The backend settings were changed while refining (a new address or connection), so this "
    "refine was abandoned. Press Refine to run it again."
)


def human_message(code: str, message: str = "", detail: str | None = None) -> str:
    """One paragraph for the docker: plain advice first, then the backend's specific reason."""
    if code == ErrorCode.UNREACHABLE:
        return UNREACHABLE
    return error_text(code, message, detail)
