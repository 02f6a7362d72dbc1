"""The GUI checks (see the package docstring)."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from krita import Extension, Krita, Selection
from touchup_krita.qt import QtCore, QtWidgets

RESULTS: dict[str, Any] = {}


def pump_until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    loop = QtCore.QEventLoop()
    while time.monotonic() < end:
        if pred():
            return True
        QtCore.QTimer.singleShot(20, loop.quit)
        loop.exec()
    return bool(pred())


def record(name: str, fn) -> Any:
    t0 = time.monotonic()
    try:
        RESULTS[name] = {"ok": True, "detail": fn()}
    except Exception:
        RESULTS[name] = {"ok": False, "detail": traceback.format_exc()}
    RESULTS[name]["seconds"] = round(time.monotonic() - t0, 2)
    Path(os.environ["TOUCHUP_KRITA_RESULTS"]).write_text(json.dumps(RESULTS, indent=1, default=str))


def layer_names(doc) -> list[str]:
    return [n.name() for n in doc.rootNode().childNodes() if not n.type().endswith("mask")]


class Driver(Extension):
    def setup(self) -> None:
        Krita.instance().notifier().windowCreated.connect(lambda: QtCore.QTimer.singleShot(1000, self.run))

    def createActions(self, window) -> None:
        pass

    def run(self) -> None:
        k = Krita.instance()
        window = k.activeWindow()
        state: dict[str, Any] = {}
        try:
            record("actions_and_menu", lambda: self.actions_and_menu(window))
            record("docker_present", lambda: self.docker_present(window, state))
            record("refine_from_docker", lambda: self.refine_from_docker(window, state))
            record("screenshot", lambda: self.screenshot(state))
            record("undo_removes_layer", lambda: self.undo(state))
            record("refine_selection_dialog", lambda: self.dialog_action(state))
            record("refine_again_active_layer", lambda: self.refine_again(state))
        finally:
            doc = state.get("doc")
            if doc is not None:
                doc.setModified(False)
                doc.close()
            RESULTS["_done"] = {"ok": True, "detail": "finished"}
            Path(os.environ["TOUCHUP_KRITA_RESULTS"]).write_text(json.dumps(RESULTS, indent=1, default=str))
            QtCore.QTimer.singleShot(200, lambda: k.action("file_quit").trigger())

    # -- checks ------------------------------------------------------------------------------
    def actions_and_menu(self, window) -> dict:
        k = Krita.instance()
        found = {}
        for action_id in (
            "touchup_refine_selection",
            "touchup_refine_again",
            "touchup_cancel",
            "touchup_compare",
        ):
            action = k.action(action_id)
            assert action is not None, f"action {action_id} is not registered"
            found[action_id] = {"text": action.text(), "shortcut": action.shortcut().toString()}
        assert found["touchup_refine_selection"]["shortcut"] == "Ctrl+Alt+R", found
        menubar = window.qwindow().menuBar()
        tools = next(a for a in menubar.actions() if a.objectName() == "tools")
        touchup = next(a for a in tools.menu().actions() if a.text().replace("&", "") == "Touchup")
        entries = [a.text() for a in touchup.menu().actions()]
        assert entries == ["Refine Selection…", "Refine Again", "Cancel Refine", "Compare with Original"], (
            entries
        )
        assert found["touchup_compare"]["shortcut"] == "Ctrl+Alt+P", found
        return {"actions": found, "menu": f"Tools > Touchup > {entries}"}

    def docker_present(self, window, state) -> dict:
        docks = window.qwindow().findChildren(QtWidgets.QDockWidget)
        docker = next((d for d in docks if d.objectName() == "touchup_docker"), None)
        assert docker is not None, [d.objectName() for d in docks]
        docker.setFloating(True)
        docker.show()
        docker.resize(380, 470)
        docker.raise_()
        content = docker.widget().widget()
        state["docker"], state["content"] = docker, content
        assert pump_until(lambda: "connected" in content.state_label.text(), 20), content.state_label.text()
        presets = [content.form.preset.itemText(i) for i in range(content.form.preset.count())]
        assert any(p.startswith("classic") for p in presets), presets
        return {"title": docker.windowTitle(), "state": content.state_label.text(), "presets": presets}

    def refine_from_docker(self, window, state) -> dict:
        k = Krita.instance()
        from touchup_krita.qt import QtCore as C

        doc = k.createDocument(480, 360, "touchup-gui", "RGBA", "U8", "", 72.0)
        state["doc"] = doc
        window.addView(doc)
        bg = doc.topLevelNodes()[0]
        data = bytearray()
        for y in range(360):
            for x in range(480):
                data += bytes(
                    (
                        int(120 + 80 * (y / 360)),
                        int(90 + 100 * (x / 480)),
                        200 if (x // 24 + y // 24) % 2 else 170,
                        255,
                    )
                )
        bg.setPixelData(C.QByteArray(bytes(data)), 0, 0, 480, 360)
        ref = doc.createNode("Reference", "paintlayer")
        ref.setPixelData(C.QByteArray(bytes(data[: 60 * 4 * 60])), 400, 280, 60, 60)
        doc.rootNode().addChildNode(ref, None)
        doc.refreshProjection()
        sel = Selection()
        sel.select(160, 120, 120, 90, 255)
        sel.feather(6)
        doc.setSelection(sel)
        doc.waitForDone()
        content = state["content"]
        pump_until(lambda: content.form.reference.count() >= 3, 5)  # the chooser polls the layer list
        content.form.reference.setCurrentIndex(content.form.reference.findText("Reference"))
        content.form.feather.setValue(12)
        content.refine_button.click()
        assert pump_until(lambda: len(layer_names(doc)) == 3 and not content.ctl.queue.active(), 60), (
            layer_names(doc),
            content.error_label.text(),
        )
        assert layer_names(doc)[-1] == "Touchup: default", layer_names(doc)
        assert content.error_label.isHidden(), content.error_label.text()
        return {"layers": layer_names(doc), "info": content.info_label.text()}

    def screenshot(self, state) -> str:
        path = os.environ.get("TOUCHUP_KRITA_SCREENSHOT")
        assert path, "no screenshot path"
        docker = state["docker"]
        pump_until(lambda: False, 0.5)
        assert docker.grab().save(path), "saving the screenshot failed"
        return path

    def undo(self, state) -> dict:
        doc = state["doc"]
        before = layer_names(doc)
        Krita.instance().action("edit_undo").trigger()
        assert pump_until(lambda: len(layer_names(doc)) == len(before) - 1, 10), layer_names(doc)
        assert layer_names(doc) == before[:-1]
        return {"before": before, "after": layer_names(doc)}

    def dialog_action(self, state) -> dict:
        doc = state["doc"]
        content = state["content"]
        seen = {}

        def accept(tries: int = 0) -> None:
            dialogs = [
                w
                for w in QtWidgets.QApplication.topLevelWidgets()
                if isinstance(w, QtWidgets.QDialog)
                and w.isVisible()
                and w.windowTitle() == "Refine Selection"
            ]
            for w in QtWidgets.QApplication.topLevelWidgets():
                if w.isVisible() and type(w).__name__ == "ExceptHookDialog":  # Krita's script-error box
                    seen["script_error"] = [
                        c.toPlainText()[-1500:] for c in w.findChildren(QtWidgets.QTextEdit)
                    ]
                    w.close()
                    return
            if not dialogs:
                if tries < 50:
                    QtCore.QTimer.singleShot(200, lambda: accept(tries + 1))
                return
            seen["title"] = dialogs[0].windowTitle()
            dialogs[0].form.instruction.setText("from the dialog")
            dialogs[0].accept()

        QtCore.QTimer.singleShot(300, accept)
        Krita.instance().action("touchup_refine_selection").trigger()
        assert seen.get("title") == "Refine Selection", seen
        assert pump_until(lambda: len(layer_names(doc)) == 3 and not content.ctl.queue.active(), 60), (
            layer_names(doc),
            content.error_label.text(),
        )
        # classic ignores instructions, so the dialog drops it and names the layer by preset
        return {"dialog": seen["title"], "layers": layer_names(doc)}

    def refine_again(self, state) -> dict:
        doc = state["doc"]
        content = state["content"]
        doc.setActiveNode(doc.nodeByName("Background"))

        # The view applies it asynchronously (Krita 5.2 under load took longer than a fixed pause).
        def active() -> str | None:
            return doc.activeNode().name() if doc.activeNode() else None

        assert pump_until(lambda: active() == "Background", 10), f"the active layer stays {active()}"
        content.form.source.setCurrentIndex(content.form.source.findData("layer"))
        content.refine_button.click()
        assert pump_until(lambda: len(layer_names(doc)) == 4 and not content.ctl.queue.active(), 60), (
            layer_names(doc),
            content.error_label.text(),
        )
        assert layer_names(doc)[1].startswith("Touchup"), (
            f"active-layer result not right above Background: {layer_names(doc)}"
        )
        Krita.instance().action("touchup_refine_again").trigger()
        assert pump_until(lambda: len(layer_names(doc)) == 5 and not content.ctl.queue.active(), 60), (
            layer_names(doc)
        )
        Krita.instance().action("touchup_cancel").trigger()  # nothing running: harmless
        return {"layers": layer_names(doc)}
