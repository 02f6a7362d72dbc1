"""A small protocol client for plugins, the CLI and tests.

Two ways to use it:

* blocking, for scripts and the CLI: :meth:`Client.hello`, :meth:`Client.ping`,
  :meth:`Client.refine` (returns the result, calling ``on_event`` for progress);
* non-blocking, for editor UIs: :meth:`Client.submit` returns at once, then the UI watches
  :meth:`Client.fileno` (edge-triggered: always drain with :meth:`Client.drain`) or polls
  :meth:`Client.drain` from a timer. Nothing here ever blocks unless a timeout is given.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import zmq

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

#: Parameters a refine request may carry, with the protocol's defaults (the backend re-validates).
DEFAULT_PARAMS: dict[str, Any] = {
    "strength": 1.0,
    "steps": None,  # engine's default
    "seed": 0,
    "guidance": None,  # engine's default
    "context": 64,
    "feather": 8,
    "mode": "refine",
    "color_correct": True,
}


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
    """One DEALER connection to the backend. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        context: zmq.Context | None = None,
        name: str = "touchup-client",
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self._own_context = context is None
        self._context = context or zmq.Context()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self) & 0xFFFF:x}-"
        self._backlog: deque[Message] = deque()

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
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
        self.socket.send_multipart(encode(header, list(frames)), copy=False)
        return header["id"]

    def fileno(self) -> int:
        """The edge-triggered notification FD (``zmq.FD``): after it fires, call :meth:`drain`."""
        return self.socket.getsockopt(zmq.FD)

    def drain(self) -> list[Message]:
        """Every message available right now, without blocking (backlog first)."""
        out = list(self._backlog)
        self._backlog.clear()
        while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            out.append(self._read())
        return out

    def recv(self, timeout: float | None) -> Message | None:
        """The next message, waiting at most ``timeout`` seconds (``None``: forever)."""
        if self._backlog:
            return self._backlog.popleft()
        if self.socket.poll(None if timeout is None else int(timeout * 1000), zmq.POLLIN):
            return self._read()
        return None

    def _read(self) -> Message:
        parts = self.socket.recv_multipart(copy=False)
        try:
            return decode(parts)
        except ProtocolError as exc:
            return Message(make_header(Kind.ERROR, code=exc.code, message=exc.message, detail=exc.detail))

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

        ``on_event`` sees every accepted/progress message. Raises :class:`BackendError` for an
        error or cancellation, ``timeout`` when the job exceeds ``timeout``, and ``unreachable``
        when the backend died: after ``idle_timeout`` seconds without news it is pinged (the
        backend answers pings even while a model loads for minutes), and only silence for
        ``ping_timeout`` more seconds fails.
        """
        start = time.monotonic()
        skipped: list[Message] = []
        try:
            while True:
                wait_for = idle_timeout
                if timeout is not None:
                    left = timeout - (time.monotonic() - start)
                    if left <= 0:
                        raise BackendError(ErrorCode.TIMEOUT, f"the job took longer than {timeout:g} s")
                    wait_for = left if wait_for is None else min(wait_for, left)
                msg = self.recv(wait_for)
                if msg is None:
                    if timeout is not None and time.monotonic() - start >= timeout:
                        continue
                    try:
                        self.ping(timeout=ping_timeout)
                    except BackendError:
                        raise BackendError(
                            ErrorCode.UNREACHABLE, f"the backend at {self.endpoint} stopped answering"
                        ) from None
                    continue
                if msg.header.get("id") != req_id:
                    skipped.append(msg)
                    continue
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

    def refine(
        self,
        header: dict[str, Any],
        frames: list[Frame],
        on_event: Callable[[Message], None] | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Submit and wait: the blocking convenience for scripts."""
        return self.wait(self.submit(header, frames), on_event=on_event, timeout=timeout)
