"""The GUI checks (see the package docstring).

Each check is a generator that drives the window the way a user would and ``yield``s an
:class:`Until` whenever it must wait for Krita. The :class:`Runner` then returns to Krita's
main event loop and resumes the check from a timer once the condition holds, so every step
runs from the top-level loop, as a user's click does. Waiting in a nested ``QEventLoop`` instead
is not equivalent: Krita 5.2 delivers the image's node signals to the GUI (the Layers docker's
model, the view's active layer) through "synchronized connections" that KisApplication
postpones while an event handler is still running, so inside one long handler a new document's
layers never reach the Layers docker and ``Document.activeNode()`` stays None.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krita import Extension, Krita, Selection
from touchup_krita.qt import QT_MAJOR, QtCore, QtWidgets

RESULTS: dict[str, Any] = {}
POLL_MS = 20


@dataclass
class Until:
    """Wait (from the main event loop) until ``pred()`` holds; after ``timeout`` seconds the
    check fails with ``what()`` unless ``required`` is False (then it just goes on)."""

    pred: Callable[[], bool]
    timeout: float
    what: Callable[[], object] = lambda: "timed out"
    required: bool = True


def pause(seconds: float) -> Until:
    return Until(lambda: False, seconds, required=False)


Check = Generator[Until, None, Any]


def write_results() -> None:
    Path(os.environ["TOUCHUP_KRITA_RESULTS"]).write_text(json.dumps(RESULTS, indent=1, default=str))


def pump_until(pred: Callable[[], bool], timeout: float) -> bool:
    """Wait for ``pred()`` in a nested event loop. Krita 5.2 holds back layer-tree updates to the
    GUI there (see above): what depends on the Layers docker or the active layer must yield an
    :class:`Until` to the :class:`Runner` instead."""
    end = time.monotonic() + timeout
    loop = QtCore.QEventLoop()
    while time.monotonic() < end:
        if pred():
            return True
        QtCore.QTimer.singleShot(20, loop.quit)
        loop.exec()
    return bool(pred())


def record(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check that does not yield, all at once, and store its result."""
    t0 = time.monotonic()
    try:
        RESULTS[name] = {"ok": True, "detail": fn()}
    except Exception:
        RESULTS[name] = {"ok": False, "detail": traceback.format_exc()}
    RESULTS[name]["seconds"] = round(time.monotonic() - t0, 2)
    write_results()


class Runner:
    """Runs the checks one after another, each step from Krita's main event loop. A check is a
    generator of :class:`Until` (its return value is the detail recorded), or a plain function
    that never waits."""

    def __init__(self, checks: list[tuple[str, Callable[[], Any]]], finish: Callable[[], None]) -> None:
        self.checks = list(checks)
        self.finish = finish
        self.name = ""
        self.gen: Check | None = None
        self.wait: Until | None = None
        self.deadline = 0.0
        self.t0 = 0.0

    def start(self) -> None:
        QtCore.QTimer.singleShot(0, self._next)

    def _next(self) -> None:
        if not self.checks:
            self.finish()
            return
        self.name, factory = self.checks.pop(0)
        self.t0 = time.monotonic()
        try:
            made = factory()
        except Exception:
            self._done(False, traceback.format_exc())
            return
        if not isinstance(made, Generator):  # a check that never waits: its return value
            self._done(True, made)
            return
        self.gen = made
        self._resume(lambda gen: next(gen))

    def _resume(self, step: Callable[[Check], Until]) -> None:
        assert self.gen is not None
        try:
            self.wait = step(self.gen)
        except StopIteration as stop:
            self._done(True, stop.value)
            return
        except Exception:
            self._done(False, traceback.format_exc())
            return
        self.deadline = time.monotonic() + self.wait.timeout
        QtCore.QTimer.singleShot(POLL_MS, self._poll)

    def _poll(self) -> None:
        wait = self.wait
        assert wait is not None
        try:
            held = bool(wait.pred())
        except Exception as exc:
            failure = exc
            self._resume(lambda gen: gen.throw(failure))
            return
        if held or (time.monotonic() >= self.deadline and not wait.required):
            self._resume(lambda gen: gen.send(None))
        elif time.monotonic() >= self.deadline:
            message = f"waited {wait.timeout} s: {wait.what()}"
            self._resume(lambda gen: gen.throw(AssertionError(message)))
        else:
            QtCore.QTimer.singleShot(POLL_MS, self._poll)

    def _done(self, ok: bool, detail: object) -> None:
        RESULTS[self.name] = {"ok": ok, "detail": detail, "seconds": round(time.monotonic() - self.t0, 2)}
        write_results()
        self.gen = self.wait = None
        QtCore.QTimer.singleShot(0, self._next)


