"""Job and transport logic: one connection to the backend, driven from Qt's event loop.

Nothing here blocks Krita's UI thread. The DEALER socket's ``zmq.FD`` is watched by a
``QSocketNotifier``; that FD is edge-triggered, so every activation (and every send, and once at
start) drains *all* pending messages. A timer pings the backend to show whether it is running
and to notice when it vanishes mid-job; a socket monitor notices a dropped TCP connection at once.
This module knows nothing about Krita documents: the controller passes in what to send and a
callback that applies a result.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from touchup.shared.client import BackendError, Client, refine_request
from touchup.shared.connection import ConnectionError_, load_connection
from touchup.shared.protocol import ErrorCode, Kind, Message, make_header
from touchup.shared.result import SentTile, checked_result

from .config import PluginConfig
from .messages import CANCELLED, human_message
from .qt import QtCore, Signal

CONNECTED = "connected"
STARTING = "starting"
NOT_RUNNING = "not running"
CHECKING = "checking"

_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


class Backend(QtCore.QObject):
    """The connection: state (connected / starting / not running), capabilities, raw messages."""

    state_changed = Signal(str)
    capabilities_changed = Signal(dict)
    message_received = Signal(object)
    #: Emitted when a backend that was connected stops answering (crash, closed, killed).
    lost = Signal(str)

    def __init__(self, config: PluginConfig, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.state = CHECKING
        self.hello: dict[str, Any] = {}
        self.start_error = ""
        self.busy = False
        self._context = zmq.Context.instance()
        self._client: Client | None = None
        self._notifier: QtCore.QSocketNotifier | None = None
        self._monitor: zmq.Socket | None = None
        self._monitor_notifier: QtCore.QSocketNotifier | None = None
        self._ping_id: str | None = None
        self._ping_sent = 0.0
        self._hello_id: str | None = None
        self._process: subprocess.Popen | None = None
        self._process_log: str | None = None
        self._start_deadline = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(int(config.ping_interval_s * 1000))
        self._timer.timeout.connect(self._tick)
        self._connect()
        self._timer.start()
        self._tick()

    # -- public ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self._client.endpoint if self._client is not None else self.config.endpoint

    def send(self, header: dict[str, Any], frames: list = ()) -> str:
        assert self._client is not None
        req_id = self._client.send(header, list(frames))
        # A send may consume the FD's edge while replies wait: look again from the loop.
        QtCore.QTimer.singleShot(0, self._drain)
        return req_id

    def reconfigure(self, config: PluginConfig) -> None:
        """Switch endpoint/command (settings dialog): a fresh socket, state re-checked."""
        self.config = config
        self._timer.setInterval(int(config.ping_interval_s * 1000))
        self._connect()
        self._set_state(CHECKING)
        self._tick()

    def start_backend(self) -> None:
        """Launch the configured ``touchup serve`` command, detached from Krita's lifetime."""
        if self.state == CONNECTED or (self._process is not None and self._process.poll() is None):
            return
        argv = self.config.command()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        fd, self._process_log = tempfile.mkstemp(prefix="touchup-backend-", suffix=".log")
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.start_error = f"Could not start the backend ({' '.join(argv)}): {exc.strerror or exc}"
            self._set_state(NOT_RUNNING)
            return
        finally:
            os.close(fd)
        self.start_error = ""
        self._start_deadline = time.monotonic() + self.config.start_timeout_s
        self._set_state(STARTING)

    def close(self) -> None:
        self._timer.stop()
        self._disconnect()

    # -- socket ------------------------------------------------------------------------------
    def _connect(self) -> None:
        self._disconnect()
        connection = None
        if self.config.connection:  # a backend on another machine, with CurveZMQ keys
            try:
                connection = load_connection(self.config.connection)
            except ConnectionError_ as exc:
                self.start_error = f"Cannot use the connection file: {exc}"
        self._client = Client(
            connection.endpoint if connection else self.config.endpoint,
            context=self._context,
            name="touchup-krita",
            connection=connection,
        )
        self._notifier = QtCore.QSocketNotifier(self._client.fileno(), QtCore.QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._drain)
        try:
            self._monitor = self._client.socket.get_monitor_socket(_MONITOR_EVENTS)
            fd = self._monitor.getsockopt(zmq.FD)
            self._monitor_notifier = QtCore.QSocketNotifier(fd, QtCore.QSocketNotifier.Type.Read, self)
            self._monitor_notifier.activated.connect(self._drain_monitor)
        except zmq.ZMQError:
            self._monitor = None
        self._ping_id = None
        self._hello_id = None
        QtCore.QTimer.singleShot(0, self._drain)  # edge-triggered FD: drain once at start

    def _disconnect(self) -> None:
        for notifier in (self._notifier, self._monitor_notifier):
            if notifier is not None:
                notifier.setEnabled(False)
                notifier.deleteLater()
        self._notifier = self._monitor_notifier = None
        if self._client is not None:
            if self._monitor is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._client.socket.disable_monitor()
                self._monitor.close(0)
                self._monitor = None
            self._client.close()
            self._client = None

    def _drain(self, *_: Any) -> None:
        client = self._client
        if client is None:
            return
        try:
            messages = client.drain()
        except zmq.ZMQError:
            return
        for msg in messages:
            self._handle(msg)
        if self._monitor is not None:
            self._drain_monitor()

    def _drain_monitor(self, *_: Any) -> None:
        from zmq.utils.monitor import recv_monitor_message

        monitor = self._monitor
        disconnected = False
        while monitor is not None and monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                disconnected = True
            elif event["event"] == zmq.EVENT_CONNECTED and self.state != CONNECTED:
                self._send_ping()  # answer quickly instead of at the next tick
        if disconnected and self.state == CONNECTED:
            self._mark_lost("the connection to the backend was closed")

    def _handle(self, msg: Message) -> None:
        req_id = msg.header.get("id")
        if req_id is not None and req_id == self._ping_id:
            self._ping_id = None
            if self.state != CONNECTED:
                self._set_state(CONNECTED)
                self._hello_id = self.send(make_header(Kind.HELLO, client="touchup-krita"))
            return
        if req_id is not None and req_id == self._hello_id:
            self._hello_id = None
            if msg.kind == Kind.HELLO:
                self.hello = dict(msg.header.get("capabilities") or {})
                self.capabilities_changed.emit(self.hello)
            return
        self.message_received.emit(msg)

    # -- liveness ----------------------------------------------------------------------------
    def _send_ping(self) -> None:
        self._ping_id = self.send(make_header(Kind.PING))
        self._ping_sent = time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            self._process = None
            if self.state != CONNECTED:
                self.start_error = f"The backend exited (code {code}). {self._log_tail()}".strip()
                self._set_state(NOT_RUNNING)
        if self._ping_id is None:
            self._send_ping()
            return
        timeout = self.config.busy_ping_timeout_s if self.busy else self.config.ping_timeout_s
        if now - self._ping_sent < timeout:
            return
        # The ping went unanswered: drop the socket (and whatever it had queued) and start over.
        was = self.state
        self._connect()
        if was == CONNECTED:
            self._mark_lost("the backend stopped answering")
        elif self._process is not None and now < self._start_deadline:
            self._set_state(STARTING)
        else:
            if self._process is not None:
                self.start_error = f"The backend did not answer within {self.config.start_timeout_s:g} s. {self._log_tail()}".strip()
            self._set_state(NOT_RUNNING)
        self._send_ping()

    def _mark_lost(self, why: str) -> None:
        self._connect()
        self._set_state(NOT_RUNNING)
        self.lost.emit(why)
        self._send_ping()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def _log_tail(self) -> str:
        if not self._process_log:
            return ""
        try:
            with open(self._process_log, encoding="utf-8", errors="replace") as fh:
                lines = [line.strip() for line in fh.read().splitlines() if line.strip()]
        except OSError:
            return ""
        return " ".join(lines[-3:])


