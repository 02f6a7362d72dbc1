"""The plugin's one connection to the backend, driven from Qt's event loop.

Nothing here blocks Krita's UI thread. The DEALER socket's ``zmq.FD`` is watched by a
``QSocketNotifier``; that FD is edge-triggered, so every activation (and every send, and once at
start) drains *all* pending messages. A timer pings the backend to show whether it is running
and to notice when it vanishes mid-job; a socket monitor notices a dropped TCP connection at once.
It knows nothing of jobs or documents: it hands every other message on as ``message_received``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any, cast

import zmq

from touchup.shared.client import Client
from touchup.shared.connection import ConnectionError_, load_connection
from touchup.shared.frames import Frame
from touchup.shared.protocol import Kind, Message, make_header

from .config import PluginConfig
from .launcher import BackendLauncher
from .qt import QtCore, Signal


class ConnectionState(str, Enum):
    """What the docker shows about the backend; the values are the words it shows."""

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
    #: Emitted when new settings replaced the socket: replies to what the old one sent are lost.
    switched = Signal()

    def __init__(self, config: PluginConfig, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.state = ConnectionState.CHECKING
        self.hello: dict[str, Any] = {}
        self.start_error = ""
        self.busy = False
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._client: Client | None = None
        self._notifier: QtCore.QSocketNotifier | None = None
        self._monitor: zmq.Socket | None = None
        self._monitor_notifier: QtCore.QSocketNotifier | None = None
        self._ping_id: str | None = None
        self._ping_sent = 0.0
        self._hello_id: str | None = None
        self._launcher = BackendLauncher()
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

    def send(self, header: dict[str, Any], frames: Sequence[Frame] = ()) -> str:
        assert self._client is not None
        req_id = self._client.send(header, list(frames))
        # A send may consume the FD's edge while replies wait: look again from the loop.
        QtCore.QTimer.singleShot(0, self._drain)
        return req_id

    def reconfigure(self, config: PluginConfig) -> None:
        """Switch endpoint/command (settings dialog): a fresh socket, state re-checked. The old
        backend's replies were addressed to the old socket, so the job queue hears ``switched``;
        the old backend drops that client's jobs when it sees it gone."""
        self.config = config
        self._timer.setInterval(int(config.ping_interval_s * 1000))
        self._connect()
        self.switched.emit()
        self._set_state(ConnectionState.CHECKING)
        self._tick()

    def start_backend(self) -> None:
        """Launch the configured ``touchup serve`` command, detached from Krita's lifetime."""
        if self.state == ConnectionState.CONNECTED or self._launcher.running:
            return
        self.start_error = self._launcher.start(self.config.command(), self.config.start_timeout_s)
        self._set_state(ConnectionState.NOT_RUNNING if self.start_error else ConnectionState.STARTING)

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
        self._notifier = QtCore.QSocketNotifier(
            self._client.fileno(),  # type: ignore[arg-type]  # PyQt's stubs say voidptr; an int fd is what it takes
            QtCore.QSocketNotifier.Type.Read,
            self,
        )
        self._notifier.activated.connect(self._drain)
        try:
            self._monitor = self._client.socket.get_monitor_socket(_MONITOR_EVENTS)
            fd = cast(int, self._monitor.getsockopt(zmq.FD))
            self._monitor_notifier = QtCore.QSocketNotifier(
                fd,  # type: ignore[arg-type]  # PyQt's stubs say voidptr; an int fd is what it takes
                QtCore.QSocketNotifier.Type.Read,
                self,
            )
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
        while monitor is not None and cast(int, monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                disconnected = True
            elif event["event"] == zmq.EVENT_CONNECTED and self.state != ConnectionState.CONNECTED:
                self._send_ping()  # answer quickly instead of at the next tick
        if disconnected and self.state == ConnectionState.CONNECTED:
            self._mark_lost("the connection to the backend was closed")

    def _handle(self, msg: Message) -> None:
        req_id = msg.header.get("id")
        if req_id is not None and req_id == self._ping_id:
            self._ping_id = None
            if self.state != ConnectionState.CONNECTED:
                self._set_state(ConnectionState.CONNECTED)
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
        code = self._launcher.reap()
        if code is not None and self.state != ConnectionState.CONNECTED:
            self.start_error = f"The backend exited (code {code}). {self._launcher.log_tail()}".strip()
            self._set_state(ConnectionState.NOT_RUNNING)
        if self._ping_id is None:
            self._send_ping()
            return
        timeout = self.config.busy_ping_timeout_s if self.busy else self.config.ping_timeout_s
        if now - self._ping_sent < timeout:
            return
        # The ping went unanswered: drop the socket (and whatever it had queued) and start over.
        was = self.state
        self._connect()
        if was == ConnectionState.CONNECTED:
            self._mark_lost("the backend stopped answering")
        elif self._launcher.launched and now < self._launcher.deadline:
            self._set_state(ConnectionState.STARTING)
        else:
            if self._launcher.launched:
                self.start_error = f"The backend did not answer within {self.config.start_timeout_s:g} s. {self._launcher.log_tail()}".strip()
            self._set_state(ConnectionState.NOT_RUNNING)
        self._send_ping()

    def _mark_lost(self, why: str) -> None:
        self._connect()
        self._set_state(ConnectionState.NOT_RUNNING)
        self.lost.emit(why)
        self._send_ping()

    def _set_state(self, state: ConnectionState) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)