def layer_names(doc) -> list[str]:
    return [n.name() for n in doc.rootNode().childNodes() if not n.type().endswith("mask")]


def qtest() -> Any:
    """Qt's input simulation (``QTest``) from the binding Krita embeds."""
    return importlib.import_module(f"PyQt{QT_MAJOR}.QtTest").QTest


def layers_view(window) -> QtWidgets.QTreeView:
    """The tree in Krita's Layers docker, where a user picks the active layer."""
    docks = window.qwindow().findChildren(QtWidgets.QDockWidget)
    box = next((d for d in docks if d.objectName() == "KisLayerBox"), None)
    assert box is not None, "the Layers docker is missing"
    tree = next((t for t in box.findChildren(QtWidgets.QTreeView) if t.objectName() == "listLayers"), None)
    assert tree is not None, "the Layers docker has no layer list"
    return tree


def row_named(tree: QtWidgets.QTreeView, name: str) -> QtCore.QModelIndex | None:
    model = tree.model()
    if model is None:
        return None
    for row in range(model.rowCount()):
        index = model.index(row, 0)
        if index.data() == name:
            return index
    return None


class Driver(Extension):
    def setup(self) -> None:
        Krita.instance().notifier().windowCreated.connect(lambda: QtCore.QTimer.singleShot(1000, self.run))

    def createActions(self, window) -> None:
        pass

    def run(self) -> None:
        k = Krita.instance()
        window = k.activeWindow()
        state: dict[str, Any] = {}

        def finish() -> None:
            doc = state.get("doc")
            if doc is not None:
                doc.setModified(False)
                doc.close()
            RESULTS["_done"] = {"ok": True, "detail": "finished"}
            write_results()
            QtCore.QTimer.singleShot(200, lambda: k.action("file_quit").trigger())

        # Kept on the extension: Qt's timers hold a bound method's instance only weakly.
        self.runner = Runner(
            [
                ("actions_and_menu", lambda: self.actions_and_menu(window)),
                ("docker_present", lambda: self.docker_present(window, state)),
                ("refine_from_docker", lambda: self.refine_from_docker(window, state)),
                ("screenshot", lambda: self.screenshot(state)),
                ("undo_removes_layer", lambda: self.undo(state)),
                ("refine_selection_dialog", lambda: self.dialog_action(state)),
                ("refine_again_active_layer", lambda: self.refine_again(window, state)),
            ],
            finish,
        )
        self.runner.start()

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

    def docker_present(self, window, state) -> Check:
        docks = window.qwindow().findChildren(QtWidgets.QDockWidget)
        docker = next((d for d in docks if d.objectName() == "touchup_docker"), None)
        assert docker is not None, [d.objectName() for d in docks]
        docker.setFloating(True)
        docker.show()
        docker.resize(380, 470)
        docker.raise_()
        content = docker.widget().widget()
        state["docker"], state["content"] = docker, content
        yield Until(lambda: "connected" in content.state_label.text(), 20, content.state_label.text)
        presets = [content.form.preset.itemText(i) for i in range(content.form.preset.count())]
        assert any(p.startswith("classic") for p in presets), presets
        return {"title": docker.windowTitle(), "state": content.state_label.text(), "presets": presets}

    def refine_from_docker(self, window, state) -> Check:
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
        # the chooser polls the layer list
        yield Until(lambda: content.form.reference.count() >= 3, 5, required=False)
        content.form.reference.setCurrentIndex(content.form.reference.findText("Reference"))
        content.form.feather.setValue(12)
        content.refine_button.click()
        yield Until(
            lambda: len(layer_names(doc)) == 3 and not content.ctl.queue.active(),
            60,
            lambda: (layer_names(doc), content.error_label.text()),
        )
        assert layer_names(doc)[-1] == "Touchup: default", layer_names(doc)
        assert content.error_label.isHidden(), content.error_label.text()
        return {"layers": layer_names(doc), "info": content.info_label.text()}

    def screenshot(self, state) -> Check:
        path = os.environ.get("TOUCHUP_KRITA_SCREENSHOT")
        assert path, "no screenshot path"
        docker = state["docker"]
        yield pause(0.5)
        assert docker.grab().save(path), "saving the screenshot failed"
        return path

    def undo(self, state) -> Check:
        doc = state["doc"]
        before = layer_names(doc)
        Krita.instance().action("edit_undo").trigger()
        yield Until(lambda: len(layer_names(doc)) == len(before) - 1, 10, lambda: layer_names(doc))
        assert layer_names(doc) == before[:-1]
        return {"before": before, "after": layer_names(doc)}

    def dialog_action(self, state) -> Check:
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
        Krita.instance().action("touchup_refine_selection").trigger()  # modal: returns once accepted
        assert seen.get("title") == "Refine Selection", seen
        yield Until(
            lambda: len(layer_names(doc)) == 3 and not content.ctl.queue.active(),
            60,
            lambda: (layer_names(doc), content.error_label.text()),
        )
        # classic ignores instructions, so the dialog drops it and names the layer by preset
        return {"dialog": seen["title"], "layers": layer_names(doc)}

    def refine_again(self, window, state) -> Check:
        """The user picks Background in the Layers docker (a click on its row), refines the active
        layer from the docker (the result lands right above it), then Refine Again adds one more."""
        doc = state["doc"]
        content = state["content"]
        tree = layers_view(window)

        def active() -> str | None:
            return doc.activeNode().name() if doc.activeNode() else None

        # Reference first, so the second click visibly moves the active layer to Background.
        for name in ("Reference", "Background"):
            yield Until(
                lambda name=name: row_named(tree, name) is not None,
                10,
                lambda name=name: (
                    f"the Layers docker does not list {name}; the document has {layer_names(doc)}"
                ),
            )
            index = row_named(tree, name)
            tree.scrollTo(index)
            qtest().mouseClick(
                tree.viewport(),
                QtCore.Qt.MouseButton.LeftButton,
                QtCore.Qt.KeyboardModifier.NoModifier,
                tree.visualRect(index).center(),
            )
            yield Until(
                lambda name=name: active() == name,
                10,
                lambda name=name: f"after clicking {name} the active layer is {active()}",
            )
        content.form.source.setCurrentIndex(content.form.source.findData("layer"))
        content.refine_button.click()
        yield Until(
            lambda: len(layer_names(doc)) == 4 and not content.ctl.queue.active(),
            60,
            lambda: (layer_names(doc), content.error_label.text()),
        )
        assert layer_names(doc)[1].startswith("Touchup"), (
            f"active-layer result not right above Background: {layer_names(doc)}"
        )
        Krita.instance().action("touchup_refine_again").trigger()
        yield Until(
            lambda: len(layer_names(doc)) == 5 and not content.ctl.queue.active(),
            60,
            lambda: layer_names(doc),
        )
        Krita.instance().action("touchup_cancel").trigger()  # nothing running: harmless
        return {"clicked": ["Reference", "Background"], "layers": layer_names(doc)}
