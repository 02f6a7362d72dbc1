"""Widgets: the refine settings form, the "Touchup" docker and the dialogs.

The form is shared by the docker and the Refine Selection… dialog so the two never drift.
Widgets only read and write :class:`RefineSettings` and call the controller; they never touch
sockets or pixels.
"""

from __future__ import annotations

import random
from typing import Any, cast

from touchup.shared.capabilities import preset_missing
from touchup.shared.texts import STRIP_TEXT, stage_text

from .config import SOURCE_LAYER, SOURCE_VISIBLE, PluginConfig, RefineSettings
from .connection import ConnectionState
from .document import layer_choices
from .jobs import JobState
from .qt import Qt, QtCore, QtGui, QtWidgets
from .strip import ResultsStrip

STATE_TEXT = {
    ConnectionState.CONNECTED: ("#3c9a3c", "Backend connected"),
    ConnectionState.STARTING: ("#d08a00", "Backend starting…"),
    ConnectionState.NOT_RUNNING: ("#c03030", "Backend not running"),
    ConnectionState.CHECKING: ("#808080", "Checking backend…"),
}
SEED_MAX = 2**31 - 1


def _model(combo: QtWidgets.QComboBox) -> QtGui.QStandardItemModel:
    """A combo box's item model: Qt's standard one, whose items can be disabled one by one."""
    return cast(QtGui.QStandardItemModel, combo.model())


