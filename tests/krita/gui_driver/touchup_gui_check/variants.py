"""The retoucher's loop in Krita's real window: Refine x4 with the ``seeded`` test engine, the
live preview while it runs, the four thumbnails, previewing one on the canvas, Compare, Apply
and one Undo, and Discard. Every step is checked on what a user would notice: the layers and
their pixels, the undo history (Krita's Undo/Redo actions), and the canvas widget's pixels.
Findings go to ``TOUCHUP_KRITA_RESULTS``; the window is photographed for the README."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from krita import Extension, Krita, Selection
from touchup_krita.qt import QtCore, QtWidgets

from .driver import RESULTS, pump_until, record

VARIANTS = 4


def write_results() -> None:
    Path(os.environ["TOUCHUP_KRITA_RESULTS"]).write_text(json.dumps(RESULTS, indent=1, default=str))


def layer_state(doc: Any) -> list[tuple[str, str]]:
    """(name, sha1 of its pixels) of every layer, bottom first: what must not change."""
    w, h = doc.width(), doc.height()
    out = []
    for node in doc.rootNode().childNodes():
        if node.type().endswith("mask"):
            continue
        out.append((node.name(), hashlib.sha1(bytes(node.pixelData(0, 0, w, h))).hexdigest()))
    return out


def undo_state() -> tuple[Any, ...]:
    """What Krita's Undo and Redo actions offer: the visible face of the undo history."""
    k = Krita.instance()
    return tuple((a.isEnabled(), a.text()) for a in (k.action("edit_undo"), k.action("edit_redo")))


def canvas_widget(window: Any) -> Any:
    from touchup_krita.preview import CANVAS_CLASSES

    for w in window.qwindow().findChildren(QtWidgets.QWidget):
        if w.metaObject().className() in CANVAS_CLASSES and w.isVisible():
            return w
    raise AssertionError("no canvas widget")


