"""A small protocol client for plugins, the CLI and tests.

Two ways to use it:

* blocking, for scripts and the CLI: :meth:`Client.hello`, :meth:`Client.ping`,
  :meth:`Client.refine` (returns the result, calling ``on_event`` for progress);
* non-blocking, for editor UIs: :meth:`Client.submit` returns at once, then the UI watches
  :meth:`Client.fileno` (edge-triggered: always drain with :meth:`Client.drain`) or polls
  :meth:`Client.drain` from a timer. Nothing here ever blocks unless a timeout is given.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import zmq

from .connection import Connection, load_connection
from .frames import Frame, FrameDesc
from .protocol import (
    DEFAULT_ENDPOINT,
    ErrorCode,
    Kind,
    Message,
    ProtocolError,
    Transfer,
    decode,
    encode,
    make_header,
)
from .request import DEFAULT_PARAMS as SCHEMA_DEFAULTS

#: Parameters a refine request may carry, with the protocol's defaults (the backend re-validates).
DEFAULT_PARAMS: dict[str, Any] = dict(SCHEMA_DEFAULTS)
#: ZeroMQ heartbeat of client sockets: a dropped network shows as a disconnect within 3 of these.
HEARTBEAT_S = 1.0
#: The longest a send may wait for ZeroMQ to have a connection to queue the message on.
SEND_TIMEOUT_S = 2.0
#: After the connection drops, how long the backend (or its successor) has to answer a ping.
RECONNECT_PING_S = 3.0
_MONITOR_EVENTS = (
    zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class BackendError(Exception):
    """The backend answered with an error, or could not be reached (``code`` says which)."""

    def __init__(self, code: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @classmethod
    def from_message(cls, msg: Message) -> BackendError:
        h = msg.header
        return cls(
            str(h.get("code", ErrorCode.INTERNAL)), str(h.get("message", "unknown error")), h.get("detail")
        )


def refine_request(
    source: Frame,
    mask: Frame,
    origin: tuple[int, int],
    doc_size: tuple[int, int],
    references: Iterable[Frame] = (),
    prompt: str = "",
    engine: str | None = None,
    preset: str | None = None,
    params: dict[str, Any] | None = None,
    output_dtype: str | None = None,
    transfer: Transfer | str = Transfer.SRGB,
) -> tuple[dict[str, Any], list[Frame]]:
    """Header and frames of a refine request; frame roles are set here so callers cannot mix them up.

    ``transfer``: how the document's samples encode light (sRGB-encoded or linear), so the
    backend can hand the engine the sRGB-encoded values models expect.
    """
    frames = [_with_role(source, "source"), _with_role(mask, "mask")]
    frames += [_with_role(r, "reference") for r in references]
    merged = dict(DEFAULT_PARAMS)
    merged.update(params or {})
    header = make_header(
        Kind.REFINE,
        origin=list(origin),
        doc_size=list(doc_size),
        prompt=prompt,
        engine=engine,
        preset=preset,
        params={k: v for k, v in merged.items() if v is not None},
        output_dtype=output_dtype,
        transfer=Transfer(transfer).value,
    )
    return header, frames


def _with_role(frame: Frame, role: str) -> Frame:
    d = frame.desc
    return Frame(FrameDesc(d.width, d.height, d.channels, d.dtype, d.order, role), frame.data)


class Client:
    """One DEALER connection to the backend. Not thread-safe: use it from one thread.

    With a :class:`~.connection.Connection` the socket is a CurveZMQ client (encrypted, and
    authenticated by the user's key). The client remembers the backend's ``instance`` id (from
    hello, pong and accepted): a different id later means the backend restarted and every job
    sent before is lost, which :meth:`wait` reports at once instead of waiting forever.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        context: zmq.Context | None = None,
        name: str = "touchup-client",
        connection: Connection | str | Path | None = None,
    ) -> None:
        if connection is not None and not isinstance(connection, Connection):
            connection = load_connection(connection)
        self.connection = connection
        self.endpoint = endpoint or (connection.endpoint if connection else DEFAULT_ENDPOINT)
        self.name = name
        self._own_context = context is None
        self._context = context or zmq.Context()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # A DEALER blocks a send while it has no pipe at all, which happens between a refused
        # handshake and the next reconnect: bound it, so no caller (an editor's UI thread) hangs.
        self.socket.setsockopt(zmq.SNDTIMEO, int(SEND_TIMEOUT_S * 1000))
        ivl = int(HEARTBEAT_S * 1000)
        for option, value in (
            (zmq.HEARTBEAT_IVL, ivl),
            (zmq.HEARTBEAT_TIMEOUT, 3 * ivl),
            (zmq.HEARTBEAT_TTL, 3 * ivl),
        ):
            self.socket.setsockopt(option, value)
        if connection is not None:
            connection.apply(self.socket)
        self._monitor = self.socket.get_monitor_socket(_MONITOR_EVENTS)
        self._poller = zmq.Poller()
        self._poller.register(self.socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self.socket.connect(self.endpoint)
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self) & 0xFFFF:x}-"
        self._backlog: deque[Message] = deque()
        #: The backend instance last heard from (None until a hello, pong or accepted).
        self.instance: str | None = None
        #: Set when the connection dropped since :meth:`wait` last looked.
        self.disconnected = False
        self._refused: str | None = None
        #: Request id -> backend instance, for jobs the backend acknowledged (the last few hundred).
        self._accepted: OrderedDict[Any, str | None] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disable_monitor()
        self._monitor.close(0)
        self.socket.close(0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw I/O -----------------------------------------------------------------------------
    def next_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def send(self, header: dict[str, Any], frames: Iterable[Frame] = ()) -> str:
        """Send one message (adds a request ``id`` if missing) and return that id. Never blocks
        for long: ZeroMQ queues the message even while the backend is not up yet."""
        header = dict(header)
        header.setdefault("id", self.next_id())
        try:
            self.socket.send_multipart(encode(header, list(frames)), copy=False)
        except zmq.Again:
            self._read_monitor()  # raises ``forbidden`` when the backend refused this client
            raise BackendError(
                ErrorCode.UNREACHABLE,
                f"no connection to a backend at {self.endpoint} could take the request within {SEND_TIMEOUT_S:g} s",
            ) from None
        return str(header["id"])

    def fileno(self) -> int:
        """The edge-triggered notification FD (``zmq.FD``): after it fires, call :meth:`drain`."""
        return cast(int, self.socket.getsockopt(zmq.FD))

    def drain(self) -> list[Message]:
        """Every message available right now, without blocking (backlog first)."""
        out = list(self._backlog)
        self._backlog.clear()
        while cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            out.append(self._read())
        return out

    def recv(self, timeout: float | None) -> Message | None:
        """The next message, waiting at most ``timeout`` seconds (``None``: forever).

        Returns None early when the connection drops (see :attr:`disconnected`); raises
        :class:`BackendError` ``forbidden`` when a CurveZMQ backend refused this client's key.
        """
        if self._backlog:
            return self._backlog.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.disconnected and not cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return None  # nothing left to read from before the drop: let the caller check
            events = dict(self._poller.poll(None if left is None else int(left * 1000)))
            if self._monitor in events:
                self._read_monitor()
            if self.socket in events or cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return self._read()
            if self.disconnected or (deadline is not None and time.monotonic() >= deadline):
                return None

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnected = True
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused = "the backend refused this client's key (ask for a new connection file)"
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._refused = (
                    "the backend requires a key (CurveZMQ): connect with a connection file"
                    if self.connection is None
                    else "the backend does not use CurveZMQ, or its key differs from the connection file's"
                )
        if self._refused:
            raise BackendError(ErrorCode.FORBIDDEN, self._refused)

    def _read(self) -> Message:
        parts = self.socket.recv_multipart(copy=False)
        try:
            msg = decode(parts)
        except ProtocolError as exc:
            return Message(
                make_header(
                    Kind.ERROR, code=exc.code, message=exc.message, detail=exc.detail, id=exc.request_id
                )
            )
        instance = msg.header.get("instance")
        if isinstance(instance, str) and msg.kind in (Kind.HELLO, Kind.PONG, Kind.ACCEPTED, Kind.STATUS):
            self.instance = instance
        if msg.kind == Kind.ACCEPTED:
            self._accepted[msg.header.get("id")] = instance if isinstance(instance, str) else None
            while len(self._accepted) > 256:
                self._accepted.popitem(last=False)
        return msg

    # -- blocking requests -------------------------------------------------------------------
    def request(self, kind: str, timeout: float = 5.0, **fields: Any) -> Message:
        """Send a small request and wait for the reply carrying the same id.

        Messages for other requests that arrive meanwhile are kept for later :meth:`recv`.
        Raises :class:`BackendError` (``unreachable``) when nothing answers in time.
        """
        req_id = self.send(make_header(kind, **fields))
        deadline = time.monotonic() + timeout
        skipped: list[Message] = []
        try:
            while True:
                left = deadline - time.monotonic()
                msg = self.recv(max(left, 0.0)) if left > 0 else None
                if msg is None and time.monotonic() < deadline:
                    self.disconnected = False  # a reconnect is under way: keep waiting
                    continue
                if msg is None:
                    raise BackendError(
                        ErrorCode.UNREACHABLE,
                        f"no backend answered at {self.endpoint} within {timeout:g} s; start it with `touchup serve`",
                    )
                if msg.header.get("id") == req_id:
                    if msg.kind == Kind.ERROR:
                        raise BackendError.from_message(msg)
                    return msg
                skipped.append(msg)
        finally:
            self._backlog.extend(skipped)

    def hello(self, timeout: float = 5.0) -> dict[str, Any]:
        """The backend's hello: versions and capabilities (engines, presets, device, limits)."""
        return self.request(Kind.HELLO, timeout=timeout, client=self.name).header

    def ping(self, timeout: float = 2.0) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()
        self.request(Kind.PING, timeout=timeout)
        return time.perf_counter() - t0

    def pong(self, timeout: float = 2.0) -> dict[str, Any]:
        """The backend's pong header (with its ``instance`` id)."""
        return self.request(Kind.PING, timeout=timeout).header

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.request(Kind.STATUS, timeout=timeout).header

    def shutdown(self, timeout: float = 5.0) -> None:
        self.request(Kind.SHUTDOWN, timeout=timeout)

    # -- jobs --------------------------------------------------------------------------------
    def submit(self, header: dict[str, Any], frames: list[Frame]) -> str:
        """Queue a refine request; returns the request id that every reply for the job carries."""
        return self.send(header, frames)

    def cancel(self, job: str) -> str:
        return self.send(make_header(Kind.CANCEL, job=job))

    def wait(
        self,
        req_id: str,
        on_event: Callable[[Message], None] | None = None,
        timeout: float | None = None,
        idle_timeout: float = 10.0,
        ping_timeout: float = 5.0,
    ) -> Message:
        """Wait for the job submitted as ``req_id`` to finish; return its result message.

        ``on_event`` sees every accepted, progress and ``variant`` message (a multi-variant job's
        finished variants before its last one, which is the result). Raises :class:`BackendError` for an
        error or cancellation; ``timeout`` when the job exceeds ``timeout``; ``unreachable`` when
        the backend died; ``backend_restarted`` when another backend instance now answers (the
        job was lost with the old one). The backend is pinged after ``idle_timeout`` seconds
        without news (it answers pings even while a model loads for minutes) and at once when
        the connection drops; only silence for ``ping_timeout`` more seconds fails.
        """
        start = time.monotonic()
        job_instance = self.instance
        skipped: list[Message] = []
        try:
            while True:
                wait_for = idle_timeout
                if timeout is not None:
                    left = timeout - (time.monotonic() - start)
                    if left <= 0:
                        raise BackendError(ErrorCode.TIMEOUT, f"the job took longer than {timeout:g} s")
                    wait_for = min(wait_for, left)
                msg = self.recv(wait_for)
                if msg is None:
                    if timeout is not None and time.monotonic() - start >= timeout:
                        continue
                    dropped, self.disconnected = self.disconnected, False
                    accepted = req_id in self._accepted
                    job_instance = self._accepted.get(req_id) or job_instance
                    self._check_backend(job_instance, accepted, RECONNECT_PING_S if dropped else ping_timeout)
                    continue
                if msg.header.get("id") != req_id:
                    skipped.append(msg)
                    continue
                if msg.kind in (Kind.RESULT, Kind.ERROR, Kind.CANCELLED):
                    self._accepted.pop(req_id, None)
                if msg.kind == Kind.RESULT:
                    return msg
                if msg.kind == Kind.ERROR:
                    raise BackendError.from_message(msg)
                if msg.kind == Kind.CANCELLED:
                    raise BackendError(ErrorCode.CANCELLED, "the job was cancelled")
                if on_event is not None:
                    on_event(msg)
        finally:
            self._backlog.extend(skipped)

    def _check_backend(self, job_instance: str | None, accepted: bool, ping_timeout: float) -> None:
        """Ping: silence is ``unreachable``; another instance, or a backend that never acknowledged
        the job, is ``backend_restarted`` -- in both cases no result will ever come."""
        try:
            pong = self.pong(timeout=ping_timeout)
        except BackendError as exc:
            if exc.code == ErrorCode.FORBIDDEN:
                raise
            raise BackendError(
                ErrorCode.UNREACHABLE, f"the backend at {self.endpoint} stopped answering"
            ) from None
        instance = pong.get("instance")
        if job_instance is not None and instance is not None and instance != job_instance:
            raise BackendError(
                ErrorCode.BACKEND_RESTARTED, "the backend restarted and this job was lost; send it again"
            )
        if not accepted:
            raise BackendError(
                ErrorCode.BACKEND_RESTARTED,
                "the backend answers but never received this job (was it restarted?); send it again",
            )

    def refine(
        self,
        header: dict[str, Any],
        frames: list[Frame],
        on_event: Callable[[Message], None] | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Submit and wait: the blocking convenience for scripts."""
        return self.wait(self.submit(header, frames), on_event=on_event, timeout=timeout)

    def refine_variants(
        self,
        header: dict[str, Any],
        frames: list[Frame],
        on_event: Callable[[Message], None] | None = None,
        timeout: float | None = None,
    ) -> list[Message]:
        """Submit and wait for every variant: the ``variant`` messages and the final ``result``,
        in variant order (one message for a one-variant job).

        ``on_event`` still sees each variant as it arrives, so a caller that must keep what
        came before a cancel or an error (both raise :class:`BackendError`) can keep it there.
        """
        variants: list[Message] = []

        def collect(msg: Message) -> None:
            if msg.kind == Kind.VARIANT:
                variants.append(msg)
            if on_event is not None:
                on_event(msg)

        result = self.refine(header, frames, on_event=collect, timeout=timeout)
        return sorted([*variants, result], key=variant_index)


def variant_index(msg: Message) -> int:
    """The 0-based variant a ``variant`` or ``result`` message holds (0 from an older backend)."""
    value = msg.header.get("variant", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