class SettingsForm(QtWidgets.QWidget):
    """Every refine control; greys out what the selected preset does not accept."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._presets: list[dict[str, Any]] = []
        form = QtWidgets.QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.instruction = QtWidgets.QLineEdit()
        self.instruction.setObjectName("touchup_instruction")
        self.instruction.setPlaceholderText("optional, e.g. crisp lettering")
        self.reference = QtWidgets.QComboBox()
        self.reference.setObjectName("touchup_reference")
        self.reference.addItem("None", None)
        self.preset = QtWidgets.QComboBox()
        self.preset.setObjectName("touchup_preset")
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.strength = QtWidgets.QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setDecimals(2)
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(0, 200)
        self.steps.setSpecialValueText("auto")
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(0, SEED_MAX)
        self.dice = QtWidgets.QToolButton()
        self.dice.setText("⚄")
        self.dice.setToolTip("Random seed")
        self.dice.clicked.connect(lambda: self.seed.setValue(random.randint(0, SEED_MAX)))
        seed_row = QtWidgets.QHBoxLayout()
        seed_row.setContentsMargins(0, 0, 0, 0)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.dice)
        self.context = QtWidgets.QSpinBox()
        self.context.setRange(0, 2048)
        self.context.setSuffix(" px")
        self.context.setToolTip("Margin of surrounding image sent with the selection (at 1-megapixel scale)")
        self.feather = QtWidgets.QSpinBox()
        self.feather.setRange(0, 512)
        self.feather.setSuffix(" px")
        self.feather.setToolTip("Width of the soft blend at the selection's edge")
        self.source = QtWidgets.QComboBox()
        self.source.addItem("Visible image", SOURCE_VISIBLE)
        self.source.addItem("Active layer", SOURCE_LAYER)
        self.mode = QtWidgets.QComboBox()
        self.mode.addItem("Refine", "refine")
        self.mode.addItem("Regenerate", "regenerate")
        self.variants = QtWidgets.QSpinBox()
        self.variants.setObjectName("touchup_variants")
        self.variants.setRange(1, 8)
        self.variants.setToolTip(STRIP_TEXT["variants_tip"])

        form.addRow("Instruction", self.instruction)
        form.addRow("Reference", self.reference)
        form.addRow("Preset", self.preset)
        form.addRow("Strength", self.strength)
        form.addRow("Steps", self.steps)
        form.addRow("Seed", seed_row)
        form.addRow("Context", self.context)
        form.addRow("Feather", self.feather)
        form.addRow("Source", self.source)
        form.addRow("Mode", self.mode)
        form.addRow(STRIP_TEXT["variants"], self.variants)
        self.set_settings(RefineSettings())
        self.set_capabilities({})

    # -- settings ----------------------------------------------------------------------------
    def settings(self) -> RefineSettings:
        preset = self.preset.currentData() or {}
        accepts = preset.get("accepts", {})
        return RefineSettings(
            instruction=self.instruction.text().strip() if accepts.get("prompt", True) else "",
            reference=self.reference.currentData() if accepts.get("reference", True) else None,
            engine=preset.get("engine"),
            preset=preset.get("name"),
            strength=self.strength.value(),
            steps=self.steps.value() or None,
            seed=self.seed.value(),
            context=float(self.context.value()),
            feather=float(self.feather.value()),
            source=self.source.currentData(),
            mode=self.mode.currentData(),
            # The preset's own default is left to the backend (an older one knows no variants).
            variants=None if self.variants.value() == _preset_variants(preset) else self.variants.value(),
        )

    def set_settings(self, s: RefineSettings) -> None:
        self.instruction.setText(s.instruction)
        self.strength.setValue(s.strength)
        self.steps.setValue(int(s.steps or 0))
        self.seed.setValue(int(s.seed))
        self.context.setValue(int(s.context))
        self.feather.setValue(int(s.feather))
        _select(self.source, s.source)
        _select(self.mode, s.mode)
        if s.variants:
            self.variants.setValue(int(s.variants))
        if s.reference:
            _select(self.reference, s.reference)
        for i in range(self.preset.count()):
            data = self.preset.itemData(i) or {}
            if (data.get("engine"), data.get("name")) == (s.engine, s.preset) and _model(self.preset).item(
                i
            ).isEnabled():
                self.preset.setCurrentIndex(i)

    # -- capabilities ------------------------------------------------------------------------
    def set_capabilities(self, capabilities: dict[str, Any]) -> None:
        """Fill the preset chooser from ``hello``'s engine descriptions."""
        current = self.preset.currentData() or {}
        self.preset.blockSignals(True)
        self.preset.clear()
        default_engine = capabilities.get("default_engine")
        for engine in capabilities.get("engines", []):
            for p in engine.get("presets", []):
                data = {
                    "engine": engine.get("name"),
                    "name": p.get("name"),
                    "accepts": p.get("accepts") or {},
                    "defaults": p.get("defaults") or {},
                    "variants": p.get("variants"),
                }
                self.preset.addItem(f"{engine.get('name')} · {p.get('name')}", data)
                index = self.preset.count() - 1
                tip = p.get("description") or engine.get("description") or ""
                missing = preset_missing(engine, p)
                if missing:
                    tip = f"{tip}\nNot available: {missing}".strip()
                    _model(self.preset).item(index).setEnabled(False)
                self.preset.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        if self.preset.count() == 0:
            self.preset.addItem("backend default", {})
        enabled = [i for i in range(self.preset.count()) if _model(self.preset).item(i).isEnabled()] or [0]
        chosen = enabled[0]
        for i in enabled:
            data = self.preset.itemData(i) or {}
            if (data.get("engine"), data.get("name")) == (current.get("engine"), current.get("name")):
                chosen = i
                break
            if not current and data.get("engine") == default_engine and chosen == enabled[0]:
                chosen = i
        self.preset.setCurrentIndex(chosen)
        self.preset.blockSignals(False)
        data = self.preset.currentData() or {}
        if (data.get("engine"), data.get("name")) != (current.get("engine"), current.get("name")):
            self.variants.setValue(_preset_variants(data))
        self._apply_accepts()

    def _preset_changed(self, *_: Any) -> None:
        data = self.preset.currentData() or {}
        defaults = data.get("defaults", {})
        if "steps" in defaults and defaults["steps"] is not None:
            self.steps.setValue(int(defaults["steps"]))
        if "strength" in defaults and defaults["strength"] is not None:
            self.strength.setValue(float(defaults["strength"]))
        self.variants.setValue(_preset_variants(data))
        self._apply_accepts()

    def _apply_accepts(self) -> None:
        accepts = (self.preset.currentData() or {}).get("accepts")

        def allow(key: str) -> bool:
            return accepts is None or bool(accepts.get(key, False))

        self.instruction.setEnabled(allow("prompt"))
        self.reference.setEnabled(allow("reference"))
        self.strength.setEnabled(allow("strength"))
        self.steps.setEnabled(allow("steps"))
        self.seed.setEnabled(allow("seed"))
        self.dice.setEnabled(allow("seed"))
        regenerate = allow("regenerate")
        _model(self.mode).item(1).setEnabled(regenerate)
        if not regenerate:
            self.mode.setCurrentIndex(0)
        for widget, key in (
            (self.instruction, "prompt"),
            (self.reference, "reference"),
            (self.steps, "steps"),
            (self.seed, "seed"),
        ):
            widget.setToolTip("" if allow(key) else "The selected preset does not use this")

    # -- layers ------------------------------------------------------------------------------
    def set_layers(self, choices: list[tuple[str, str]]) -> None:
        """Refill the reference chooser (None + layers), keeping the current choice if it exists."""
        current = self.reference.currentData()
        wanted = [(None, "None"), *[(uid, name) for uid, name in choices]]
        have = [
            (self.reference.itemData(i), self.reference.itemText(i)) for i in range(self.reference.count())
        ]
        if have == wanted:
            return
        self.reference.blockSignals(True)
        self.reference.clear()
        for uid, name in wanted:
            self.reference.addItem(name, uid)
        _select(self.reference, current)
        self.reference.blockSignals(False)