class VariantsDriver(Extension):
    def setup(self) -> None:
        Krita.instance().notifier().windowCreated.connect(lambda: QtCore.QTimer.singleShot(1000, self.run))

    def createActions(self, window: Any) -> None:
        pass

    def run(self) -> None:
        k = Krita.instance()
        window = k.activeWindow()
        s: dict[str, Any] = {"window": window}
        try:
            record("setup", lambda: self.setup_document(s))
            if RESULTS["setup"]["ok"]:
                record("refine_x4_live_preview_four_thumbnails", lambda: self.refine(s))
            if RESULTS.get("refine_x4_live_preview_four_thumbnails", {}).get("ok"):
                record("preview_changes_nothing", lambda: self.preview(s))
                record("compare_flips", lambda: self.compare(s))
                record("screenshot", lambda: self.screenshot(s))
                record("apply_one_layer_one_undo", lambda: self.apply(s))
                record("discard_leaves_document", lambda: self.discard(s))
                record("float_document_variants", lambda: self.float_document(s))
        finally:
            for key in ("float_doc", "doc"):
                doc = s.get(key)
                if doc is not None:
                    doc.setModified(False)
                    doc.close()
            RESULTS["_done"] = {"ok": True, "detail": "finished"}
            write_results()
            QtCore.QTimer.singleShot(200, lambda: k.action("file_quit").trigger())

    # -- steps -------------------------------------------------------------------------------
    def setup_document(self, s: dict) -> dict:
        window = s["window"]
        window.qwindow().resize(1500, 940)
        docks = window.qwindow().findChildren(QtWidgets.QDockWidget)
        docker = next(d for d in docks if d.objectName() == "touchup_docker")
        docker.show()
        docker.raise_()
        content = docker.widget().widget()
        s["content"], s["ctl"] = content, content.ctl
        assert pump_until(lambda: "connected" in content.state_label.text(), 30), content.state_label.text()
        form = content.form
        index = next(
            (i for i in range(form.preset.count()) if form.preset.itemText(i).startswith("seeded")), -1
        )
        assert index >= 0, [form.preset.itemText(i) for i in range(form.preset.count())]
        form.preset.setCurrentIndex(index)
        form.variants.setValue(VARIANTS)
        form.instruction.setText("crisp lettering")

        k = Krita.instance()
        doc = k.createDocument(480, 360, "touchup-variants", "RGBA", "U8", "", 72.0)
        s["doc"] = doc
        window.addView(doc)
        bg = doc.topLevelNodes()[0]
        row = bytearray()
        data = bytearray()
        for y in range(360):
            row = bytearray()
            for x in range(480):
                row += bytes(
                    (
                        int(90 + 100 * x / 480),
                        int(120 + 80 * y / 360),
                        200 if (x // 24 + y // 24) % 2 else 150,
                        255,
                    )
                )
            data += row
        bg.setPixelData(QtCore.QByteArray(bytes(data)), 0, 0, 480, 360)
        doc.refreshProjection()
        sel = Selection()
        sel.select(170, 120, 140, 100, 255)
        sel.feather(4)
        doc.setSelection(sel)
        doc.waitForDone()
        pump_until(lambda: False, 1.0)
        s["layers"], s["undo"] = layer_state(doc), undo_state()
        return {"preset": form.preset.currentText(), "layers": [n for n, _ in s["layers"]], "undo": s["undo"]}

    def refine(self, s: dict) -> dict:
        content, ctl, doc = s["content"], s["ctl"], s["doc"]
        strip = content.strip
        seen = {"live_icon": False, "progress": 0, "variant_steps": set()}

        def watch() -> bool:
            active = ctl.queue.active()
            if active:
                job = active[0]
                if job.preview is not None:
                    seen["progress"] += 1
                    seen["variant_steps"].add((job.variant, job.step))
                first = strip.list.item(0) if strip.list.count() else None
                running_tile = first is not None and first.data(QtCore.Qt.ItemDataRole.UserRole) is None
                if running_tile and not first.icon().isNull():
                    seen["live_icon"] = True
            return not active and len(ctl.results(doc)) >= VARIANTS

        t0 = time.monotonic()
        content.refine_button.click()
        assert pump_until(watch, 120), (
            ctl.results(doc),
            content.error_label.text(),
            content.info_label.text(),
        )
        took = time.monotonic() - t0
        entries = ctl.results(doc)
        assert len(entries) == VARIANTS, len(entries)
        assert strip.list.count() == VARIANTS, strip.list.count()
        seeds = sorted(e.seed for e in entries)
        assert len(set(seeds)) == VARIANTS and seeds == list(range(seeds[0], seeds[0] + VARIANTS)), seeds
        thumbs = {bytes(e.thumbnail.constBits().asstring(e.thumbnail.sizeInBytes())) for e in entries}
        assert len(thumbs) == VARIANTS, "the four thumbnails should differ (one seed each)"
        assert seen["live_icon"], (
            f"the strip never showed a live preview ({seen['progress']} previews arrived)"
        )
        tips = [strip.list.item(i).toolTip() for i in range(strip.list.count())]
        assert all("Seed" in t and "Preset seeded" in t and "crisp lettering" in t for t in tips), tips
        assert layer_state(doc) == s["layers"], "variants must not add or change layers before Apply"
        assert undo_state() == s["undo"], (undo_state(), s["undo"])
        s["entries"] = entries
        return {
            "seconds": round(took, 1),
            "seeds": seeds,
            "live_previews": seen["progress"],
            "tips": tips[:1],
        }

    def _canvas_pixel(self, s: dict, x: int, y: int) -> tuple[int, int, int]:
        from touchup_krita.canvas_map import canvas_mapping

        window, doc = s["window"], s["doc"]
        canvas = canvas_widget(window)
        view = window.activeView()
        scroll = canvas.parentWidget().parentWidget()
        mapping = canvas_mapping(
            view.canvas().zoomLevel(),
            float(doc.xRes()),
            (scroll.horizontalScrollBar().value(), scroll.verticalScrollBar().value()),
        )
        wx, wy = mapping.to_widget(x + 0.5, y + 0.5)
        image = canvas.grab().toImage()
        c = image.pixelColor(int(wx), int(wy))
        return c.red(), c.green(), c.blue()

    def preview(self, s: dict) -> dict:
        content, ctl, doc = s["content"], s["ctl"], s["doc"]
        strip = content.strip
        cx, cy = 240, 170  # the selection's centre: fully inside the result
        before = self._canvas_pixel(s, cx, cy)
        strip.list.item(1).setSelected(True)
        pump_until(lambda: False, 0.5)
        entry = ctl.history.find(strip.list.item(1).data(QtCore.Qt.ItemDataRole.UserRole))
        assert ctl.chosen == entry.key and ctl.preview_state.value == "result", (
            ctl.chosen,
            ctl.preview_state,
        )
        after = self._canvas_pixel(s, cx, cy)
        ox, oy = entry.origin
        expected = entry.image.pixelColor(cx - ox, cy - oy)
        want = (expected.red(), expected.green(), expected.blue())
        assert after != before, f"the canvas did not change at the selection: {before}"
        assert max(abs(a - b) for a, b in zip(after, want, strict=True)) <= 6, (after, want)
        assert layer_state(doc) == s["layers"], "previewing changed a layer"
        assert undo_state() == s["undo"], (undo_state(), s["undo"])
        s["before_px"], s["chosen"] = before, entry
        return {"canvas_before": before, "canvas_preview": after, "result_pixel": want}

    def compare(self, s: dict) -> dict:
        ctl, doc = s["ctl"], s["doc"]
        Krita.instance().action("touchup_compare").trigger()
        pump_until(lambda: False, 0.3)
        original = self._canvas_pixel(s, 240, 170)
        state1 = ctl.preview_state.value
        Krita.instance().action("touchup_compare").trigger()
        pump_until(lambda: False, 0.3)
        again = self._canvas_pixel(s, 240, 170)
        assert state1 == "original" and original == s["before_px"], (state1, original, s["before_px"])
        assert ctl.preview_state.value == "result" and again != original, (ctl.preview_state, again)
        assert layer_state(doc) == s["layers"] and undo_state() == s["undo"]
        shortcut = Krita.instance().action("touchup_compare").shortcut().toString()
        return {"original": original, "result": again, "shortcut": shortcut}

    def screenshot(self, s: dict) -> str:
        path = os.environ.get("TOUCHUP_KRITA_SCREENSHOT")
        assert path, "no screenshot path"
        qwindow = s["window"].qwindow()
        # Room for the Touchup docker: only it and the Layers docker (no preview layer there).
        for dock in qwindow.findChildren(QtWidgets.QDockWidget):
            if dock.isVisible() and dock.objectName() not in ("touchup_docker", "KisLayerBox"):
                dock.hide()
        docker = next(
            d for d in qwindow.findChildren(QtWidgets.QDockWidget) if d.objectName() == "touchup_docker"
        )
        qwindow.resizeDocks([docker], [470], QtCore.Qt.Orientation.Horizontal)
        content = s["content"]
        scroll = content.parentWidget().parentWidget()
        if isinstance(scroll, QtWidgets.QScrollArea):
            scroll.ensureWidgetVisible(content.strip)
        pump_until(lambda: False, 0.8)
        assert qwindow.grab().save(path), "saving the screenshot failed"
        return path

    def apply(self, s: dict) -> dict:
        content, ctl, doc = s["content"], s["ctl"], s["doc"]
        entry = s["chosen"]
        content.strip.apply_button.click()
        assert pump_until(lambda: len(layer_state(doc)) == len(s["layers"]) + 1, 10), layer_state(doc)
        names = [n for n, _ in layer_state(doc)]
        assert names == [n for n, _ in s["layers"]] + [entry.layer_name], names
        node = doc.nodeByName(entry.layer_name)
        ox, oy = entry.origin
        d = entry.frame.desc
        assert bytes(node.pixelData(ox, oy, d.width, d.height)) == bytes(entry.frame.data), "layer != result"
        assert not ctl._canvas().visible, "the preview stayed on the canvas after Apply"
        assert pump_until(lambda: undo_state() != s["undo"], 5), ("Apply is no undo step", undo_state())
        applied_undo = undo_state()
        Krita.instance().action("edit_undo").trigger()
        assert pump_until(lambda: layer_state(doc) == s["layers"], 10), layer_state(doc)
        assert not any("preview" in n.lower() for n, _ in layer_state(doc))
        return {
            "layer": entry.layer_name,
            "undo": applied_undo,
            "after_undo": [n for n, _ in layer_state(doc)],
        }

    def discard(self, s: dict) -> dict:
        content, ctl, doc = s["content"], s["ctl"], s["doc"]
        strip = content.strip
        strip.list.item(2).setSelected(True)
        pump_until(lambda: False, 0.3)
        assert ctl.chosen is not None
        other = ctl.history.find(ctl.chosen)
        want = other.image.pixelColor(240 - other.origin[0], 170 - other.origin[1])
        shown = self._canvas_pixel(s, 240, 170)
        assert shown == (want.red(), want.green(), want.blue()), (shown, want.name())
        before_entries = len(ctl.results(doc))
        content.strip.discard_button.click()
        pump_until(lambda: False, 0.3)
        assert layer_state(doc) == s["layers"], "Discard changed the document"
        assert self._canvas_pixel(s, 240, 170) == s["before_px"], "the preview stayed on the canvas"
        assert ctl.results(doc) == [] and strip.list.count() == 0, (before_entries, strip.list.count())
        return {"dropped": before_entries, "undo": undo_state()}

    def float_document(self, s: dict) -> dict:
        """A linear 32-bit float document through the scripting entry point: the strip shows
        both variants (from images sampled in Python) and Apply writes the float result exactly."""
        import struct

        from touchup_krita import refine

        k = Krita.instance()
        doc = k.createDocument(160, 120, "touchup-float", "RGBA", "F32", "", 72.0)
        s["float_doc"] = doc
        s["window"].addView(doc)
        bg = doc.topLevelNodes()[0]
        px = b"".join(
            struct.pack("<4f", 0.1 + 0.8 * x / 160, 0.3, 0.6, 1.0) for y in range(120) for x in range(160)
        )
        bg.setPixelData(QtCore.QByteArray(px), 0, 0, 160, 120)
        sel = Selection()
        sel.select(40, 30, 60, 50, 255)
        doc.setSelection(sel)
        doc.waitForDone()
        before = layer_state(doc)
        entries = refine(doc, instruction="float", engine="seeded", preset="default", variants=2, timeout=60)
        assert sorted(e.variant for e in entries) == [0, 1], entries
        assert all(e.thumbnail is not None and not e.thumbnail.isNull() for e in entries)
        assert layer_state(doc) == before, "variants must wait for Apply"
        ctl = s["ctl"]
        node = ctl.apply_chosen(entries[0].key)
        ox, oy = entries[0].origin
        d = entries[0].frame.desc
        assert d.dtype == "f32", d
        assert bytes(node.pixelData(ox, oy, d.width, d.height)) == bytes(entries[0].frame.data)
        return {
            "layers": [n for n, _ in layer_state(doc)],
            "preview_image": [entries[0].image.width(), d.width],
        }
