"""Human text for the backend's stable error codes.

The docker shows these instead of raw codes; the backend's own message is appended when it
says something specific (which file, which limit), so users get both the plain advice and the
precise cause.
"""

from __future__ import annotations

from touchup.shared.protocol import ErrorCode

CANCELLED = ErrorCode.CANCELLED

HUMAN: dict[str, str] = {
    ErrorCode.EMPTY_MASK: "Nothing is selected in that region. Select the area to refine first.",
    ErrorCode.TOO_LARGE: "The region is too large for the backend. Select a smaller area or lower the context margin.",
    ErrorCode.SIZE_MISMATCH: "The selection and the image tile disagree in size (a plugin bug; please report it).",
    ErrorCode.NOT_FINITE: "The image contains invalid float values (NaN or infinity) in that region.",
    ErrorCode.UNKNOWN_ENGINE: "The backend does not know the chosen engine. Pick another preset.",
    ErrorCode.UNKNOWN_PRESET: "The backend does not know the chosen preset. Pick another one.",
    ErrorCode.UNSUPPORTED: "The chosen preset cannot do this.",
    ErrorCode.MODEL_MISSING: "The model for this preset is not installed.",
    ErrorCode.MODEL_BROKEN: "The model files for this preset are damaged.",
    ErrorCode.OUT_OF_MEMORY: "The backend ran out of memory. Select a smaller area or use a lighter preset.",
    ErrorCode.QUEUE_FULL: "The backend's queue is full. Wait for running refines to finish.",
    ErrorCode.BAD_PARAMS: "A setting is out of range.",
    ErrorCode.ENGINE_FAILED: "The engine failed on this region.",
    ErrorCode.PROTOCOL_MISMATCH: "The plugin and the backend are different versions. Update both together.",
    ErrorCode.UNREACHABLE: "The Touchup backend is not running. Press Start backend (or run `touchup serve`), then try again.",
    ErrorCode.TIMEOUT: "The refine took too long and was abandoned.",
    CANCELLED: "Refine cancelled.",
}

#: Codes whose backend message already is the advice (it names the command to run, etc.).
BACKEND_TEXT_FIRST = {ErrorCode.MODEL_MISSING, ErrorCode.UNSUPPORTED, ErrorCode.BAD_PARAMS}


def human_message(code: str, message: str = "", detail: str | None = None) -> str:
    """One paragraph for the docker: plain advice first, then the backend's specific reason."""
    base = HUMAN.get(code)
    message = (message or "").strip()
    if base is None:
        return f"The backend reported an error: {message or code}"
    if not message or code in (ErrorCode.UNREACHABLE, CANCELLED):
        return base
    if code in BACKEND_TEXT_FIRST:
        return f"{base} {message[0].upper()}{message[1:]}"
    return f"{base} ({message})"
