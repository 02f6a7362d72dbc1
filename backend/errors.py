"""Exceptions that cross the backend's layers and end up as protocol errors."""

from __future__ import annotations

from ..shared.protocol import ErrorCode


class TouchupError(Exception):
    """An error a user should see: a stable protocol code and one clear line."""

    code: str = ErrorCode.INTERNAL

    def __init__(self, message: str, code: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail


class BadInput(TouchupError):
    """The request itself is wrong (sizes, parameters, empty mask...)."""

    code = ErrorCode.BAD_PARAMS


class EngineError(TouchupError):
    """An engine failed in a way it can explain (missing model, out of memory...)."""

    code = ErrorCode.ENGINE_FAILED


class Cancelled(Exception):
    """Raised inside a job when the user cancelled it; engines let it propagate."""
