"""The docker's results strip: thumbnails of the active document's recent results, the live
preview of the running refine, and Apply / Discard / Compare.

Widgets only: choosing, applying and discarding go through the controller, which owns the
results (``results.py``) and the canvas preview (``preview.py``).
"""

from __future__ import annotations

from typing import Any

from touchup.shared.texts import STRIP_TEXT

from .images import THUMB_SIDE, fit, frame_image
from .jobs import JobState
from .qt import Qt, QtCore, QtGui, QtWidgets
from .results import PreviewState

#: Item data role holding an entry's key (the running job's tile holds None).
KEY_ROLE = int(Qt.ItemDataRole.UserRole)


class ResultsStrip(QtWidgets.QWidget):
    """A horizontal row of thumbnails, newest first, and the buttons acting on the chosen one."""

    def __init__(self, ctl: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = ctl
        self._document: Any = None
        self._shown: list[tuple[int | None, bool]] = []
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QtWidgets.QLabel(STRIP_TEXT["title"])
        layout.addWidget(self.title)
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("touchup_results")
        self.list.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.list.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QtWidgets.QListView.Movement.Static)
        self.list.setIconSize(QtCore.QSize(THUMB_SIDE, THUMB_SIDE))
        self.list.setGridSize(QtCore.QSize(THUMB_SIDE + 10, THUMB_SIDE + 24))
        self.list.setFixedHeight(THUMB_SIDE + 46)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.list.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setToolTip(STRIP_TEXT["empty"])
        self.list.itemSelectionChanged.connect(self._on_pick)
        layout.addWidget(self.list)

        row = QtWidgets.QHBoxLayout()
        self.apply_button = _button(STRIP_TEXT["apply"], STRIP_TEXT["apply_tip"], "touchup_apply")
        self.apply_button.clicked.connect(lambda: ctl.apply_chosen())
        self.discard_button = _button(STRIP_TEXT["discard"], STRIP_TEXT["discard_tip"], "touchup_discard")
        self.discard_button.clicked.connect(lambda: ctl.discard())
        self.compare_button = _button(STRIP_TEXT["compare"], STRIP_TEXT["compare_tip"], "touchup_compare")
        self.compare_button.setCheckable(True)
        self.compare_button.clicked.connect(lambda: ctl.compare())
        for button in (self.apply_button, self.discard_button, self.compare_button):
            row.addWidget(button)
        layout.addLayout(row)

        ctl.results_changed.connect(self.refresh)
        ctl.queue.changed.connect(self._on_queue)
        self.refresh()

    def set_document(self, document: Any) -> None:
        if document is None or self._document is None or document != self._document:
            self._document = document
            self.refresh()

    def refresh(self) -> None:
        """Rebuild the items when the document's results changed; mirror the chosen one."""
        entries = self.ctl.results(self._document) if self._document is not None else []
        running = self._running_job()
        wanted = ([(None, False)] if running is not None else []) + [
            (e.key, e.applied is not None) for e in entries
        ]
        if wanted != self._shown:
            self.list.blockSignals(True)
            self.list.clear()
            if running is not None:
                self.list.addItem(self._running_item(running))
            for entry in entries:
                item = QtWidgets.QListWidgetItem()
                if entry.thumbnail is not None:
                    item.setIcon(QtGui.QIcon(QtGui.QPixmap.fromImage(entry.thumbnail)))
                item.setText(f"✓ {entry.seed}" if entry.applied is not None else str(entry.seed))
                item.setToolTip(entry.tooltip)
                item.setData(KEY_ROLE, entry.key)
                self.list.addItem(item)
            self.list.blockSignals(False)
            self._shown = wanted
        self._mirror_choice()

    # -- internals ---------------------------------------------------------------------------
    def _mirror_choice(self) -> None:
        chosen = self.ctl.chosen
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            item = self.list.item(i)
            assert item is not None  # i < count()
            item.setSelected(chosen is not None and item.data(KEY_ROLE) == chosen)
        self.list.blockSignals(False)
        has = chosen is not None
        self.apply_button.setEnabled(has)
        self.discard_button.setEnabled(has)
        self.compare_button.setEnabled(has and self.ctl.preview_state != PreviewState.OFF)
        self.compare_button.setChecked(self.ctl.preview_state == PreviewState.ORIGINAL)

    def _on_pick(self) -> None:
        items = self.list.selectedItems()
        key = items[0].data(KEY_ROLE) if items else None
        if key is None and items:  # the running job's tile: nothing to preview yet
            self._mirror_choice()
            return
        if key != self.ctl.chosen:
            self.ctl.choose(key)

    def _running_job(self) -> Any:
        for job in self.ctl.queue.active():
            cap = job.payload
            running = job.state == JobState.RUNNING and cap is not None and self._document is not None
            if running and cap.document == self._document:
                return job
        return None

    def _running_item(self, job: Any) -> QtWidgets.QListWidgetItem:
        item = QtWidgets.QListWidgetItem()
        item.setData(KEY_ROLE, None)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        self._update_running(item, job)
        return item

    def _update_running(self, item: QtWidgets.QListWidgetItem, job: Any) -> None:
        if job.preview is not None:
            item.setIcon(QtGui.QIcon(QtGui.QPixmap.fromImage(fit(frame_image(job.preview)))))
        of = f" {job.variant + 1}/{job.variants}" if job.variants > 1 else ""
        item.setText(f"{job.step}/{job.total}{of}" if job.total else STRIP_TEXT["running"])
        item.setToolTip(STRIP_TEXT["running"])

    def _on_queue(self) -> None:
        running = self._running_job()
        if (running is not None) != bool(self._shown and self._shown[0][0] is None):
            self.refresh()
            return
        first = self.list.item(0)
        if running is not None and first is not None:
            self._update_running(first, running)


def _button(text: str, tip: str, name: str) -> QtWidgets.QPushButton:
    button = QtWidgets.QPushButton(text)
    button.setToolTip(tip)
    button.setObjectName(name)
    return button
