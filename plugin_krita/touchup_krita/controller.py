"""The one place the menu actions, the docker and the headless ``refine()`` meet.

All three go through :meth:`Controller.refine`, so a script exercises exactly the path a user's
click does: read the tile from the document, queue the job, insert the layer when it lands.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .config import PluginConfig, RefineSettings, load_config, save_config
from .connection import Backend
from .document import Capture, PluginError, capture
from .jobs import Job, JobQueue, JobState
from .layer import insert_result
from .qt import QtCore, Signal

_instance: Controller | None = None


def _krita() -> Any:
    from krita import Krita

    return Krita.instance()


class Controller(QtCore.QObject):
    """Owns the backend connection, the job queue and the last settings; reports errors."""

    error_changed = Signal(str)
    info_changed = Signal(str)
    settings_changed = Signal(object)

    def __init__(self, config: PluginConfig | None = None, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config or load_config(_krita().readSetting)
        self.backend = Backend(self.config, self)
        self.queue = JobQueue(self.backend, self._apply, self)
        self.queue.job_over.connect(self._on_job_over)
        self.settings = self._load_settings()
        self.last_settings: RefineSettings | None = None
        self.last_error = ""
        self.last_info = ""

    # -- actions -----------------------------------------------------------------------------
    def refine(self, document: Any, settings: RefineSettings) -> Job:
        """Read the selection's context tile from ``document`` and queue a refine.

        Raises :class:`PluginError` (also shown in the docker) when the document cannot be
        refined as asked.
        """
        try:
            cap = capture(document, settings)
        except PluginError as exc:
            self.report_error(str(exc))
            raise
        self.report_error("")
        self.last_settings = RefineSettings.from_dict(settings.to_dict())
        return self.queue.submit(
            cap.source,
            cap.mask,
            (cap.tile.x, cap.tile.y),
            cap.doc_size,
            cap.references,
            prompt=settings.instruction,
            engine=settings.engine,
            preset=settings.preset,
            params=settings.params(),
            label=settings.layer_name(self.default_preset(settings.engine)),
            payload=cap,
            transfer=cap.colorspace.transfer,
        )

    def refine_active(self, settings: RefineSettings | None = None) -> Job | None:
        """The menu/docker entry: refine the active document; errors only reach the docker."""
        settings = settings or self.settings
        self.update_settings(settings)
        try:
            return self.refine(_krita().activeDocument(), settings)
        except PluginError:
            return None

    def refine_again(self) -> Job | None:
        """Refine the current selection with the settings used last (saved across sessions)."""
        return self.refine_active(self.last_settings or self.settings)

    def cancel(self) -> None:
        self.queue.cancel()
        self.report_info("Cancelled.")

    def start_backend(self) -> None:
        self.backend.start_backend()
        if self.backend.start_error:
            self.report_error(self.backend.start_error)

    def set_config(self, config: PluginConfig) -> None:
        self.config = config
        save_config(config, _krita().writeSetting)
        self.backend.reconfigure(config)

    def default_preset(self, engine: str | None) -> str | None:
        """The preset the backend uses for ``engine`` (or its default engine) when none is named."""
        hello = self.backend.hello
        name = engine or hello.get("default_engine")
        for desc in hello.get("engines", []):
            if desc.get("name") == name:
                preset = desc.get("default_preset")
                return str(preset) if preset is not None else None

        return None

    def update_settings(self, settings: RefineSettings) -> None:
        self.settings = settings
        data = settings.to_dict()
        data.pop("reference", None)  # layer ids mean nothing in another document
        _krita().writeSetting("touchup", "last_settings", json.dumps(data))
        self.settings_changed.emit(settings)

    # -- reporting ---------------------------------------------------------------------------
    def report_error(self, text: str) -> None:
        self.last_error = text
        self.error_changed.emit(text)

    def report_info(self, text: str) -> None:
        self.last_info = text
        self.info_changed.emit(text)

    # -- internals ---------------------------------------------------------------------------
    def _apply(self, job: Job) -> Any:
        cap: Capture = job.payload
        msg = job.result
        assert msg is not None
        frame = msg.frame("result")
        if frame is None:
            raise PluginError("The backend's result had no pixels; update the backend.")
        origin = msg.header.get("origin") or [cap.tile.x, cap.tile.y]
        return insert_result(cap, frame, (int(origin[0]), int(origin[1])), job.label)

    def _on_job_over(self, job: Job) -> None:
        job.payload = None  # drop the captured pixels
        if job.state == JobState.DONE:
            self.report_info(f"Added layer '{job.label}' in {job.finished - job.submitted:.1f} s.")
            if not self.queue.active():
                self.report_error("")
        elif job.state == JobState.FAILED:
            self.report_error(job.error)
        elif job.state == JobState.CANCELLED:
            self.report_info("Refine cancelled.")

    def _load_settings(self) -> RefineSettings:
        try:
            data = json.loads(_krita().readSetting("touchup", "last_settings", "") or "{}")
            return RefineSettings.from_dict(data)
        except (ValueError, TypeError):
            return RefineSettings()


def controller() -> Controller:
    """The plugin-wide controller, created on first use (Krita's QApplication must exist)."""
    global _instance
    if _instance is None:
        _instance = Controller()
    return _instance


def wait_for(job: Job, timeout: float | None = None) -> None:
    """Run Qt's event loop until ``job`` is fully handled (used by the headless entry point)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    loop = QtCore.QEventLoop()
    timer = QtCore.QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: loop.quit() if job.over or _past(deadline) else None)
    timer.start()
    while not job.over and not _past(deadline):
        loop.exec()
    timer.stop()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
