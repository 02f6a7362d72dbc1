"""Cancellation inside long classic work.

The engine's ``is_cancelled`` callback is only useful if it is asked often: the worker promises
a cancelled job stops within about half a second. A :class:`Checkpoint` is handed down into
registration and restoration and called between steps that each take well under that (long
filters run in strips); it raises :class:`~touchup.backend.errors.Cancelled` once the user has
cancelled.
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import Cancelled

Checkpoint = Callable[[], None]


def checkpoint(is_cancelled: Callable[[], bool]) -> Checkpoint:
    """A callable that raises Cancelled when ``is_cancelled()`` says so."""

    def check() -> None:
        if is_cancelled():
            raise Cancelled()

    return check


def never() -> None:
    """A checkpoint for callers outside a job (tests, tools): never cancels."""
