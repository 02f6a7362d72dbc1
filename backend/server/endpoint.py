"""The resident backend's network front: a ZeroMQ ROUTER on the network thread.

The network thread never runs a model. It decodes and validates requests, answers ``hello``,
``ping`` and ``status`` at once (also while a job runs), queues refine jobs, handles cancel,
and forwards whatever the worker produces (progress, results, errors) to the client that
submitted the job.

What keeps it standing whatever clients send:

* every message is decoded and bounded through one schema; any failure answers with a coded
  error carrying the request id (or without one when the id itself is unreadable) and the loop
  goes on;
* ZeroMQ refuses message parts larger than the configured pixel limits allow (``MAXMSGSIZE``)
  before they are read into memory;
* each turn of the loop reads a bounded batch of requests and then forwards the worker's
  output, so a client flooding pings cannot starve another client's results;
* a worker thread that dies is noticed within a turn: its job fails with ``worker_restarted``
  and a new worker starts; ``status`` and the log say so;
* a client that disconnects (closed, or silent past the ZeroMQ heartbeat) has its jobs
  cancelled: the socket monitor reports the disconnect and the loop probes the owners of queued
  and running jobs;
* one backend per endpoint, ``ipc://`` included (a lock file beside the socket).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ...shared import __version__
from ...shared.client import BackendError, Client
from ...shared.protocol import (
    PROTOCOL_VERSION,
    TRUSTED_KINDS,
    ErrorCode,
    Kind,
    Message,
    ProtocolError,
    decode,
    encode,
    error_header,
    make_header,
)
from ...shared.request import MESSAGE_FIELDS, RequestError, check_fields
from ..cluster.executor import ClusterError, Executor, LocalExecutor
from ..config import Config
from ..device import device_info
from ..engines import DEFAULT_ENGINE, ENGINES, engine_class
from ..errors import TouchupError
from .auth import CurveSecurity, KeyStore, is_loopback, keys_dir, peer_identity
from .limits import max_frames, max_message_bytes, parse_refine
from .lock import EndpointLock
from .queue import Job, JobQueue
from .worker import Worker

#: Answers the request being handled: a header (its id is filled in) and optional frames.
Reply = Callable[..., None]


log = logging.getLogger("touchup.server")

OUTBOX = "inproc://touchup-worker-outbox"
#: Requests read per turn of the loop before the worker's output is forwarded again.
READ_BATCH = 32
#: Worker messages forwarded per turn (progress is rate-limited by the engine anyway).
FORWARD_BATCH = 256
#: After a disconnect, when (seconds) to check that the owners of jobs are still there.
PROBE_DELAYS = (0.05, 0.5, 1.2)
#: Requests per second (and burst) one connection may send; beyond that they are dropped unread.
#: An editor sends about one ping a second.
REQUEST_RATE = 200.0
REQUEST_BURST = 400.0


class RateLimit:
    """A token bucket per connection, so one flooding client costs the loop almost nothing."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[bytes, tuple[float, float]] = {}  # peer -> (tokens, last time)
        self._warned: dict[bytes, float] = {}

    def allow(self, peer: bytes) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) > 4096:  # forget idle connections
            self._buckets = {p: v for p, v in self._buckets.items() if now - v[1] < 60}
        ok = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if ok else tokens, now)
        if not ok and now - self._warned.get(peer, 0.0) > 10.0:
            self._warned[peer] = now
            log.warning(
                "client %s sends more than %.0f requests/s; dropping the excess", peer.hex(), self.rate
            )
        return ok


class AlreadyRunning(RuntimeError):
    """Another backend already serves the endpoint."""


class InsecureEndpoint(RuntimeError):
    """Listening beyond this machine without CurveZMQ was asked for, and refused."""