class TouchupDockerWidget(QtWidgets.QWidget):
    """The docker's content: form, Refine/Cancel, progress, connection and messages."""

    def __init__(self, ctl: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = ctl
        layout = QtWidgets.QVBoxLayout(self)
        self.form = SettingsForm()
        layout.addWidget(self.form)

        buttons = QtWidgets.QHBoxLayout()
        self.refine_button = QtWidgets.QPushButton("Refine")
        self.refine_button.setObjectName("touchup_refine")
        self.refine_button.clicked.connect(self.refine)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setObjectName("touchup_cancel")
        self.cancel_button.clicked.connect(ctl.cancel)
        buttons.addWidget(self.refine_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.stage = QtWidgets.QLabel("")
        self.stage.setObjectName("touchup_stage")
        layout.addWidget(self.progress)
        layout.addWidget(self.stage)
        # Right under Refine: the candidates are what the retoucher looks at next.
        self.strip = ResultsStrip(ctl)
        layout.addWidget(self.strip)

        conn = QtWidgets.QHBoxLayout()
        self.state_label = QtWidgets.QLabel("")
        self.state_label.setObjectName("touchup_state")
        self.start_button = QtWidgets.QPushButton("Start backend")
        self.start_button.setObjectName("touchup_start")
        self.start_button.clicked.connect(ctl.start_backend)
        self.config_button = QtWidgets.QToolButton()
        self.config_button.setText("⚙")
        self.config_button.setToolTip("Backend address and start command")
        self.config_button.clicked.connect(self.edit_config)
        conn.addWidget(self.state_label, 1)
        conn.addWidget(self.start_button)
        conn.addWidget(self.config_button)
        layout.addLayout(conn)

        self.error_label = QtWidgets.QLabel("")
        self.error_label.setObjectName("touchup_error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #d04040;")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info_label = QtWidgets.QLabel("")
        self.info_label.setObjectName("touchup_info")
        self.info_label.setWordWrap(True)
        layout.addWidget(self.error_label)
        layout.addWidget(self.info_label)
        layout.addStretch(1)

        self.form.set_settings(ctl.settings)
        self.form.set_capabilities(ctl.backend.hello)
        ctl.backend.state_changed.connect(self._on_state)
        ctl.backend.capabilities_changed.connect(self.form.set_capabilities)
        ctl.queue.changed.connect(self._on_queue)
        ctl.error_changed.connect(self._on_error)
        ctl.info_changed.connect(self.info_label.setText)
        ctl.settings_changed.connect(self._on_settings)
        self._on_state(ctl.backend.state)
        self._on_queue()
        self._on_error(ctl.last_error)
        self.info_label.setText(ctl.last_info)

        self._layer_timer = QtCore.QTimer(self)
        self._layer_timer.setInterval(1000)  # Krita has no layer-change signal for Python: poll
        self._layer_timer.timeout.connect(self.refresh_layers)
        self._layer_timer.start()

    def refine(self) -> None:
        self.ctl.refine_active(self.form.settings())

    def refresh_layers(self, document: Any = None) -> None:
        from krita import Krita

        document = document or Krita.instance().activeDocument()
        self.form.set_layers(layer_choices(document))
        self.ctl.forget_closed()
        self.strip.set_document(document)

    def edit_config(self) -> None:
        dialog = ConfigDialog(self.ctl.config, self)
        if dialog.exec():
            self.ctl.set_config(dialog.config())

    def _on_settings(self, settings: RefineSettings) -> None:
        """Mirror settings chosen elsewhere (the Refine Selection… dialog) in the docker."""
        reference = self.form.reference.currentData()
        self.form.set_settings(settings)
        _select(self.form.reference, settings.reference or reference)

    def _on_state(self, state: str) -> None:
        colour, text = STATE_TEXT[ConnectionState(state)]
        self.state_label.setText(f'<span style="color:{colour}">●</span> {text}')
        self.state_label.setToolTip(self.ctl.backend.endpoint)
        self.start_button.setEnabled(state == ConnectionState.NOT_RUNNING)

    def _on_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    def _on_queue(self) -> None:
        active = self.ctl.queue.active()
        self.cancel_button.setEnabled(bool(active))
        if not active:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.stage.setText("")
            return
        job = active[0]
        more = f" (+{len(active) - 1} queued)" if len(active) > 1 else ""
        if job.state == JobState.RUNNING and job.total:
            self.progress.setRange(0, job.total)
            self.progress.setValue(job.step)
            self.stage.setText(f"{stage_text(job.stage)} {job.step}/{job.total}{more}")
        else:
            self.progress.setRange(0, 0)  # busy indicator until the first progress message
            waiting = {
                JobState.WAITING: "Waiting for the backend",
                JobState.SENT: "Sending",
                JobState.QUEUED: "Queued",
            }
            text = waiting.get(job.state, job.state.capitalize())
            if job.state == JobState.QUEUED and job.position:
                text += f" (position {job.position})"
            if job.state == JobState.RUNNING:
                text = stage_text(job.stage)
            self.stage.setText(text + more)


def make_docker_class() -> type:
    """The DockWidget subclass; built lazily because ``krita`` only imports inside Krita."""
    from krita import DockWidget

    class TouchupDocker(DockWidget):
        def __init__(self) -> None:
            super().__init__()
            from .controller import controller

            self.setWindowTitle("Touchup")
            self.content = TouchupDockerWidget(controller())
            scroll = QtWidgets.QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(self.content)
            scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
            self.setWidget(scroll)

        def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's API name
            self.content.refresh_layers()

    return TouchupDocker


class RefineDialog(QtWidgets.QDialog):
    """Refine Selection…: the same form as the docker, confirmed with OK."""

    def __init__(self, ctl: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        from krita import Krita

        self.setWindowTitle("Refine Selection")
        layout = QtWidgets.QVBoxLayout(self)
        self.form = SettingsForm()
        self.form.set_capabilities(ctl.backend.hello)
        self.form.set_layers(layer_choices(Krita.instance().activeDocument()))
        self.form.set_settings(ctl.settings)
        layout.addWidget(self.form)
        box = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        box.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Refine")
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout.addWidget(box)
        self.form.instruction.setFocus()


class ConfigDialog(QtWidgets.QDialog):
    """Backend address and the command the Start backend button runs."""

    def __init__(self, config: PluginConfig, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._config = config
        self.setWindowTitle("Touchup backend")
        form = QtWidgets.QFormLayout(self)
        self.endpoint = QtWidgets.QLineEdit(config.endpoint)
        self.command = QtWidgets.QLineEdit(config.backend_command)
        self.command.setToolTip("{endpoint} is replaced by the address above")
        form.addRow("Address", self.endpoint)
        form.addRow("Start command", self.command)
        # A backend on another machine: the connection file from `touchup keys add` (it overrides
        # the address); imported into a private copy beside the plugin's config.
        self.connection = QtWidgets.QLineEdit(config.connection)
        self.connection.setPlaceholderText("none: this machine")
        pick = QtWidgets.QPushButton("Import…")
        pick.clicked.connect(self._import_connection)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.connection)
        row.addWidget(pick)
        form.addRow("Connection file", row)
        box = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        form.addRow(box)

    def config(self) -> PluginConfig:
        from dataclasses import replace

        return replace(
            self._config,
            endpoint=self.endpoint.text().strip(),
            backend_command=self.command.text().strip(),
            connection=self.connection.text().strip(),
        )

    def _import_connection(self) -> None:
        from touchup.shared.connection import ConnectionError_

        from .config import import_connection

        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Touchup connection file", "", "Touchup connection (*.touchup);;All files (*)"
        )
        if not path:
            return
        try:
            self.connection.setText(import_connection(path))
        except (ConnectionError_, OSError) as exc:
            QtWidgets.QMessageBox.warning(self, "Touchup", str(exc))


def _preset_variants(preset: dict[str, Any] | None) -> int:
    """The variants a preset makes by default (hello's preset table; 1 where it says nothing)."""
    preset = preset or {}
    value = preset.get("variants")
    if value is None:
        value = (preset.get("defaults") or {}).get("variants")
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _select(combo: QtWidgets.QComboBox, data: Any) -> None:
    for i in range(combo.count()):
        if combo.itemData(i) == data:
            combo.setCurrentIndex(i)
            return
