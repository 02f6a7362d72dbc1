"""The one place the menu actions, the docker and the headless ``refine()`` meet.

All three go through :meth:`Controller.refine`, so a script exercises exactly the path a user's
click does: read the tile from the document, queue the job, insert the layer when it lands.
"""

from __future__ import annotations

import json
import time
from typing import Any

from touchup.shared.frames import Frame
from touchup.shared.geometry import Rect
from touchup.shared.protocol import Message, Transfer
from touchup.shared.texts import STRIP_TEXT, applied_layer_name

from .config import PluginConfig, RefineSettings, load_config, save_config
from .connection import Backend
from .document import Capture, PluginError, capture
from .jobs import Job, JobQueue, JobState
from .layer import insert_result, is_open
from .qt import QtCore, Signal
from .results import PreviewState, ResultEntry, ResultHistory, zoom_rect

_instance: Controller | None = None


def _krita() -> Any:
    from krita import Krita

    return Krita.instance()


class Controller(QtCore.QObject):
    """Owns the backend connection, the job queue and the last settings; reports errors."""

    error_changed = Signal(str)
    info_changed = Signal(str)
    settings_changed = Signal(object)
    #: The results strip's content or the chosen result / preview state changed.
    results_changed = Signal()

    def __init__(self, config: PluginConfig | None = None, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config or load_config(_krita().readSetting)
        self.backend = Backend(self.config, self)
        self.queue = JobQueue(self.backend, self._apply, self)
        self.queue.job_over.connect(self._on_job_over)
        self.queue.variant_ready.connect(self._on_variant)
        self.history = ResultHistory()
        self.chosen: int | None = None
        self.preview_state = PreviewState.OFF
        self._preview: Any = None  # CanvasPreview, made on first use (it needs a window)
        self._backgrounds: dict[int, Any] = {}  # job key -> the tile as an image, for thumbnails
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

    # -- the results strip --------------------------------------------------------------------
    def results(self, document: Any) -> list[ResultEntry]:
        """``document``'s recent results, the newest refine first (what the strip shows)."""
        return self.history.entries(document)

    def choose(self, key: int | None) -> bool:
        """Preview result ``key`` on the canvas (None: no choice). False where the canvas cannot
        show it (another document active, rotated view); Apply works all the same."""
        entry = self.history.find(key) if key is not None else None
        self.chosen = entry.key if entry is not None else None
        shown = False
        if entry is None:
            self._canvas().hide()
            self.preview_state = PreviewState.OFF
        else:
            shown = self._canvas().show(entry.document, entry.image, entry.rect)
            self.preview_state = PreviewState.RESULT if shown else PreviewState.OFF
            self.report_info("" if shown else STRIP_TEXT["preview_unavailable"])
        self.results_changed.emit()
        return shown

    def compare(self) -> PreviewState:
        """Flip the canvas between the chosen result and the original (the Compare action)."""
        entry = self.history.find(self.chosen) if self.chosen is not None else None
        if entry is None:
            return self.preview_state
        if self.preview_state == PreviewState.RESULT:
            self._canvas().hide()
            self.preview_state = PreviewState.ORIGINAL
        elif self._canvas().show(entry.document, entry.image, entry.rect):
            self.preview_state = PreviewState.RESULT
        self.results_changed.emit()
        return self.preview_state

    def apply_chosen(self, key: int | None = None) -> Any:
        """Insert the chosen result (or result ``key``) as a new layer, one undo step; returns it."""
        key = key if key is not None else self.chosen
        entry = self.history.find(key) if key is not None else None
        if entry is None:
            return None
        self._canvas().hide()  # first: the layer must not be judged through the overlay
        try:
            node = insert_result(entry.target, entry.frame, entry.origin, entry.layer_name)
        except PluginError as exc:
            self.report_error(str(exc))
            return None
        entry.applied = node
        self.chosen = None
        self.preview_state = PreviewState.OFF
        self.report_info(STRIP_TEXT["applied"].format(name=entry.layer_name))
        self.results_changed.emit()
        return node

    def discard(self, key: int | None = None) -> int:
        """Drop the chosen result and the other variants of its refine; the document is untouched.
        Returns how many results were dropped."""
        key = key if key is not None else self.chosen
        self._canvas().hide()
        self.chosen = None
        self.preview_state = PreviewState.OFF
        gone = self.history.remove({e.key for e in self.history.batch(key)}) if key is not None else []
        if gone:
            self.report_info(STRIP_TEXT["discarded"].format(count=len(gone)))
        self.results_changed.emit()
        return len(gone)

    def forget_closed(self) -> None:
        """Drop results of documents that were closed (their layers cannot be inserted any more)."""
        before = self.history.count()
        self.history.forget(is_open)
        if self.chosen is not None and self.history.find(self.chosen) is None:
            self.chosen = None
            self.preview_state = PreviewState.OFF
            self._canvas().hide()
        if self.history.count() != before:
            self.results_changed.emit()

    def _canvas(self) -> Any:
        if self._preview is None:
            from .preview import CanvasPreview

            self._preview = CanvasPreview(self)
        return self._preview

    def _record(self, job: Job, msg: Message, frame: Frame, applied: Any = None) -> ResultEntry:
        """Put one result into the strip (with its thumbnail and preview image)."""
        from .images import composite_thumbnail, frame_image

        cap: Capture | None = job.payload
        origin = _origin(msg, cap)
        header = job.header
        params = header.get("params") or {}
        variant = int(msg.header.get("variant") or 0)
        seed = msg.header.get("seed")
        if not isinstance(seed, int):
            seed = (int(params.get("seed") or 0) + variant) % 2**63
        transfer = cap.colorspace.transfer if cap is not None else Transfer.SRGB
        image = frame_image(frame, transfer)
        frame_rect = Rect(origin[0], origin[1], frame.desc.width, frame.desc.height)
        thumbnail = None
        if cap is not None:
            background = self._backgrounds.get(job.key)
            if background is None:
                background = self._backgrounds[job.key] = frame_image(cap.source, cap.colorspace.transfer)
            thumbnail = composite_thumbnail(
                background, cap.tile, image, frame_rect, zoom_rect(cap.selection, frame_rect)
            )
        entry = ResultEntry(
            key=self.history.new_key(),
            document=cap.document if cap is not None else None,
            target=cap.target if cap is not None else None,
            frame=frame,
            origin=origin,
            selection=cap.selection if cap is not None else frame_rect,
            layer_name=applied_layer_name(job.label, seed, job.variants),
            seed=seed,
            preset=_preset_label(
                header.get("engine"), header.get("preset") or self.default_preset(header.get("engine"))
            ),
            instruction=str(header.get("prompt") or ""),
            variant=variant,
            variants=job.variants,
            job_key=job.key,
            thumbnail=thumbnail,
            image=image,
            applied=applied,
        )
        self.history.add(entry)
        self.results_changed.emit()
        return entry

    def _on_variant(self, job: Job, msg: Message) -> None:
        frame = msg.frame("result")
        if frame is None or job.payload is None:
            return
        try:
            self._record(job, msg, frame)
        except Exception as exc:  # a display problem must not lose the job
            self.report_error(f"Touchup could not show a result: {exc}")
            return
        self.report_info(STRIP_TEXT["arrived"].format(count=len(job.variant_results), total=job.variants))

    # -- internals ---------------------------------------------------------------------------
    def _apply(self, job: Job) -> Any:
        """A finished job: a single result becomes a layer at once (and is kept in the strip);
        several variants only go to the strip, where the retoucher picks one to apply."""
        cap: Capture = job.payload
        msg = job.result
        assert msg is not None
        frame = msg.frame("result")
        if frame is None:
            raise PluginError("The backend's result had no pixels; update the backend.")
        if job.variants > 1:
            self._record(job, msg, frame)
            return [e for e in self.history.entries(cap.document) if e.job_key == job.key]
        node = insert_result(cap, frame, _origin(msg, cap), job.label)
        try:
            self._record(job, msg, frame, applied=node)
        except Exception as exc:  # the layer is in; only its thumbnail failed
            self.report_error(f"Touchup could not show the result in the strip: {exc}")
        return node

    def _on_job_over(self, job: Job) -> None:
        job.payload = None  # drop the captured pixels
        self._backgrounds.pop(job.key, None)
        if job.state == JobState.DONE and job.variants > 1:
            self.report_info(STRIP_TEXT["arrived"].format(count=job.variants, total=job.variants))
            if not self.queue.active():
                self.report_error("")
        elif job.state == JobState.DONE:
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


def _preset_label(engine: str | None, preset: str | None) -> str:
    """``engine · preset`` as the preset chooser shows it (the backend's default where unnamed)."""
    return " · ".join(p for p in (engine, preset) if p)


def _origin(msg: Message, cap: Capture | None) -> tuple[int, int]:
    origin = msg.header.get("origin") or ([cap.tile.x, cap.tile.y] if cap is not None else [0, 0])
    return int(origin[0]), int(origin[1])


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