@dataclass
class Job:
    """One refine as the plugin tracks it, from submission to its layer (or its error)."""

    key: int
    header: dict[str, Any]
    frames: list
    label: str
    payload: Any = None  # what the apply callback needs (the Capture); opaque here
    request_id: str | None = None
    backend_job: str | None = None
    state: str = "waiting"  # waiting | sent | queued | running | ready | done | failed | cancelled
    position: int = 0
    stage: str = ""
    step: int = 0
    total: int = 0
    result: Message | None = None
    error: str = ""
    error_code: str = ""
    output: Any = None  # the created layer
    submitted: float = field(default_factory=time.monotonic)
    finished: float = 0.0
    cancel_requested: bool = False
    sent: SentTile | None = None  # the tile the result must fit

    @property
    def terminal(self) -> bool:
        return self.state in ("ready", "done", "failed", "cancelled")

    @property
    def over(self) -> bool:
        """Fully handled: its layer was added, or it failed or was cancelled."""
        return self.state in ("done", "failed", "cancelled")


class JobQueue(QtCore.QObject):
    """Submitted jobs in order. Results are applied strictly in submission order."""

    changed = Signal()
    job_over = Signal(object)

    def __init__(
        self, backend: Backend, apply: Callable[[Job], Any], parent: QtCore.QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.backend = backend
        self.apply = apply
        self.jobs: list[Job] = []
        #: Cancelled before the backend named them: cancel once ``accepted`` arrives.
        self._cancel_pending: dict[str, Job] = {}
        self._keys = 0
        backend.message_received.connect(self._on_message)
        backend.state_changed.connect(self._on_state)
        backend.lost.connect(self._on_lost)
        self._wait_timer = QtCore.QTimer(self)
        self._wait_timer.setInterval(250)
        self._wait_timer.timeout.connect(self._check_waiting)
        self._wait_timer.start()

    # -- public ------------------------------------------------------------------------------
    def submit(
        self, source, mask, origin, doc_size, references, prompt, engine, preset, params, label, payload
    ) -> Job:
        header, frames = refine_request(
            source,
            mask,
            origin,
            doc_size,
            references,
            prompt=prompt,
            engine=engine,
            preset=preset,
            params=params,
        )
        self._keys += 1
        job = Job(self._keys, header, frames, label, payload, sent=SentTile.of_request(header, frames))
        self.jobs.append(job)
        if self.backend.state == NOT_RUNNING:
            self._fail(job, ErrorCode.UNREACHABLE, "")
        elif self.backend.state == CONNECTED:
            self._send(job)
        # CHECKING / STARTING: sent as soon as the backend answers (see _on_state).
        self._flush()
        return job

    def active(self) -> list[Job]:
        return [j for j in self.jobs if not j.terminal]

    def cancel(self, job: Job | None = None) -> None:
        """Cancel one job, or every job not finished yet."""
        for j in [job] if job is not None else list(self.jobs):
            if j.terminal:
                continue
            j.cancel_requested = True
            if j.backend_job is not None:
                self._send_cancel(j)
            elif j.request_id is not None:
                self._cancel_pending[j.request_id] = j
            self._finish(j, "cancelled", CANCELLED, "")
        self._flush()

    # -- internals ---------------------------------------------------------------------------
    def _send(self, job: Job) -> None:
        job.request_id = self.backend.send(job.header, job.frames)
        job.frames = []  # the pixels are in ZeroMQ's hands now; do not keep a second copy
        job.state = "sent"

    def _send_cancel(self, job: Job) -> None:
        if self.backend.state == CONNECTED:
            self.backend.send(make_header(Kind.CANCEL, job=job.backend_job))

    def _find(self, req_id: Any) -> Job | None:
        return next((j for j in self.jobs if j.request_id is not None and j.request_id == req_id), None)

    def _on_message(self, msg: Message) -> None:
        # A Qt slot: an exception here would vanish into Krita's console and leave the job
        # "sent" for ever. Whatever goes wrong fails that job, visibly.
        try:
            self._handle_message(msg)
        except Exception as exc:
            job = self._find(msg.header.get("id"))
            if job is not None and not job.terminal:
                self._finish(
                    job, "failed", ErrorCode.INTERNAL, f"Touchup could not read the backend's reply: {exc}"
                )
            self._flush()
            self.changed.emit()

    def _handle_message(self, msg: Message) -> None:
        req_id = msg.header.get("id")
        pending = self._cancel_pending.pop(req_id, None) if req_id is not None else None
        if pending is not None:
            if msg.kind == Kind.ACCEPTED:
                pending.backend_job = str(msg.header.get("job"))
                self._send_cancel(pending)
            return
        job = self._find(req_id)
        if job is None:
            return
        if msg.kind == Kind.ACCEPTED:
            job.backend_job = str(msg.header.get("job"))
            job.position = int(msg.header.get("position") or 0)
            if not job.terminal:
                job.state = "queued"
        if job.terminal:
            return  # late replies for a cancelled job
        if msg.kind == Kind.PROGRESS:
            job.state = "running"
            job.stage = str(msg.header.get("stage") or "")
            job.step = int(msg.header.get("step") or 0)
            job.total = int(msg.header.get("total") or 0)
        elif msg.kind == Kind.RESULT:
            try:
                if job.sent is not None:
                    checked_result(msg, job.sent)
            except BackendError as exc:
                self._fail(job, exc.code, exc.message)
            else:
                job.result = msg
                job.state = "ready"
                job.finished = time.monotonic()
        elif msg.kind == Kind.ERROR:
            err = BackendError.from_message(msg)
            self._fail(job, err.code, err.message, err.detail)
        elif msg.kind == Kind.CANCELLED:
            self._finish(job, "cancelled", CANCELLED, "")
        self._flush()
        self.changed.emit()

    def _on_state(self, state: str) -> None:
        if state == CONNECTED:
            for job in self.jobs:
                if job.state == "waiting":
                    self._send(job)
        elif state == NOT_RUNNING:
            for job in self.jobs:
                if job.state == "waiting":
                    self._fail(job, ErrorCode.UNREACHABLE, "")
            self._flush()
        self.changed.emit()

    def _on_lost(self, why: str) -> None:
        text = (
            f"The backend stopped while refining ({why}); the refine was abandoned. "
            "Krita and your document are unaffected: start the backend again and press Refine."
        )
        for job in self.active():
            self._finish(job, "failed", ErrorCode.UNREACHABLE, text)
        self._flush()
        self.changed.emit()

    def _check_waiting(self) -> None:
        if self.backend.state == CHECKING:
            limit = self.backend.config.ping_timeout_s + 1.0
            for job in self.jobs:
                if job.state == "waiting" and time.monotonic() - job.submitted > limit:
                    self._fail(job, ErrorCode.UNREACHABLE, "")
            self._flush()

    def _fail(self, job: Job, code: str, message: str, detail: str | None = None) -> None:
        text = human_message(code, message, detail)
        if code == ErrorCode.UNREACHABLE and self.backend.start_error:
            text = f"{text} {self.backend.start_error}"
        self._finish(job, "failed", code, text)

    def _finish(self, job: Job, state: str, code: str, error: str) -> None:
        job.state = state
        job.error_code = code
        job.error = error or human_message(code)
        job.finished = time.monotonic()
        job.frames = []

    def _flush(self) -> None:
        """Apply ready results from the head of the queue, so layers land in submission order."""
        while self.jobs and self.jobs[0].terminal:
            job = self.jobs.pop(0)
            if job.state == "ready":
                try:
                    job.output = self.apply(job)
                    job.state = "done"
                except Exception as exc:  # shown in the docker; Krita keeps running
                    job.state = "failed"
                    job.error_code = "apply"
                    job.error = str(exc) or exc.__class__.__name__
                job.result = None
            self.job_over.emit(job)
        self._update_busy()
        self.changed.emit()

    def _update_busy(self) -> None:
        self.backend.busy = bool(self.active())
