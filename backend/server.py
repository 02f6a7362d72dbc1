"""The resident backend: a ZeroMQ ROUTER on the network thread, one worker owning the engine.

The network thread never runs a model. It decodes and validates requests, answers ``hello``,
``ping`` and ``status`` at once (also while a job runs), queues refine jobs, handles cancel,
and forwards whatever the worker produces (progress, results, errors) to the client that
submitted the job. A malformed message is answered with an error -- or dropped when it cannot
be answered -- and the loop carries on: no input a client can send stops the backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from ..shared import __version__
from ..shared.client import BackendError, Client
from ..shared.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Kind,
    Message,
    ProtocolError,
    decode,
    encode,
    error_header,
    make_header,
)
from .config import Config
from .device import device_info
from .engines import DEFAULT_ENGINE, ENGINES, engine_class
from .errors import TouchupError
from .jobs import Job, JobQueue
from .validate import parse_refine
from .worker import Worker

log = logging.getLogger("touchup.server")

OUTBOX = "inproc://touchup-worker-outbox"


class AlreadyRunning(RuntimeError):
    """Another backend already serves the endpoint."""


class Server:
    def __init__(self, config: Config) -> None:
        if not config.engine:
            config.engine = resolve_default_engine(config)
        self.config = config
        self.ctx = zmq.Context()
        self.queue = JobQueue(config.max_queue)
        self.worker = Worker(config, self.queue, self.ctx, OUTBOX)
        self._stop = threading.Event()
        self.started = time.monotonic()
        self.capabilities: dict[str, Any] = {}
        self.ready = threading.Event()

    # -- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Bind, serve until stopped (signal or ``shutdown`` message), then clean up."""
        self._refuse_second_instance()
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a vanished client raises
        try:
            router.bind(self.config.endpoint)
        except zmq.ZMQError as exc:
            router.close(0)
            raise AlreadyRunning(f"cannot listen on {self.config.endpoint}: {exc.strerror}") from None
        outbox = self.ctx.socket(zmq.PULL)
        outbox.bind(OUTBOX)
        self.capabilities = self._describe_engines()
        self.worker.start()
        self._install_signal_handlers()
        log.info("touchup %s listening on %s", __version__, self.config.endpoint)
        self.ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(outbox, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(200))
                if outbox in events:
                    self._forward(router, outbox)
                if router in events:
                    self._receive(router)
        finally:
            log.info("shutting down")
            for job in self.queue.jobs_of_all():
                job.cancel_event.set()
            self.worker.stop()
            self.worker.join(timeout=10)
            router.close(0)
            outbox.close(0)
            self.ctx.term()
            if self.config.endpoint.startswith("ipc://"):
                _unlink_quietly(self.config.endpoint[len("ipc://") :])

    # -- start-up ----------------------------------------------------------------------------
    def _refuse_second_instance(self) -> None:
        """ipc:// binds silently steal the socket file, and tcp errors are cryptic: ask first."""
        try:
            with Client(self.config.endpoint) as probe:
                probe.ping(timeout=0.3)
        except BackendError:
            return
        raise AlreadyRunning(f"a Touchup backend is already running at {self.config.endpoint}")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    def _describe_engines(self) -> dict[str, Any]:
        engines = []
        for name in ENGINES:
            try:
                engines.append(engine_class(name)(self.config.engine_options(name)).describe())
            except Exception as exc:  # an engine whose libraries are missing is listed as such
                log.info("engine %s unavailable: %s", name, exc)
                engines.append({"name": name, "presets": [], "available": {"ok": False, "reason": str(exc)}})
        return {
            "engines": engines,
            "default_engine": self.config.engine,
            "limits": {
                "max_pixels": self.config.max_pixels,
                "max_side": self.config.max_side,
                "max_references": self.config.max_references,
                "max_queue": self.config.max_queue,
            },
            **device_info(),
        }

    # -- I/O ---------------------------------------------------------------------------------
    def _forward(self, router: zmq.Socket, outbox: zmq.Socket) -> None:
        while True:
            try:
                parts = outbox.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._send_parts(router, parts[0].bytes, parts[1:])

    def _send(self, router: zmq.Socket, peer: bytes, header: dict[str, Any], frames: list = ()) -> None:
        self._send_parts(router, peer, encode(header, list(frames)))

    def _send_parts(self, router: zmq.Socket, peer: bytes, parts: list) -> None:
        try:
            router.send_multipart([peer, *parts], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            # The client is gone (EHOSTUNREACH) or not reading (EAGAIN): its jobs are pointless.
            log.info("client %s unreachable (%s); cancelling its jobs", peer.hex(), exc.strerror)
            for job in self.queue.jobs_of(peer):
                job.cancel_event.set()
                self.queue.remove_waiting(job)

    def _receive(self, router: zmq.Socket) -> None:
        while True:
            try:
                parts = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer = parts[0].bytes
            try:
                self._handle(router, peer, parts[1:])
            except Exception:  # last line of defence: log, answer, keep serving
                log.exception("unexpected error handling a message")
                self._send(router, peer, error_header(ErrorCode.INTERNAL, "internal error in the backend"))

    def _handle(self, router: zmq.Socket, peer: bytes, parts: list) -> None:
        try:
            msg = decode(parts)
        except ProtocolError as exc:
            req_id = _peek_id(parts)
            log.info("rejected message from %s: %s (%s)", peer.hex(), exc.message, exc.code)
            self._send(router, peer, error_header(exc.code, exc.message, exc.detail, id=req_id))
            return
        kind, req_id = msg.kind, msg.header.get("id")

        def reply(header: dict[str, Any], frames: list = ()) -> None:
            header.setdefault("id", req_id)
            self._send(router, peer, header, frames)

        if kind == Kind.PING:
            reply(make_header(Kind.PONG))
        elif kind == Kind.HELLO:
            reply(self._hello())
        elif kind == Kind.STATUS:
            reply(self._status())
        elif kind == Kind.REFINE:
            self._submit(peer, msg, reply)
        elif kind == Kind.CANCEL:
            self._cancel(peer, msg, reply)
        elif kind == Kind.UNLOAD:
            self.worker.request_unload()
            reply(make_header(Kind.UNLOAD, ok=True))
        elif kind == Kind.SHUTDOWN:
            if not _is_local(parts[0], self.config.endpoint):
                reply(error_header(ErrorCode.FORBIDDEN, "shutdown is only accepted from this machine"))
                return
            reply(make_header(Kind.BYE))
            self.stop()
        else:
            reply(error_header(ErrorCode.UNKNOWN_KIND, f"unknown message kind {kind!r}"))

    # -- handlers ----------------------------------------------------------------------------
    def _hello(self) -> dict[str, Any]:
        return make_header(
            Kind.HELLO,
            protocol=list(PROTOCOL_VERSION),
            backend_version=__version__,
            capabilities=self.capabilities,
        )

    def _status(self) -> dict[str, Any]:
        return make_header(
            Kind.STATUS,
            backend_version=__version__,
            endpoint=self.config.endpoint,
            uptime_s=round(time.monotonic() - self.started, 1),
            pid=os.getpid(),
            worker=self.worker.status(),
            queue=self.queue.snapshot(),
            device=self.capabilities.get("device"),
            memory=device_info().get("memory"),
        )

    def _submit(self, peer: bytes, msg: Message, reply) -> None:
        try:
            fields = parse_refine(msg, self.config)
        except TouchupError as exc:
            log.info("refused refine: %s (%s)", exc.message, exc.code)
            reply(error_header(exc.code, exc.message, exc.detail))
            return
        job = Job(peer=peer, request_id=msg.header.get("id"), **fields)
        try:
            position = self.queue.put(job)
        except OverflowError as exc:
            reply(error_header(ErrorCode.QUEUE_FULL, str(exc)))
            return
        log.info("job %s queued (engine %s, position %d)", job.job_id, job.engine, position)
        reply(make_header(Kind.ACCEPTED, job=job.job_id, position=position))

    def _cancel(self, peer: bytes, msg: Message, reply) -> None:
        job = self.queue.find(str(msg.header.get("job", "")))
        if job is None or job.peer != peer:
            reply(error_header(ErrorCode.UNKNOWN_JOB, f"no queued or running job {msg.header.get('job')!r}"))
            return
        job.cancel_event.set()
        if self.queue.remove_waiting(job):
            # Never started: answer now, on the refine's id so the waiting client sees it.
            reply(make_header(Kind.CANCELLED, id=job.request_id, job=job.job_id))
        # A running job stops at its next step; the worker then sends ``cancelled``.


def resolve_default_engine(config: Config) -> str:
    """RefineAnything's engine when its weights are present, else the CPU engine.

    Only file lookups happen here (no torch import), so start-up stays fast without a GPU.
    """
    try:
        from .engines.diffusion.presets import engine_for_preset
        from .models import first_present_preset

        preset = first_present_preset(config.models_dir)
        if preset is not None and engine_for_preset(preset) in ENGINES:
            return engine_for_preset(preset)
    except Exception as exc:  # a broken cache must not stop the backend from starting
        log.warning("could not look for model weights: %s", exc)
    return DEFAULT_ENGINE


def _peek_id(parts: list) -> Any:
    """The request id of a message that failed validation, when its header is readable."""
    try:
        import msgpack

        header = msgpack.unpackb(parts[0].bytes, raw=False)
        return header.get("id") if isinstance(header, dict) else None
    except Exception:
        return None


def _is_local(frame: Any, endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    try:
        address = frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):
        return False
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
