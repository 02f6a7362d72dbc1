"""Talking to the Touchup backend from the GIMP plug-in, with no GIMP imports.

Kept apart from the GIMP glue so that it can be unit-tested with a plain Python and a real
backend, and so that the plug-in's behaviour towards the backend (which presets it offers,
which error text a user reads, how progress and cancellation flow) lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from touchup.shared.capabilities import engines_of, preset_missing
from touchup.shared.client import BackendError, Client, refine_request
from touchup.shared.connection import Connection, ConnectionError_, load_connection
from touchup.shared.frames import Frame
from touchup.shared.protocol import ErrorCode, Kind, Message
from touchup.shared.result import SentTile, checked_result
from touchup.shared.texts import layer_name, stage_text

__all__ = [
    "BackendError",
    "SentTile",
    "checked_result",
    "connection_from",
    "fetch_presets",
    "refine_request",
    "run_refine",
    "user_message",
]

#: Offered when the backend cannot be asked (not running yet): the engine every backend has.
FALLBACK_PRESETS: tuple[str, ...] = ("classic/default",)
#: How long to wait for ``hello`` before telling the user the backend is not running.
HELLO_TIMEOUT_S = 3.0
#: The longest a refine may take before the plug-in gives up (a model download is not a refine).
JOB_TIMEOUT_S = 3600.0


def connection_from(path: str | None) -> Connection | None:
    """The connection file at ``path`` (a backend on another machine), None when no path is set.
    Raises :class:`BackendError` ``bad_connection`` saying what is wrong with the file."""
    path = (path or "").strip()
    if not path:
        return None
    try:
        return load_connection(path)
    except ConnectionError_ as exc:
        raise BackendError(ErrorCode.BAD_CONNECTION, str(exc)) from None


def start_hint(endpoint: str) -> str:
    """What a user reads when nothing answers: where we looked and how to start the backend."""
    return (
        f"The Touchup backend is not running (nothing answered at {endpoint}).\n"
        "Start it with `touchup serve` in a terminal (or start the Touchup app), "
        "then run Filters > Touchup > Refine Selection again."
    )


def user_message(exc: BackendError, endpoint: str) -> str:
    """The text GIMP shows for a failed refine: the backend's own human message, or how to start it."""
    if exc.code == ErrorCode.UNREACHABLE:
        return start_hint(endpoint)
    if exc.code == ErrorCode.CANCELLED:
        return "Touchup: the refine was cancelled."
    text = f"Touchup could not refine the selection: {exc.message}"
    if exc.code == ErrorCode.MODEL_MISSING:
        return text  # the message already names the download command
    return f"{text} [{exc.code}]"


def presets_from_hello(hello: dict[str, Any]) -> list[str]:
    """``engine/preset`` names a user can pick, from the ``engines`` of the backend's capabilities.

    Presets that cannot run on this backend (libraries or weights missing) are left out; the
    backend's default engine comes first so that the dialog's first entry is what an empty
    preset would use anyway.
    """
    return [
        f"{engine.get('name')}/{preset.get('name')}"
        for engine in engines_of(hello)
        for preset in engine.get("presets") or []
        if not preset_missing(engine, preset)
    ]


def split_preset(text: str) -> tuple[str | None, str | None]:
    """``engine/preset`` -> (engine, preset); ``engine`` alone -> (engine, None); empty -> defaults."""
    text = (text or "").strip()
    if not text:
        return None, None
    engine, _, preset = text.partition("/")
    return (engine.strip() or None), (preset.strip() or None)


def fetch_presets(
    endpoint: str, timeout: float = 1.5, connection: Connection | None = None
) -> tuple[list[str], str | None]:
    """Presets to offer in the dialog, and a status line (None when the backend answered).

    Never raises: the dialog must open even when the backend is down, with the fallback list.
    """
    try:
        with Client(endpoint, name="touchup-gimp", connection=connection) as client:
            names = presets_from_hello(client.hello(timeout=timeout))
    except BackendError as exc:
        return list(FALLBACK_PRESETS), user_message(exc, endpoint)
    except Exception as exc:  # a malformed endpoint string raises zmq errors
        return list(FALLBACK_PRESETS), f"Touchup: cannot use endpoint {endpoint!r}: {exc}"
    return (names or list(FALLBACK_PRESETS)), None


@dataclass
class Progress:
    """One progress event, reduced to what a progress bar needs."""

    stage: str
    fraction: float


def result_layer_name(instruction: str, reference_name: str | None = None) -> str:
    """The new layer's name: the instruction, else which reference it came from."""
    return layer_name(instruction, f"from {reference_name}" if reference_name else None)


def progress_text(stage: str) -> str:
    """The progress bar's label for a backend stage (GIMP shows no other title with it)."""
    return f"Touchup: {stage_text(stage)}…"


def run_refine(
    endpoint: str,
    header: dict[str, Any],
    frames: list[Frame],
    on_progress: Callable[[Progress], None] | None = None,
    connection: Connection | None = None,
    timeout: float = JOB_TIMEOUT_S,
) -> Message:
    """Check the backend answers, submit the job, relay progress, return the ``result`` message.

    Raises :class:`BackendError`: ``unreachable`` when nothing answers ``hello`` in time (so a
    user is not left watching a progress bar for a backend that is not running), the backend's
    own code for refused or failed jobs, ``cancelled`` when the job was cancelled, and
    ``unreachable`` again when the backend dies mid-job: :meth:`Client.wait` pings a backend
    that has been silent for a few seconds (it answers pings even while loading a model), so a
    dead one is noticed within seconds while a slow one is waited for.

    Cancellation from GIMP needs nothing here: GIMP ends the plug-in process when the user
    cancels its progress, the connection drops, and the backend cancels that client's jobs the
    next time it tries to report to it.

    With a ``connection`` (a backend on another machine) the socket uses its CurveZMQ keys. The
    job fails after ``timeout`` seconds, and at once when another backend instance answers
    (the job was lost in a restart).
    """
    with Client(endpoint, name="touchup-gimp", connection=connection) as client:
        client.hello(timeout=HELLO_TIMEOUT_S)

        def relay(msg: Message) -> None:
            if on_progress is None:
                return
            h = msg.header
            if msg.kind == Kind.ACCEPTED:
                position = int(h.get("position") or 0)
                stage = f"queued ({position} ahead)" if position > 0 else "starting"
                on_progress(Progress(stage, 0.0))
            elif msg.kind == Kind.PROGRESS:
                total = max(int(h.get("total") or 0), 0)
                step = int(h.get("step") or 0)
                on_progress(Progress(str(h.get("stage") or ""), min(step / total, 1.0) if total else 0.0))

        req_id = client.submit(header, frames)
        result = client.wait(req_id, on_event=relay, timeout=timeout)
        checked_result(result, SentTile.of_request(header, frames))  # never write what does not fit
        return result
