"""Protocol v1: message kinds, error codes, and multipart encoding.

A message is a ZeroMQ multipart message. Frame 0 is a msgpack map (the header); frames 1..n are
raw pixel buffers, described in order by ``header["frames"]``. The backend binds a ROUTER, each
client connects a DEALER, so one client may have several jobs in flight and the backend can
stream progress to exactly the client that submitted a job. See ``PROTOCOL.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack

from .frames import Frame, FrameDesc, FrameError

#: (major, minor). A peer with another major version is refused with ``protocol_mismatch``.
PROTOCOL_VERSION: tuple[int, int] = (1, 0)
#: Loopback only by default: the backend runs arbitrary models on the user's GPU.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:57361"


class WireEnum(str, Enum):
    """A str-valued Enum that reads, prints and packs as its plain value.

    ``str`` mixed in (rather than ``StrEnum``, new in 3.11) so the same code runs in the
    editors' Pythons (3.10); ``__str__``/``__format__`` return the value so f-strings and log
    lines show ``ping``, not ``Kind.PING``.
    """

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)


class Transfer(WireEnum):
    """How a refine request's pixels encode light (the header's ``transfer`` field).

    The models were trained on sRGB-encoded pictures, while linear documents (Krita's scRGB and
    other gamma-1.0 profiles, GIMP's linear precisions) hold light intensities: the backend
    converts ``linear`` crops and references to sRGB-encoded values for the engine and the result
    back. Absent means ``srgb``, what every image on the web and most documents hold.
    """

    SRGB = "srgb"
    LINEAR = "linear"


class Kind(WireEnum):
    """Message kinds (the header's ``kind`` field)."""

    HELLO = "hello"
    PING = "ping"
    PONG = "pong"
    STATUS = "status"
    REFINE = "refine"
    ACCEPTED = "accepted"
    PROGRESS = "progress"
    RESULT = "result"
    VARIANT = "variant"  # a finished variant of a multi-variant job; the last one comes as ``result``
    ERROR = "error"
    CANCEL = "cancel"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    BYE = "bye"
    UNLOAD = "unload"


#: Kinds a client may send.
REQUEST_KINDS = frozenset(
    {Kind.HELLO, Kind.PING, Kind.STATUS, Kind.REFINE, Kind.CANCEL, Kind.SHUTDOWN, Kind.UNLOAD}
)
#: Requests only a trusted client may send (an authenticated key, or without CurveZMQ this machine).
TRUSTED_KINDS = frozenset({Kind.SHUTDOWN, Kind.UNLOAD})


class ErrorCode(WireEnum):
    """Stable error codes. Plugins map these to human text; never change a code's meaning."""

    MALFORMED = "malformed"  # header is not a msgpack map, or lacks required fields
    PROTOCOL_MISMATCH = "protocol_mismatch"  # another major protocol version
    UNKNOWN_KIND = "unknown_kind"
    FRAME_COUNT = "frame_count"  # number of pixel frames disagrees with the header
    FRAME_SIZE = "frame_size"  # a frame's byte size disagrees with its descriptor
    BAD_FRAME = "bad_frame"  # descriptor invalid (dtype, channels, ...)
    BAD_PARAMS = "bad_params"  # a parameter is out of range or of the wrong type
    TOO_LARGE = "too_large"  # dimensions over the configured limit
    EMPTY_MASK = "empty_mask"  # nothing selected (and not regenerate mode)
    SIZE_MISMATCH = "size_mismatch"  # mask size differs from the source tile
    NOT_FINITE = "not_finite"  # NaN or infinity in float pixels
    UNKNOWN_ENGINE = "unknown_engine"
    UNKNOWN_PRESET = "unknown_preset"
    UNSUPPORTED = "unsupported"  # the engine cannot do what was asked (reference, regenerate...)
    MODEL_MISSING = "model_missing"  # weights not downloaded; message names the command
    MODEL_BROKEN = "model_broken"  # weights or config present but unreadable
    OUT_OF_MEMORY = "out_of_memory"
    QUEUE_FULL = "queue_full"
    UNKNOWN_JOB = "unknown_job"
    FORBIDDEN = "forbidden"  # e.g. shutdown from a non-loopback, unauthenticated peer
    ENGINE_FAILED = "engine_failed"  # anything else that went wrong inside an engine
    WORKER_RESTARTED = "worker_restarted"  # the worker died during this job and was restarted
    REPLICA_LOST = "replica_lost"  # a pool replica died mid-job, and again on the retry
    CLUSTER_UNAVAILABLE = "cluster_unavailable"  # the Ray cluster behind the front is unreachable
    INTERNAL = "internal"
    # Client-side only (never sent by the backend):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"  # the job ended with a ``cancelled`` message
    BACKEND_RESTARTED = "backend_restarted"  # another backend instance answers: the job was lost
    BAD_RESULT = "bad_result"  # a result that does not fit the tile that was sent
    BAD_CONNECTION = "bad_connection"  # a connection file that cannot be used


class ProtocolError(Exception):
    """A message could not be accepted; carries the stable code to answer with, and the
    request id when the header could be read, so the client waiting on it hears at once."""

    def __init__(self, code: str, message: str, detail: str | None = None, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.request_id = request_id


@dataclass
class Message:
    """A decoded message: the header map and the pixel frames it describes."""

    header: dict[str, Any]
    frames: list[Frame] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.header.get("kind", ""))

    def frame(self, role: str) -> Frame | None:
        """The first frame with this role, or ``None``."""
        return next((f for f in self.frames if f.desc.role == role), None)

    def frames_with(self, role: str) -> list[Frame]:
        return [f for f in self.frames if f.desc.role == role]


def make_header(kind: str, **fields: Any) -> dict[str, Any]:
    """A header with the kind and this side's protocol version."""
    header: dict[str, Any] = {"kind": kind, "v": list(PROTOCOL_VERSION)}
    header.update({k: v for k, v in fields.items() if v is not None})
    return header


def encode(header: dict[str, Any], frames: list[Frame] | tuple[Frame, ...] = ()) -> list[Any]:
    """Multipart parts for ``header`` and ``frames``; buffers are passed through uncopied."""
    for frame in frames:
        frame.validate()
    header = dict(header)
    header.setdefault("v", list(PROTOCOL_VERSION))
    if frames:
        header["frames"] = [f.desc.to_wire() for f in frames]
    return [msgpack.packb(header, use_bin_type=True), *(f.data for f in frames)]


#: Longest ``kind`` and request ``id`` text accepted (ids may also be integers within int64).
MAX_KIND = 32
MAX_ID = 128


def decode(parts: list[Any], max_frames: int | None = None) -> Message:
    """Parse multipart parts into a :class:`Message`, validating every frame against its descriptor.

    Raises :class:`ProtocolError` with the code to answer with (and the request id whenever the
    header could be read). Parts may be ``bytes`` or ``zmq.Frame`` (anything exposing the buffer
    protocol or ``.buffer``). ``max_frames`` refuses messages with more pixel frames.
    """
    if not parts:
        raise ProtocolError(ErrorCode.MALFORMED, "empty message")
    try:
        header = msgpack.unpackb(_buffer(parts[0]), raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(ErrorCode.MALFORMED, "the header is not valid msgpack", str(exc)[:200]) from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "the header must be a msgpack map")
    req_id = header.get("id")
    if not _valid_id(req_id):
        # An id that cannot be echoed safely is not echoed: the sender broke the protocol.
        raise ProtocolError(
            ErrorCode.MALFORMED, f"'id' must be text of at most {MAX_ID} characters or an integer"
        )
    try:
        kind = header.get("kind")
        if not isinstance(kind, str) or len(kind) > MAX_KIND:
            raise ProtocolError(ErrorCode.MALFORMED, "'kind' must be a short text")
        check_version(header)
        descs = header.get("frames", [])
        if not isinstance(descs, list):
            raise ProtocolError(ErrorCode.MALFORMED, "'frames' must be a list of frame descriptors")
        if len(descs) != len(parts) - 1:
            raise ProtocolError(
                ErrorCode.FRAME_COUNT,
                f"the header describes {len(descs)} pixel frame(s) but {len(parts) - 1} arrived",
            )
        if max_frames is not None and len(descs) > max_frames:
            raise ProtocolError(ErrorCode.FRAME_COUNT, f"at most {max_frames} pixel frames are accepted")
        frames: list[Frame] = []
        for desc_data, part in zip(descs, parts[1:], strict=True):
            try:
                desc = FrameDesc.from_wire(desc_data)
            except FrameError as exc:
                raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
            frame = Frame(desc, _buffer(part))
            try:
                frame.validate()
            except FrameError as exc:
                raise ProtocolError(ErrorCode.FRAME_SIZE, str(exc)) from None
            frames.append(frame)
    except ProtocolError as exc:
        exc.request_id = req_id
        raise
    return Message(header, frames)


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return len(value) <= MAX_ID
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def check_version(header: dict[str, Any]) -> None:
    """Refuse a peer speaking another major version, with a message a user can act on."""
    version = header.get("v")
    if version is None:
        return  # tolerated: very small scripted clients may omit it
    try:
        if not isinstance(version, (list, tuple)) or isinstance(version[0], bool):
            raise TypeError
        major = int(version[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        raise ProtocolError(ErrorCode.MALFORMED, "'v' must be [major, minor]") from None
    if major != PROTOCOL_VERSION[0]:
        raise ProtocolError(
            ErrorCode.PROTOCOL_MISMATCH,
            f"protocol version {major}.x is not supported by this side (it speaks "
            f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}); update the plugin and the backend together",
        )


def error_header(code: str, message: str, detail: str | None = None, **fields: Any) -> dict[str, Any]:
    return make_header(Kind.ERROR, code=code, message=message, detail=detail, **fields)


def _buffer(part: Any) -> Any:
    """The raw buffer of a zmq.Frame or bytes-like object, without copying."""
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else part
