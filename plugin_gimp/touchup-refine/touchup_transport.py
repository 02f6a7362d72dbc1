"""Talking to the Touchup backend from the GIMP plug-in, with no GIMP imports.

Kept apart from the GIMP glue so that it can be unit-tested with a plain Python and a real
backend, and so that the plug-in's behaviour towards the backend (which presets it offers,
which error text a user reads, how progress and cancellation flow) lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from touchup.shared.capabilities import engines_of, preset_missing
from touchup.shared.client import BackendError, Client, refine_request
from touchup.shared.connection import Connection, ConnectionError_, load_connection
from touchup.shared.frames import Frame
from touchup.shared.protocol import ErrorCode, Kind, Message
from touchup.shared.result import SentTile, checked_result
from touchup.shared.texts import layer_name, stage_text, variant_label
from touchup.shared.texts import variant_layer_name as texts_variant_layer_name
from touchup.shared.texts import variants_group_name as texts_variants_group_name

__all__ = [
    "BackendError",
    "SentTile",
    "checked_result",
    "connection_from",
    "fetch_offer",
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


def user_message(exc: BackendError, endpoint: str, kept: int = 0) -> str:
    """The text GIMP shows for a failed refine: the backend's own human message, or how to start it.

    ``kept``: variants that arrived before the failure and stay in the image (each one is a
    finished result, as valid as if the job had asked for fewer).
    """
    text = _failure_text(exc, endpoint)
    if kept == 1:
        text += "\nThe variant that finished before that stays in the image."
    elif kept > 1:
        text += f"\nThe {kept} variants that finished before that stay in the image."
    return text


def _failure_text(exc: BackendError, endpoint: str) -> str:
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


def preset_variants(hello: dict[str, Any]) -> dict[str, int]:
    """Each offered ``engine/preset``'s default number of variants, from the preset table in
    ``hello`` (1 on the CPU engine, 4 on diffusion presets); presets that do not say are left out.
    An engine's name alone stands for its default preset, as in a request."""
    defaults: dict[str, int] = {}
    for engine in engines_of(hello):
        for preset in engine.get("presets") or []:
            count = preset.get("variants")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                defaults[f"{engine.get('name')}/{preset.get('name')}"] = count
                if preset.get("name") == engine.get("default_preset"):
                    defaults[str(engine.get("name"))] = count
    return defaults


@dataclass
class Offer:
    """What the dialog offers: the presets, each one's default variant count, and a status
    line (None when the backend answered; else why the fallback list is shown)."""

    presets: list[str]
    variants: dict[str, int] = field(default_factory=dict)
    status: str | None = None

    def default_variants(self, preset: str) -> int | None:
        """The default count of ``preset`` (empty: the backend's default preset, listed first)."""
        preset = (preset or "").strip() or (self.presets[0] if self.presets else "")
        return self.variants.get(preset)


def fetch_offer(endpoint: str, timeout: float = 1.5, connection: Connection | None = None) -> Offer:
    """The presets (and their default variant counts) to offer in the dialog.

    Never raises: the dialog must open even when the backend is down, with the fallback list.
    """
    try:
        with Client(endpoint, name="touchup-gimp", connection=connection) as client:
            hello = client.hello(timeout=timeout)
    except BackendError as exc:
        return Offer(list(FALLBACK_PRESETS), status=user_message(exc, endpoint))
    except Exception as exc:  # a malformed endpoint string raises zmq errors
        return Offer(list(FALLBACK_PRESETS), status=f"Touchup: cannot use endpoint {endpoint!r}: {exc}")
    return Offer(presets_from_hello(hello) or list(FALLBACK_PRESETS), preset_variants(hello))


def fetch_presets(
    endpoint: str, timeout: float = 1.5, connection: Connection | None = None
) -> tuple[list[str], str | None]:
    """Presets to offer in the dialog, and a status line (None when the backend answered)."""
    offer = fetch_offer(endpoint, timeout, connection)
    return offer.presets, offer.status


@dataclass
class Progress:
    """One progress event, reduced to what a progress bar needs: the stage, how far the whole
    job is (all variants together), and which variant is being computed."""

    stage: str
    fraction: float
    variant: int = 0
    variants: int = 1

    @property
    def text(self) -> str:
        return progress_text(self.stage, self.variant, self.variants)


