"""The plugin's jobs: what was submitted, what the backend says of each, results in order.

Results are applied strictly in submission order, so layers stack the way the user clicked.
The connection (``connection.py``) carries the messages; the controller passes in a callback
that turns a result into a layer. A job asking for several variants gets each finished one as a
``variant`` message before its final ``result``: each is checked against the tile and handed on
at once (``variant_ready``), and progress messages carry the variant being computed and the
engine's live preview frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from touchup.shared.client import BackendError, refine_request
from touchup.shared.frames import Frame
from touchup.shared.protocol import ErrorCode, Kind, Message, Transfer, make_header
from touchup.shared.result import SentTile, checked_result

from .connection import Backend, ConnectionState
from .messages import SETTINGS_CHANGED, human_message
from .qt import QtCore, Signal


class JobState(str, Enum):
    """Where a job is, from the plugin's side. ``ready``: its result arrived but is applied only
    once every job submitted before it is over."""

    WAITING = "waiting"
    SENT = "sent"
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A finished variant that is not the last (the last one comes as the ``result``).
VARIANT = Kind.VARIANT

TERMINAL = frozenset({JobState.READY, JobState.DONE, JobState.FAILED, JobState.CANCELLED})
OVER = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


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
    state: JobState = JobState.WAITING
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
    #: Variants: how many the backend makes for this job, which one it is computing now, and
    #: the ``variant`` messages that arrived before the final ``result``.
    variants: int = 1
    variant: int = 0
    variant_results: list[Message] = field(default_factory=list)
    #: The engine's latest low-resolution look at the result (a ``preview`` frame), while running.
    preview: Frame | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def over(self) -> bool:
        """Fully handled: its layer was added, or it failed or was cancelled."""
        return self.state in OVER


class JobQueue(QtCore.QObject):
    """Submitted jobs in order. Results are applied strictly in submission order."""

    changed = Signal()
    job_over = Signal(object)
    #: (job, message): a finished variant, checked against the tile; sent as soon as it lands.
    variant_ready = Signal(object, object)

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
        backend.switched.connect(self._on_switched)
        self._wait_timer = QtCore.QTimer(self)
        self._wait_timer.setInterval(250)
        self._wait_timer.timeout.connect(self._check_waiting)
        self._wait_timer.start()

    # -- public ------------------------------------------------------------------------------
    def submit(
        self,
        source: Frame,
        mask: Frame,
        origin: tuple[int, int],
        doc_size: tuple[int, int],
        references: Iterable[Frame],
        prompt: str,
        engine: str | None,
        preset: str | None,
        params: dict[str, Any] | None,
        label: str,
        payload: Any,
        transfer: Transfer = Transfer.SRGB,
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
            transfer=transfer,
        )
        self._keys += 1
        job = Job(self._keys, header, frames, label, payload, sent=SentTile.of_request(header, frames))
        self.jobs.append(job)
        if self.backend.state == ConnectionState.NOT_RUNNING:
            self._fail(job, ErrorCode.UNREACHABLE, "")
        elif self.backend.state == ConnectionState.CONNECTED:
            self._send(job)
        # ConnectionState.CHECKING / ConnectionState.STARTING: sent as soon as the backend answers (see _on_state).
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
            self._finish(j, JobState.CANCELLED, ErrorCode.CANCELLED, "")
        self._flush()

    # -- internals ---------------------------------------------------------------------------
    def _send(self, job: Job) -> None:
        job.request_id = self.backend.send(job.header, job.frames)
        job.frames = []  # the pixels are in ZeroMQ's hands now; do not keep a second copy
        job.state = JobState.SENT

    def _send_cancel(self, job: Job) -> None:
        if self.backend.state == ConnectionState.CONNECTED:
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
                    job,
                    JobState.FAILED,
                    ErrorCode.INTERNAL,
                    f"Touchup could not read the backend's reply: {exc}",
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
                job.state = JobState.QUEUED
        if job.terminal:
            return  # late replies for a cancelled job
        if msg.kind == Kind.PROGRESS:
            job.state = JobState.RUNNING
            job.stage = str(msg.header.get("stage") or "")
            job.step = int(msg.header.get("step") or 0)
            job.total = int(msg.header.get("total") or 0)
            self._note_variant(job, msg)
            preview = msg.frame("preview")
            if preview is not None:
                job.preview = preview
        elif msg.kind == VARIANT:
            try:
                if job.sent is not None:
                    checked_result(msg, job.sent)
            except BackendError as exc:
                self._fail(job, exc.code, exc.message)
            else:
                self._note_variant(job, msg)
                job.preview = None
                job.variant_results.append(msg)
                self.variant_ready.emit(job, msg)
        elif msg.kind == Kind.RESULT:
            self._note_variant(job, msg)
            try:
                if job.sent is not None:
                    checked_result(msg, job.sent)
            except BackendError as exc:
                self._fail(job, exc.code, exc.message)
            else:
                job.result = msg
                job.state = JobState.READY
                job.finished = time.monotonic()
        elif msg.kind == Kind.ERROR:
            err = BackendError.from_message(msg)
            self._fail(job, err.code, err.message, err.detail)
        elif msg.kind == Kind.CANCELLED:
            self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "")
        self._flush()
        self.changed.emit()

    @staticmethod
    def _note_variant(job: Job, msg: Message) -> None:
        variants = msg.header.get("variants")
        if isinstance(variants, int) and variants >= 1:
            job.variants = variants
        variant = msg.header.get("variant")
        if isinstance(variant, int) and variant >= 0:
            job.variant = variant

    def _on_state(self, state: str) -> None:
        if state == ConnectionState.CONNECTED:
            for job in self.jobs:
                if job.state == JobState.WAITING:
                    self._send(job)
        elif state == ConnectionState.NOT_RUNNING:
            for job in self.jobs:
                if job.state == JobState.WAITING:
                    self._fail(job, ErrorCode.UNREACHABLE, "")
            self._flush()
        self.changed.emit()

    def _on_lost(self, why: str) -> None:
        text = (
            f"The backend stopped while refining ({why}); the refine was abandoned. "
            "Krita and your document are unaffected: start the backend again and press Refine."
        )
        for job in self.active():
            self._finish(job, JobState.FAILED, ErrorCode.UNREACHABLE, text)
        self._flush()
        self.changed.emit()

    def _on_switched(self) -> None:
        """New settings, new socket: jobs already sent can never be answered and fail with a
        message (instead of showing progress for ever); jobs not sent yet go to the new backend."""
        self._cancel_pending.clear()
        for job in self.active():
            if job.state != JobState.WAITING:
                self._finish(job, JobState.FAILED, ErrorCode.BACKEND_RESTARTED, SETTINGS_CHANGED)
        self._flush()
        self.changed.emit()

    def _check_waiting(self) -> None:
        if self.backend.state == ConnectionState.CHECKING:
            limit = self.backend.config.ping_timeout_s + 1.0
            for job in self.jobs:
                if job.state == JobState.WAITING and time.monotonic() - job.submitted > limit:
                    self._fail(job, ErrorCode.UNREACHABLE, "")
            self._flush()

    def _fail(self, job: Job, code: str, message: str, detail: str | None = None) -> None:
        text = human_message(code, message, detail)
        if code == ErrorCode.UNREACHABLE and self.backend.start_error:
            text = f"{text} {self.backend.start_error}"
        self._finish(job, JobState.FAILED, code, text)

    def _finish(self, job: Job, state: JobState, code: str, error: str) -> None:
        job.state = state
        job.preview = None
        job.error_code = code
        job.error = error or human_message(code)
        job.finished = time.monotonic()
        job.frames = []

    def _flush(self) -> None:
        """Apply ready results from the head of the queue, so layers land in submission order."""
        while self.jobs and self.jobs[0].terminal:
            job = self.jobs.pop(0)
            if job.state == JobState.READY:
                try:
                    job.output = self.apply(job)
                    job.state = JobState.DONE
                except Exception as exc:  # shown in the docker; Krita keeps running
                    job.state = JobState.FAILED
                    job.error_code = "apply"
                    job.error = str(exc) or exc.__class__.__name__
                job.result = None
            self.job_over.emit(job)
        self._update_busy()
        self.changed.emit()

    def _update_busy(self) -> None:
        self.backend.busy = bool(self.active())