def insecure_message(endpoint: str) -> str:
    return (
        f"refusing to listen on {endpoint} without CurveZMQ: anyone who can reach this machine could "
        "use its GPU and see the images sent to it. Create keys with `touchup keys init` and "
        "`touchup keys add NAME --endpoint ...` (one per user), then start with `--curve` "
        "(or set curve = true in config.toml)."
    )


class Server:
    def __init__(self, config: Config, executor: Executor | None = None) -> None:
        if not config.engine:
            config.engine = resolve_default_engine(config)
        self.config = config
        self.ctx = zmq.Context()
        self.queue = JobQueue(config.max_queue, config.max_queue_per_client, config.max_queued_bytes)
        #: What runs jobs: one engine here, or a Ray Serve pool (``--cluster``); one worker
        #: thread per slot takes jobs from the queue and hands them to it.
        self.executor = executor or make_executor(config)
        self.workers: list[Worker] = []
        self._stop = threading.Event()
        self.started = time.monotonic()
        self.instance = secrets.token_hex(8)
        self.capabilities: dict[str, Any] = {}
        #: Each engine's preset names, from the same engine instances ``hello`` describes.
        #: Each engine's presets by name (the default first) with their default variant count.
        self.presets: dict[str, dict[str, int]] = {}
        self.ready = threading.Event()
        self.worker_restarts: list[dict[str, Any]] = []
        self._security: CurveSecurity | None = None
        self._announced = -1
        self._probes: list[float] = []
        self._rate = RateLimit(REQUEST_RATE, REQUEST_BURST)

    # -- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Bind, serve until stopped (signal or ``shutdown`` message), then clean up."""
        endpoint = self.config.endpoint
        if not self.config.curve and not is_loopback(endpoint):
            raise InsecureEndpoint(insecure_message(endpoint))
        lock = EndpointLock(endpoint)
        if not lock.acquire():
            raise AlreadyRunning(f"a Touchup backend is already running at {endpoint}")
        try:
            self._refuse_second_instance()
            self._serve(lock)
        finally:
            lock.release()

    # -- start-up ----------------------------------------------------------------------------
    def _new_worker(self, index: int) -> Worker:
        return Worker(self.config, self.queue, self.ctx, OUTBOX, self.executor, index)

    def _refuse_second_instance(self) -> None:
        """A tcp port another program holds fails at bind; a backend there is named plainly."""
        if self.config.curve:
            return  # an unkeyed probe gets no answer from a CurveZMQ backend; bind decides
        try:
            with Client(self.config.endpoint) as probe:
                probe.ping(timeout=0.3)
        except BackendError:
            return
        raise AlreadyRunning(f"a Touchup backend is already running at {self.config.endpoint}")

    def _router(self) -> zmq.Socket:
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a vanished client raises
        router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes(self.config))
        router.setsockopt(zmq.RCVHWM, 4 * READ_BATCH)  # a flood waits in the sender's queue, not ours
        ivl = max(100, int(self.config.heartbeat_s * 1000))
        router.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl)
        router.setsockopt(zmq.HEARTBEAT_TTL, 3 * ivl)
        if self.config.curve:
            self._security = CurveSecurity(self.ctx, KeyStore(keys_dir(self.config)))
            self._security.start()
            self._security.secure(router)
        return router

    def _serve(self, lock: EndpointLock) -> None:
        try:
            router = self._router()
        except Exception as exc:
            if self._security:
                self._security.stop()
            raise AlreadyRunning(f"cannot set up CurveZMQ: {exc}") from None
        try:
            router.bind(self.config.endpoint)
        except zmq.ZMQError as exc:
            router.close(0)
            if self._security:
                self._security.stop()
            raise AlreadyRunning(f"cannot listen on {self.config.endpoint}: {exc.strerror}") from None
        monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        outbox = self.ctx.socket(zmq.PULL)
        outbox.bind(OUTBOX)
        self.capabilities = self._describe_engines()
        self.presets = {
            e["name"]: {p["name"]: p["variants"] for p in e["presets"]} for e in self.capabilities["engines"]
        }
        try:
            self.executor.start()
        except Exception:
            monitor.close(0)
            router.close(0)
            outbox.close(0)
            if self._security:
                self._security.stop()
            raise
        self.workers = [self._new_worker(i) for i in range(self.executor.slots)]
        for worker in self.workers:
            worker.start()
        self._install_signal_handlers()
        security = "CurveZMQ, keys in " + str(keys_dir(self.config)) if self.config.curve else "loopback only"
        log.info("touchup %s listening on %s (%s)", __version__, self.config.endpoint, security)
        self.ready.set()
        poller = zmq.Poller()
        for sock in (router, outbox, monitor):
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                self._forward(router, outbox)
                if router in events:
                    self._receive(router)
                if monitor in events:
                    self._on_disconnect(monitor)
                self._supervise_worker(router)
                self._announce_positions(router)
                self._probe_if_due(router)
        finally:
            log.info("shutting down")
            for job in self.queue.jobs_of_all():
                job.cancel_event.set()
            for worker in self.workers:
                worker.stop()
            for worker in self.workers:
                worker.join(timeout=10)
            self.executor.close()
            with contextlib.suppress(zmq.ZMQError):
                router.disable_monitor()
            monitor.close(0)
            router.close(0)
            outbox.close(0)
            if self._security:
                self._security.stop()
            self.ctx.term()
            if self.config.endpoint.startswith("ipc://"):
                lock.remove_socket_file()

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
                "max_queue_per_client": self.config.max_queue_per_client,
                "max_message_bytes": max_message_bytes(self.config),
            },
            **device_info(),
        }

    # -- I/O ---------------------------------------------------------------------------------
    def _forward(self, router: zmq.Socket, outbox: zmq.Socket) -> None:
        for _ in range(FORWARD_BATCH):
            try:
                parts = outbox.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._send_parts(router, parts[0].bytes, parts[1:])

    def _send(
        self, router: zmq.Socket, peer: bytes, header: dict[str, Any], frames: Sequence[Any] = ()
    ) -> None:
        self._send_parts(router, peer, encode(header, list(frames)))

    def _send_parts(self, router: zmq.Socket, peer: bytes, parts: list) -> bool:
        try:
            router.send_multipart([peer, *parts], zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError as exc:
            # The client is gone (EHOSTUNREACH) or not reading (EAGAIN): its jobs are pointless.
            jobs = self.queue.jobs_of(peer)
            if jobs:
                log.info(
                    "client %s unreachable (%s); cancelling its %d job(s)",
                    peer.hex(),
                    exc.strerror,
                    len(jobs),
                )
            for job in jobs:
                job.cancel_event.set()
                self.queue.remove_waiting(job)
            return False

    def _receive(self, router: zmq.Socket) -> None:
        for _ in range(READ_BATCH):
            try:
                parts = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer = parts[0].bytes
            if len(parts) < 2 or not self._rate.allow(peer):
                continue  # empty, or a client far over any sane request rate: not even decoded
            self._handle(router, peer, parts[1:])
        # A full batch means more is waiting: let the worker thread have the interpreter for a
        # moment, so a flood of cheap requests cannot slow the job everyone waits for.
        time.sleep(0.001)

    def _handle(self, router: zmq.Socket, peer: bytes, parts: list) -> None:
        req_id: Any = None

        def reply(header: dict[str, Any], frames: Sequence[Any] = ()) -> None:
            header.setdefault("id", req_id)
            self._send(router, peer, header, frames)

        try:
            try:
                msg = decode(parts, max_frames=max_frames(self.config))
            except ProtocolError as exc:
                req_id = exc.request_id
                log.info("rejected message from %s: %s (%s)", peer.hex(), exc.message, exc.code)
                reply(error_header(exc.code, exc.message, exc.detail))
                return
            req_id = msg.header.get("id")
            user, trusted = peer_identity(parts[0], self.config.curve, self.config.endpoint)
            self._dispatch(msg, peer, user or peer.hex(), trusted, reply)
        except (TouchupError, RequestError) as exc:
            log.info("refused %s from %s: %s", _kind_of(parts), peer.hex(), exc.message)
            reply(error_header(exc.code, exc.message, getattr(exc, "detail", None)))
        except Exception:  # last line of defence: log, answer with the id, keep serving
            log.exception("unexpected error handling a message")
            with contextlib.suppress(Exception):
                reply(error_header(ErrorCode.INTERNAL, "internal error in the backend"))

    def _dispatch(self, msg: Message, peer: bytes, owner: str, trusted: bool, reply: Reply) -> None:
        kind = msg.kind
        fields = check_fields(MESSAGE_FIELDS.get(kind, ()), msg.header)
        if kind in TRUSTED_KINDS and not trusted:
            reply(
                error_header(
                    ErrorCode.FORBIDDEN,
                    f"{kind} is only accepted from this machine or from a client with a key",
                )
            )
            return
        if kind == Kind.PING:
            reply(make_header(Kind.PONG, instance=self.instance))
        elif kind == Kind.HELLO:
            reply(self._hello())
        elif kind == Kind.STATUS:
            reply(self._status(None if trusted else owner))
        elif kind == Kind.REFINE:
            self._submit(peer, owner, msg, reply)
        elif kind == Kind.CANCEL:
            self._cancel(peer, fields["job"], reply)
        elif kind == Kind.UNLOAD:
            self.executor.request_unload()
            reply(make_header(Kind.UNLOAD, ok=True))
        elif kind == Kind.SHUTDOWN:
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
            instance=self.instance,
            capabilities=self.capabilities,
        )

    def _status(self, viewer: str | None) -> dict[str, Any]:
        worker = self.executor.status()
        worker["restarts"] = len(self.worker_restarts)
        if self.worker_restarts:
            worker["last_restart"] = self.worker_restarts[-1]
        return make_header(
            Kind.STATUS,
            backend_version=__version__,
            instance=self.instance,
            endpoint=self.config.endpoint,
            security="curve" if self.config.curve else "loopback",
            uptime_s=round(time.monotonic() - self.started, 1),
            pid=os.getpid(),
            worker=worker,
            queue=self.queue.snapshot(viewer),
            device=self.capabilities.get("device"),
            memory=device_info().get("memory"),
        )

    def _submit(self, peer: bytes, owner: str, msg: Message, reply: Reply) -> None:
        fields = parse_refine(msg, self.config, self.presets)
        job = Job(peer=peer, request_id=msg.header.get("id"), owner=owner, **fields)
        position = self.queue.put(job)  # QueueFull is a TouchupError: answered by _handle
        job.position = position
        log.info(
            "job %s queued for %s (engine %s, position %d)", job.job_id, owner[:16], job.engine, position
        )
        reply(make_header(Kind.ACCEPTED, job=job.job_id, position=position, instance=self.instance))

    def _cancel(self, peer: bytes, job_id: str | None, reply: Reply) -> None:
        job = self.queue.find(job_id) if job_id else None
        if job is None or job.peer != peer:
            shown = (job_id or "")[:64]
            reply(error_header(ErrorCode.UNKNOWN_JOB, f"no queued or running job {shown!r}"))
            return
        job.cancel_event.set()
        if self.queue.remove_waiting(job):
            # Never started: answer now, on the refine's id so the waiting client sees it.
            reply(make_header(Kind.CANCELLED, id=job.request_id, job=job.job_id))
        # A running job stops at its next check; the worker then sends ``cancelled``.

    # -- housekeeping, once per turn ---------------------------------------------------------
    def _supervise_worker(self, router: zmq.Socket) -> None:
        """A dead worker fails its job (with the id) and is replaced; the event is kept for status."""
        if self._stop.is_set():
            return
        for index, worker in enumerate(self.workers):
            if worker.is_alive():
                continue
            crash = worker.crash or "the worker thread ended"
            reason = crash.strip().splitlines()[-1][:300] if crash.strip() else crash
            self.worker_restarts.append({"at": round(time.time(), 3), "reason": reason})
            log.error(
                "the worker died (%s); starting a new one (restart %d)", reason, len(self.worker_restarts)
            )
            job = worker.job
            if job is not None:
                self.queue.done(job)
                header = error_header(
                    ErrorCode.WORKER_RESTARTED,
                    "the backend's worker failed during this job and was restarted; try again",
                    reason,
                    id=job.request_id,
                    job=job.job_id,
                )
                self._send(router, job.peer, header)
            self.workers[index] = self._new_worker(index)
            self.workers[index].start()

    def _announce_positions(self, router: zmq.Socket) -> None:
        """Tell each waiting client its new place in line when the line moved."""
        generation = self.queue.generation
        if generation == self._announced:
            return
        self._announced = generation
        for job, position in self.queue.positions():
            if position != job.position:
                job.position = position
                self._send(router, job.peer, self._queued_progress(job, position))

    def _on_disconnect(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
        now = time.monotonic()
        self._probes = sorted(set(self._probes) | {now + d for d in PROBE_DELAYS})

    def _probe_if_due(self, router: zmq.Socket) -> None:
        """Resend each job's current state to its client: a vanished client fails the send, and
        :meth:`_send_parts` cancels its jobs. Clients see an ordinary progress event."""
        now = time.monotonic()
        if not self._probes or self._probes[0] > now:
            return
        self._probes = [t for t in self._probes if t > now]
        positions = dict((job.job_id, pos) for job, pos in self.queue.positions())
        for job in self.queue.jobs_of_all():
            if job.job_id in positions:
                header = self._queued_progress(job, positions[job.job_id])
            else:
                header = make_header(
                    Kind.PROGRESS,
                    id=job.request_id,
                    job=job.job_id,
                    stage=job.stage,
                    step=job.step,
                    total=job.total,
                    position=0,
                    variant=job.variant,
                    variants=job.variants,
                )
            self._send(router, job.peer, header)

    @staticmethod
    def _queued_progress(job: Job, position: int) -> dict[str, Any]:
        return make_header(
            Kind.PROGRESS,
            id=job.request_id,
            job=job.job_id,
            stage="queued",
            step=0,
            total=0,
            position=position,
            variant=0,
            variants=job.variants,
        )


def make_executor(config: Config) -> Executor:
    """Jobs run in this process, or -- with ``cluster`` set -- on a Ray Serve pool (Ray is
    imported only then, so a plain backend never pays for it)."""
    if config.cluster:
        try:
            from ..cluster.ray_executor import RayExecutor
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("ray"):
                raise
            raise ClusterError("--cluster needs Ray: pip install 'touchup[cluster]'") from None
        return RayExecutor(config)
    return LocalExecutor(config.engine_options, config.idle_unload_s)


def resolve_default_engine(config: Config) -> str:
    """RefineAnything's engine when its weights are present, else the CPU engine.

    Only file lookups happen here (no torch import), so start-up stays fast without a GPU.
    """
    try:
        from ..engines.diffusion.presets import engine_for_preset
        from ..models import first_present_preset

        preset = first_present_preset(config.models_dir)
        if preset is not None and engine_for_preset(preset) in ENGINES:
            return engine_for_preset(preset)
    except Exception as exc:  # a broken cache must not stop the backend from starting
        log.warning("could not look for model weights: %s", exc)
    return DEFAULT_ENGINE


def _kind_of(parts: list) -> str:
    try:
        import msgpack

        kind = msgpack.unpackb(parts[0].bytes, raw=False).get("kind")
        return str(kind)[:32]
    except Exception:
        return "message"