def progress_of(header: dict[str, Any]) -> Progress:
    """A ``progress`` message as a progress bar shows it.

    ``step``/``total`` count the steps of the variant being computed, so the bar moves across
    the whole job: variant ``i`` of ``N`` fills the bar from ``i/N`` to ``(i+1)/N``.
    """
    total = max(int(header.get("total") or 0), 0)
    step = int(header.get("step") or 0)
    within = min(step / total, 1.0) if total else 0.0
    count = max(int(header.get("variants") or 1), 1)
    index = min(max(int(header.get("variant") or 0), 0), count - 1)
    return Progress(str(header.get("stage") or ""), (index + within) / count, index, count)


def result_layer_name(instruction: str, reference_name: str | None = None) -> str:
    """The new layer's name: the instruction, else which reference it came from."""
    return layer_name(instruction, f"from {reference_name}" if reference_name else None)


def variants_group_name(instruction: str, reference_name: str | None = None) -> str:
    """The layer group of several variants: named like a single result layer would be."""
    return texts_variants_group_name(instruction, f"from {reference_name}" if reference_name else None)


def variant_position(header: dict[str, Any]) -> tuple[int, int]:
    """(0-based index, count) of the variant a ``variant`` or ``result`` message carries."""
    count = max(int(header.get("variants") or 1), 1)
    return min(max(int(header.get("variant") or 0), 0), count - 1), count


def variant_layer_name(header: dict[str, Any]) -> str:
    """``Variant 2 of 4 (seed 43)``: a variant's layer says which seed makes it again."""
    index, count = variant_position(header)
    seed = header.get("seed")
    return texts_variant_layer_name(index, count, int(seed) if isinstance(seed, int) else None)


def progress_text(stage: str, variant: int = 0, variants: int = 1) -> str:
    """The progress bar's label for a backend stage (GIMP shows no other title with it), naming
    the variant being computed when a job makes several (GIMP's progress has no image slot)."""
    if variants > 1:
        return f"Touchup: {stage_text(stage)}, {variant_label(variant, variants)}…"
    return f"Touchup: {stage_text(stage)}…"


def run_refine(
    endpoint: str,
    header: dict[str, Any],
    frames: list[Frame],
    on_progress: Callable[[Progress], None] | None = None,
    connection: Connection | None = None,
    timeout: float = JOB_TIMEOUT_S,
    on_variant: Callable[[Message], None] | None = None,
) -> Message:
    """Check the backend answers, submit the job, relay progress, return the ``result`` message.

    A job asking for several variants gets each one but the last as a ``variant`` message as
    soon as it is done: ``on_variant`` receives it (already checked against the tile sent, so
    it can go straight into the image) while the others are still computed. The last variant
    is the returned ``result``.

    Raises :class:`BackendError`: ``unreachable`` when nothing answers ``hello`` in time (so a
    user is not left watching a progress bar for a backend that is not running), the backend's
    own code for refused or failed jobs, ``cancelled`` when the job was cancelled, and
    ``unreachable`` again when the backend dies mid-job: :meth:`Client.wait` pings a backend
    that has been silent for a few seconds (it answers pings even while loading a model), so a
    dead one is noticed within seconds while a slow one is waited for. ``bad_result`` when a
    variant or the result does not fit the tile sent.

    Cancellation from GIMP needs nothing here: GIMP ends the plug-in process when the user
    cancels its progress, the connection drops, and the backend cancels that client's jobs the
    next time it tries to report to it.

    With a ``connection`` (a backend on another machine) the socket uses its CurveZMQ keys. The
    job fails after ``timeout`` seconds, and at once when another backend instance answers
    (the job was lost in a restart).
    """
    sent = SentTile.of_request(header, frames)
    with Client(endpoint, name="touchup-gimp", connection=connection) as client:
        client.hello(timeout=HELLO_TIMEOUT_S)

        def relay(msg: Message) -> None:
            h = msg.header
            if msg.kind == Kind.VARIANT:  # every variant but the last
                checked_result(msg, sent)  # never write what does not fit
                if on_variant is not None:
                    on_variant(msg)
            elif on_progress is None:
                return
            elif msg.kind == Kind.ACCEPTED:
                position = int(h.get("position") or 0)
                stage = f"queued ({position} ahead)" if position > 0 else "starting"
                on_progress(Progress(stage, 0.0))
            elif msg.kind == Kind.PROGRESS:
                on_progress(progress_of(h))

        req_id = client.submit(header, frames)
        result = client.wait(req_id, on_event=relay, timeout=timeout)
        checked_result(result, sent)  # never write what does not fit
        return result
