"""Checks that run inside real Krita (``kritarunner -s krita_checks -f run``).

Each check builds a document the way a user would, refines it through the plugin's headless
entry point (the same path as the menu action) against a real backend, and asserts what a
user would see: the new layer's name, place, offset and pixels, the untouched composite
outside the selection, and the messages shown in the docker. Results go to the JSON file named
by ``TOUCHUP_KRITA_RESULTS``, one entry per check, because kritarunner always exits 0.
Only the standard library is available here (Krita's Python has no numpy).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import struct
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

CFG: dict[str, Any] = {}
RESULTS: dict[str, Any] = {}
CHECKS: list[tuple[str, Any]] = []

# Krita depth -> (struct code per sample, sample bytes, channel order, max value)
DEPTH = {
    "U8": ("B", 1, "BGRA", 255),
    "U16": ("H", 2, "BGRA", 65535),
    "F16": ("e", 2, "RGBA", 1.0),
    "F32": ("f", 4, "RGBA", 1.0),
}


def check(fn):
    CHECKS.append((fn.__name__, fn))
    return fn


# -- helpers ---------------------------------------------------------------------------------
def krita():
    from krita import Krita

    return Krita.instance()


def qt():
    from touchup_krita.qt import QtCore

    return QtCore


def pump_until(pred, timeout: float) -> bool:
    """Run Qt's event loop (as Krita's UI would) until ``pred()`` or the timeout."""
    QtCore = qt()  # noqa: N806 - the module, under its own name
    end = time.monotonic() + timeout
    loop = QtCore.QEventLoop()
    while time.monotonic() < end:
        if pred():
            return True
        QtCore.QTimer.singleShot(20, loop.quit)
        loop.exec()
    return bool(pred())


def pattern(w: int, h: int, depth: str, seed: int = 1) -> bytes:
    """A photo-like test image: smooth gradients, a disc and fine stripes, opaque."""
    code, _, order, top = DEPTH[depth]
    pack = struct.Struct("<4" + code).pack
    out = bytearray()
    for y in range(h):
        for x in range(w):
            r = 0.2 + 0.6 * x / w
            g = 0.3 + 0.4 * y / h
            b = 0.5 + 0.3 * math.sin((x + seed * 7) / 9.0) * math.cos(y / 13.0)
            if (x - w * 0.45) ** 2 + (y - h * 0.5) ** 2 < (min(w, h) * 0.18) ** 2:
                r, g, b = 0.85, 0.2 + 0.1 * ((x // 3) % 2), 0.15
            px = (b, g, r) if order == "BGRA" else (r, g, b)
            vals = [*px, 1.0]
            if isinstance(top, int):
                vals = [round(v * top) for v in vals]
            out += pack(*vals)
    return bytes(out)


def make_doc(w: int = 200, h: int = 160, depth: str = "U8", name: str = "touchup-test"):
    from touchup_krita.qt import QtCore

    doc = krita().createDocument(w, h, name, "RGBA", depth, "", 72.0)
    bg = doc.topLevelNodes()[0]
    bg.setPixelData(QtCore.QByteArray(pattern(w, h, depth)), 0, 0, w, h)
    doc.refreshProjection()
    doc.waitForDone()
    return doc


def select_rect(doc, x: int, y: int, w: int, h: int, feather: int = 0) -> None:
    from krita import Selection

    sel = Selection()
    sel.select(x, y, w, h, 255)
    if feather:
        sel.feather(feather)
    doc.setSelection(sel)
    doc.waitForDone()


def layers(doc) -> list:
    return [n for n in doc.rootNode().childNodes() if not n.type().endswith("mask")]


def names(doc) -> list[str]:
    return [n.name() for n in layers(doc)]


def samples(data: bytes, depth: str) -> list:
    code, _size, _, _ = DEPTH[depth]
    return (
        list(memoryview(data).cast(code)) if code != "e" else list(struct.unpack(f"<{len(data) // 2}e", data))
    )


def pixel_bytes(depth: str) -> int:
    return 4 * DEPTH[depth][1]


def assert_outside_unchanged(doc, before: bytes, depth: str) -> int:
    """Every pixel whose selection value is 0 is bit-identical to ``before``; returns how many."""
    doc.refreshProjection()
    doc.waitForDone()
    w, h = doc.width(), doc.height()
    after = bytes(doc.pixelData(0, 0, w, h))
    sel = bytes(doc.selection().pixelData(0, 0, w, h))
    bpp = pixel_bytes(depth)
    outside = 0
    for i, s in enumerate(sel):
        if s == 0:
            outside += 1
            a, b = before[i * bpp : (i + 1) * bpp], after[i * bpp : (i + 1) * bpp]
            assert a == b, f"pixel {(i % w, i // w)} outside the selection changed: {a.hex()} -> {b.hex()}"
    assert outside > 0
    return outside


def assert_layer_alpha_follows_selection(doc, layer, depth: str) -> dict[str, int]:
    """The result's alpha is 0 wherever the selection is 0 and non-zero where it is fully selected."""
    w, h = doc.width(), doc.height()
    px = samples(bytes(layer.pixelData(0, 0, w, h)), depth)
    sel = bytes(doc.selection().pixelData(0, 0, w, h))
    full = partial = 0
    for i, s in enumerate(sel):
        alpha = px[i * 4 + 3]
        if s == 0:
            assert alpha == 0, f"result alpha {alpha} at {(i % w, i // w)} outside the selection"
        elif s == 255:
            full += 1
            assert alpha > 0, f"result alpha 0 at {(i % w, i // w)} inside the selection"
        elif alpha > 0:
            partial += 1
    return {"fully_selected": full, "soft_edge_pixels_with_alpha": partial}


def direct_result(doc, source_node=None, references=()) -> tuple[Any, Any]:
    """The backend's answer to the same request, sent without the plugin: (frame, origin).

    Krita's default profile for 16-bit and float RGB is linear (``...-g10.icc``), so the request
    says how the pixels encode light, as the plugin's does."""
    from touchup_krita.document import profile_transfer

    from touchup.shared.client import Client, refine_request
    from touchup.shared.frames import Frame, FrameDesc
    from touchup.shared.geometry import Rect, context_tile

    sel = doc.selection()
    tile = context_tile(Rect(sel.x(), sel.y(), sel.width(), sel.height()), doc.width(), doc.height(), 64)
    depth = (source_node or doc).colorDepth()
    _code, _size, order, _ = DEPTH[depth]
    reader = source_node.projectionPixelData if source_node is not None else doc.pixelData
    source = Frame(
        FrameDesc(
            tile.width, tile.height, 4, {"U8": "u8", "U16": "u16", "F16": "f16", "F32": "f32"}[depth], order
        ),
        bytes(reader(tile.x, tile.y, tile.width, tile.height)),
    )
    mask = Frame(
        FrameDesc(tile.width, tile.height, 1, "u8"),
        bytes(sel.pixelData(tile.x, tile.y, tile.width, tile.height)),
    )
    header, frames = refine_request(
        source,
        mask,
        (tile.x, tile.y),
        (doc.width(), doc.height()),
        list(references),
        transfer=profile_transfer((source_node or doc).colorProfile()),
    )
    with Client(CFG["endpoint"]) as client:
        msg = client.refine(header, frames, timeout=120)
    return msg.frame("result"), msg.header["origin"]


def assert_layer_equals(layer, frame, origin) -> None:
    d = frame.desc
    got = bytes(layer.pixelData(origin[0], origin[1], d.width, d.height))
    want = bytes(frame.data)
    assert len(got) == len(want)
    if got != want:
        bpp = len(want) // (d.width * d.height)
        bad = [i for i in range(0, len(got), bpp) if got[i : i + bpp] != want[i : i + bpp]]
        i = bad[0]
        raise AssertionError(
            f"{len(bad)} of {d.width * d.height} layer pixels differ from the backend's result, first at "
            f"{((i // bpp) % d.width, (i // bpp) // d.width)}: {got[i : i + bpp].hex()} != {want[i : i + bpp].hex()}"
        )


def refusal(call, arg, unexpected: str) -> str:
    """The message of the :class:`RefineError` that ``call(arg)`` must raise (what the docker shows)."""
    from touchup_krita import RefineError

    try:
        call(arg)
    except RefineError as exc:
        return str(exc)
    raise AssertionError(unexpected)


def controller():
    from touchup_krita.controller import controller as get

    return get()


def use_endpoint(endpoint: str, wait_connected: bool = True) -> None:
    from touchup_krita.connection import ConnectionState

    ctl = controller()
    if ctl.config.endpoint != endpoint:
        ctl.set_config(replace(ctl.config, endpoint=endpoint))
    if wait_connected:
        assert pump_until(lambda: ctl.backend.state == ConnectionState.CONNECTED, 20), (
            f"backend at {endpoint} not connected"
        )


def close(doc) -> None:
    doc.setModified(False)
    doc.close()


# -- checks ----------------------------------------------------------------------------------
@check
def rect_u8_visible():
    """Rectangular selection, 8-bit, visible image: name, top position, offset, pixels, composite."""
    from touchup_krita import refine

    use_endpoint(CFG["endpoint"])
    doc = make_doc(220, 180, "U8")
    top = doc.createNode("Top", "paintlayer")  # an empty layer: the result still goes above it
    doc.rootNode().addChildNode(top, None)
    select_rect(doc, 70, 60, 50, 40)
    before = bytes(doc.pixelData(0, 0, 220, 180))
    layer_pixels_before = [bytes(n.pixelData(0, 0, 220, 180)) for n in layers(doc)]
    frame, origin = direct_result(doc)
    t0 = time.monotonic()
    layer = refine(doc, instruction="crisp  edges")
    took = time.monotonic() - t0
    assert layer.name() == "Touchup: crisp edges", layer.name()
    assert names(doc) == ["Background", "Top", "Touchup: crisp edges"], names(doc)
    assert [bytes(n.pixelData(0, 0, 220, 180)) for n in layers(doc)[:2]] == layer_pixels_before, (
        "an existing layer changed"
    )
    assert_layer_equals(layer, frame, origin)
    b = layer.bounds()
    assert b.x() >= 70 - 64 and b.x() + b.width() <= 120 + 64, (b.x(), b.width())
    stats = assert_layer_alpha_follows_selection(doc, layer, "U8")
    outside = assert_outside_unchanged(doc, before, "U8")
    close(doc)
    return {"seconds": round(took, 2), "origin": origin, "outside_identical": outside, **stats}


@check
def feathered_u16_visible():
    """Feathered selection on a 16-bit document: soft alpha edge, composite outside identical."""
    from touchup_krita import refine

    use_endpoint(CFG["endpoint"])
    doc = make_doc(200, 160, "U16")
    select_rect(doc, 60, 50, 60, 50, feather=8)
    before = bytes(doc.pixelData(0, 0, 200, 160))
    frame, origin = direct_result(doc)
    layer = refine(doc)
    assert layer.colorDepth() == "U16"
    assert layer.name() == "Touchup: default", layer.name()
    assert frame.desc.dtype == "u16" and frame.desc.order == "BGRA", frame.desc
    assert_layer_equals(layer, frame, origin)
    stats = assert_layer_alpha_follows_selection(doc, layer, "U16")
    assert stats["soft_edge_pixels_with_alpha"] > 0, "no soft edge in the result of a feathered selection"
    outside = assert_outside_unchanged(doc, before, "U16")
    close(doc)
    return {"outside_identical": outside, **stats}


@check
def float_depths():
    """F16 and F32 documents travel as RGBA floats and come back into a float layer unchanged."""
    from touchup_krita import refine

    use_endpoint(CFG["endpoint"])
    out = {}
    for depth in ("F32", "F16"):
        doc = make_doc(120, 100, depth)
        select_rect(doc, 40, 30, 30, 30)
        before = bytes(doc.pixelData(0, 0, 120, 100))
        frame, origin = direct_result(doc)
        layer = refine(doc)
        assert frame.desc.order == "RGBA" and frame.desc.dtype == depth.lower(), frame.desc
        assert_layer_equals(layer, frame, origin)
        out[depth] = assert_outside_unchanged(doc, before, depth)
        close(doc)
    return out


@check
def with_reference_layer():
    """A (hidden) reference layer's content is sent; the result equals the direct request's."""
    from touchup_krita import refine
    from touchup_krita.qt import QtCore

    from touchup.shared.frames import Frame, FrameDesc

    use_endpoint(CFG["endpoint"])
    doc = make_doc(220, 180, "U8")
    ref = doc.createNode("Reference", "paintlayer")
    # the clean look of the region, 40x30, pasted away from the selection
    ref.setPixelData(QtCore.QByteArray(pattern(40, 30, "U8", seed=3)), 150, 120, 40, 30)
    doc.rootNode().addChildNode(ref, None)
    ref.setVisible(False)
    doc.refreshProjection()
    select_rect(doc, 60, 40, 40, 30)
    before = bytes(doc.pixelData(0, 0, 220, 180))
    ref_frame = Frame(
        FrameDesc(40, 30, 4, "u8", "BGRA", "reference"), bytes(ref.projectionPixelData(150, 120, 40, 30))
    )
    frame, origin = direct_result(doc, references=[ref_frame])
    layer = refine(doc, reference=ref)
    assert names(doc)[-1] == layer.name() and names(doc)[-2] == "Reference", names(doc)
    assert_layer_equals(layer, frame, origin)
    also_by_name = refine(doc, reference="Reference")
    assert also_by_name.name() == layer.name()
    outside = assert_outside_unchanged(doc, before, "U8")
    close(doc)
    return {"outside_identical": outside}


@check
def active_layer_source():
    """Source "Active layer": that layer's pixels are sent and the result lands right above it."""
    from touchup_krita import refine
    from touchup_krita.qt import QtCore

    use_endpoint(CFG["endpoint"])
    doc = make_doc(200, 160, "U8")
    paint = doc.createNode("Paint", "paintlayer")
    translucent = bytearray(pattern(100, 80, "U8", seed=5))
    translucent[3::4] = bytes([140]) * (100 * 80)  # so the layer alone differs from the visible image
    paint.setPixelData(QtCore.QByteArray(bytes(translucent)), 40, 30, 100, 80)
    doc.rootNode().addChildNode(paint, None)
    cover = doc.createNode("Cover", "paintlayer")
    doc.rootNode().addChildNode(cover, None)
    select_rect(doc, 60, 50, 40, 30)
    frame, origin = direct_result(doc, source_node=paint)
    # the visible image differs from the layer alone, so matching proves the source was the layer
    vis_frame, _ = direct_result(doc)
    assert bytes(vis_frame.data) != bytes(frame.data)
    layer = refine(doc, source="layer", layer=paint)  # without a view there is no active layer
    assert names(doc) == ["Background", "Paint", layer.name(), "Cover"], names(doc)
    assert_layer_equals(layer, frame, origin)
    close(doc)
    return {"order": ["Background", "Paint", "Touchup", "Cover"]}


@check
def queued_jobs_land_in_order():
    """Three jobs submitted at once each get their own layer, stacked in submission order."""
    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.controller import wait_for

    use_endpoint(CFG["endpoint"])
    doc = make_doc(160, 120, "U8")
    select_rect(doc, 40, 30, 30, 30)
    jobs = [refine(doc, instruction=name, wait=False) for name in ("one", "two", "three")]
    for job in jobs:
        wait_for(job, 60)
    made = [result_of(job) for job in jobs]
    assert names(doc) == ["Background", "Touchup: one", "Touchup: two", "Touchup: three"], names(doc)
    assert [m.name() for m in made] == ["Touchup: one", "Touchup: two", "Touchup: three"]
    stacked = names(doc)
    close(doc)
    return stacked


@check
def result_goes_to_its_document():
    """Switching documents meanwhile: the layer goes to the document the job came from;
    a document closed meanwhile drops the result with a message."""
    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.controller import wait_for

    use_endpoint(CFG["endpoint"])
    a, b = make_doc(120, 100, "U8", "A"), make_doc(120, 100, "U8", "B")
    select_rect(a, 30, 30, 30, 30)
    job = refine(a, wait=False)
    krita().setActiveDocument(b)
    wait_for(job, 60)
    result_of(job)
    assert names(a) == ["Background", "Touchup: default"] and names(b) == ["Background"], (names(a), names(b))
    select_rect(b, 30, 30, 30, 30)
    job = refine(b, wait=False)
    close(b)
    wait_for(job, 60)
    message = refusal(result_of, job, "a result for a closed document was inserted somewhere")
    assert "closed" in message, message
    assert controller().last_error == message
    close(a)
    return message


@check
def clear_messages_for_bad_documents():
    """No selection, and colour models other than RGBA, get a message naming what to do."""
    from touchup_krita import refine

    use_endpoint(CFG["endpoint"])
    out = {}
    doc = make_doc(80, 60, "U8")
    out["no_selection"] = refusal(refine, doc, "a document without a selection was refined")
    assert "Select the region" in out["no_selection"], out
    close(doc)
    for model, depth in (("GRAYA", "U8"), ("CMYKA", "U8"), ("LABA", "U16")):
        doc = krita().createDocument(80, 60, "other", model, depth, "", 72.0)
        select_rect(doc, 10, 10, 20, 20)
        out[model] = refusal(refine, doc, f"a {model} document was refined")
        assert "RGB/Alpha" in out[model] and model in out[model], out
        assert controller().last_error == out[model]
        assert doc.colorModel() == model, "the document was converted"
        close(doc)
    return out


@check
def docker_widgets():
    """The docker lists the backend's presets, greys out what the preset ignores, shows errors."""
    from touchup_krita.docker import TouchupDockerWidget

    use_endpoint(CFG["endpoint"])
    ctl = controller()
    widget = TouchupDockerWidget(ctl)
    presets = [widget.form.preset.itemText(i) for i in range(widget.form.preset.count())]
    model = widget.form.preset.model()
    for i, text in enumerate(presets):  # presets without their models are listed but disabled
        tip = widget.form.preset.itemData(i, 3) or ""  # 3 = ToolTipRole
        assert model.item(i).isEnabled() == ("Not available" not in tip), (text, tip)
    classic = next(i for i, t in enumerate(presets) if t.startswith("classic"))
    assert model.item(classic).isEnabled()
    widget.form.preset.setCurrentIndex(classic)
    accepts = widget.form.preset.currentData()["accepts"]
    assert widget.form.instruction.isEnabled() == bool(accepts["prompt"])
    assert widget.form.reference.isEnabled() == bool(accepts["reference"])
    assert widget.form.seed.isEnabled() == bool(accepts["seed"])
    identity = next((i for i, t in enumerate(presets) if t.startswith("identity")), None)
    if identity is not None:
        widget.form.preset.setCurrentIndex(identity)
        assert widget.form.instruction.isEnabled()
    doc = make_doc(100, 80, "U8")
    krita().setActiveDocument(doc)
    ref = doc.createNode("Ref layer", "paintlayer")
    doc.rootNode().addChildNode(ref, None)
    widget.refresh_layers(doc)
    refs = [widget.form.reference.itemText(i) for i in range(widget.form.reference.count())]
    assert refs[0] == "None" and "Ref layer" in refs and "Background" in refs, refs
    widget.refine()  # no selection in the active document (and kritarunner has no active document)
    expected = "Select the region" if krita().activeDocument() is not None else "Open a document first"
    assert not widget.error_label.isHidden() and expected in widget.error_label.text(), (
        widget.error_label.text()
    )
    state = widget.state_label.text()
    close(doc)
    widget.deleteLater()
    return {"presets": presets, "references": refs, "state": state, "error": widget.error_label.text()}


MID_GREY = ((0.5 + 0.055) / 1.055) ** 2.4  # linear light of sRGB mid-grey (encoded 0.5)


def srgb_encode(v: float) -> float:
    """IEC 61966-2-1, written out again here: Krita's Python has no numpy, nor the backend."""
    return 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


@check
def linear_scrgb_float_round_trip():
    """A float scRGB (linear) document: the request says ``linear``, the engine receives
    sRGB-encoded values (the identity engine records them: a mid-grey channel arrives as 0.5, a
    linear ramp with the encoded ramp's mean), the selection comes back within float rounding,
    and pixels outside the selection are bit-identical."""
    from array import array

    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.controller import wait_for
    from touchup_krita.qt import QtCore

    use_endpoint(CFG["recording_endpoint"])
    record = Path(CFG["record_file"])
    record.write_text("")
    # 1024 x 1024 with the context reaching every edge: the identity preset's working size is
    # the crop's own, so nothing is resampled and only the encoding is under test.
    n = 1024
    doc = krita().createDocument(n, n, "linear", "RGBA", "F32", "scRGB (linear)", 72.0)
    assert doc.colorProfile() == "scRGB (linear)", doc.colorProfile()
    ramp = [x / (n - 1) for x in range(n)]
    pixels = array("f")
    for y in range(n):
        row = array("f", [0.0, y / (n - 1), MID_GREY, 1.0]) * n
        row[0::4] = array("f", ramp)
        pixels.extend(row)
    bg = doc.topLevelNodes()[0]
    bg.setPixelData(QtCore.QByteArray(pixels.tobytes()), 0, 0, n, n)
    doc.refreshProjection()
    doc.waitForDone()
    select_rect(doc, 40, 40, n - 80, n - 80)
    before = bytes(doc.pixelData(0, 0, n, n))
    job = refine(doc, wait=False)
    assert job.header["transfer"] == "linear", job.header.get("transfer")
    wait_for(job, 120)
    layer = result_of(job)
    [line] = record.read_text().splitlines()
    received = json.loads(line)
    assert received["size"] == [n, n], received["size"]
    # Blue is mid-grey light: the engine got 0.5 (the unconverted value would be 0.214).
    for stat in ("mean", "min", "max"):
        assert abs(received[stat][2] - 0.5) < 1e-4, (stat, received[stat])
    encoded_mean = sum(srgb_encode(v) for v in ramp) / n
    assert abs(received["mean"][0] - encoded_mean) < 1e-4, (received["mean"][0], encoded_mean)
    assert abs(received["mean"][1] - encoded_mean) < 1e-4, (received["mean"][1], encoded_mean)

    src = array("f", before)
    out = array("f", bytes(layer.pixelData(0, 0, n, n)))
    worst = 0.0
    for y in range(40, n - 40):
        i, j = (y * n + 40) * 4, (y * n + n - 40) * 4
        for c in range(3):
            pairs = zip(out[i + c : j : 4], src[i + c : j : 4], strict=True)
            worst = max(worst, max(abs(a - b) for a, b in pairs))
    assert worst < 2e-6, f"the selection came back {worst:.2e} off"
    outside = assert_outside_unchanged(doc, before, "F32")
    spaces = {}
    for depth, profile in (("U8", ""), ("U16", "sRGB-elle-V2-srgbtrc.icc"), ("F16", ""), ("F32", "")):
        other = krita().createDocument(64, 64, "space", "RGBA", depth, profile, 72.0)
        select_rect(other, 10, 10, 20, 20)
        job = refine(other, wait=False)
        spaces[f"{depth} {other.colorProfile()}"] = job.header["transfer"]
        wait_for(job, 60)
        result_of(job)
        close(other)
    assert spaces == {
        "U8 sRGB-elle-V2-srgbtrc.icc": "srgb",
        "U16 sRGB-elle-V2-srgbtrc.icc": "srgb",
        "F16 sRGB-elle-V2-g10.icc": "linear",
        "F32 sRGB-elle-V2-g10.icc": "linear",
    }, spaces
    close(doc)
    return {
        "received_blue": received["mean"][2],
        "received_red_mean": received["mean"][0],
        "linear_red_mean": sum(ramp) / n,
        "max_error_inside": worst,
        "outside_identical": outside,
        "transfer_by_space": spaces,
    }


@check
def cancel_running_job():
    """Cancel stops a running job: no layer, the UI resets, the backend serves the next job."""
    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.controller import wait_for
    from touchup_krita.docker import TouchupDockerWidget

    use_endpoint(CFG["slow_endpoint"])
    ctl = controller()
    widget = TouchupDockerWidget(ctl)
    doc = make_doc(120, 100, "U8")
    select_rect(doc, 30, 30, 40, 30)
    job = refine(doc, engine="identity", steps=30, wait=False)
    assert pump_until(lambda: job.state == "running" and job.step >= 2, 30), job.state
    assert pump_until(lambda: widget.stage.text().startswith("Refining"), 5), widget.stage.text()
    stage = widget.stage.text()
    assert (
        widget.cancel_button.isEnabled() and widget.progress.maximum() == 30 and widget.progress.value() >= 2
    )
    t0 = time.monotonic()
    widget.cancel_button.click()
    assert job.state == "cancelled" and not ctl.queue.active()
    assert widget.stage.text() == "" and not widget.cancel_button.isEnabled(), "the docker did not reset"
    pump_until(lambda: False, 1.5)  # late replies must not add a layer
    assert names(doc) == ["Background"], names(doc)
    t1 = time.monotonic()
    job2 = refine(doc, engine="identity", steps=2, wait=False)
    wait_for(job2, 60)
    layer = result_of(job2)
    # 30 steps of 0.2 s were cancelled after ~2: had the backend kept running it, job2 would wait ~5 s
    assert time.monotonic() - t1 < 3.5, f"the next job waited {time.monotonic() - t1:.1f} s"
    assert names(doc) == ["Background", layer.name()]
    close(doc)
    widget.deleteLater()
    return {"docker_showed": stage, "cancel_s": round(time.monotonic() - t0, 2)}


@check
def ui_never_blocks_during_a_job():
    """Submitting returns at once and Qt's event loop keeps ticking while a job runs: the plugin
    never waits on the socket in the UI thread."""
    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.controller import wait_for

    QtCore = qt()  # noqa: N806 - the module, under its own name
    use_endpoint(CFG["slow_endpoint"])
    doc = make_doc(160, 120, "U8")
    select_rect(doc, 40, 30, 60, 50)
    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(10)
    t0 = time.monotonic()
    job = refine(doc, engine="identity", steps=8, wait=False)
    submit_s = time.monotonic() - t0
    steps_seen = set()
    assert pump_until(
        lambda: steps_seen.add(job.step) or job.state in ("ready", "done", "failed", "cancelled"), 60
    ), job.state
    timer.stop()
    wait_for(job, 30)
    result_of(job)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert submit_s < 0.25, f"submitting took {submit_s:.2f} s"
    assert len(steps_seen - {0}) >= 3, f"progress did not reach the UI live: {sorted(steps_seen)}"
    assert gaps and max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.2f} s"
    close(doc)
    return {
        "submit_ms": round(submit_s * 1000, 1),
        "max_gap_ms": round(max(gaps) * 1000, 1),
        "ticks": len(ticks),
    }


@check
def backend_vanishes_mid_job():
    """Killing the backend mid-job: an error in the docker, the UI reset, Krita unaffected."""
    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.connection import ConnectionState
    from touchup_krita.controller import wait_for
    from touchup_krita.docker import TouchupDockerWidget

    use_endpoint(CFG["doomed_endpoint"])
    ctl = controller()
    widget = TouchupDockerWidget(ctl)
    doc = make_doc(120, 100, "U8")
    select_rect(doc, 30, 30, 40, 30)
    job = refine(doc, engine="identity", steps=40, wait=False)
    assert pump_until(lambda: job.state == "running", 30), job.state
    os.kill(int(CFG["doomed_pid"]), signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(job, 40)
    noticed = time.monotonic() - t0
    message = refusal(result_of, job, "a job whose backend died produced a layer")
    assert "stopped" in message, message
    assert ctl.last_error == message and not ctl.queue.active()
    assert ctl.backend.state == ConnectionState.NOT_RUNNING
    assert names(doc) == ["Background"]
    assert widget.error_label.text() == message and not widget.error_label.isHidden()
    assert widget.stage.text() == "" and not widget.cancel_button.isEnabled(), "the docker did not reset"
    assert "not running" in widget.state_label.text() and widget.start_button.isEnabled()
    widget.deleteLater()
    close(doc)
    return {"message": message, "noticed_after_s": round(noticed, 2)}


@check
def backend_not_running():
    """Nothing listening: the refine fails quickly with the 'not running' advice."""
    from touchup_krita import refine
    from touchup_krita.messages import UNREACHABLE

    use_endpoint(CFG["dead_endpoint"], wait_connected=False)
    doc = make_doc(80, 60, "U8")
    select_rect(doc, 10, 10, 20, 20)
    t0 = time.monotonic()
    message = refusal(refine, doc, "refine succeeded with no backend")
    took = time.monotonic() - t0
    assert message.startswith(UNREACHABLE), message
    assert controller().last_error == message
    assert names(doc) == ["Background"]
    close(doc)
    return {"message": message, "seconds": round(took, 2)}


@check
def start_backend_button():
    """Start backend launches the configured command; the state goes starting -> connected."""
    from touchup_krita import refine
    from touchup_krita.connection import ConnectionState

    from touchup.shared.client import Client

    ctl = controller()
    seen = []
    ctl.backend.state_changed.connect(seen.append)
    ctl.set_config(
        replace(
            ctl.config,
            endpoint=CFG["spare_endpoint"],
            backend_command=CFG["backend_command"],
            start_timeout_s=60,
        )
    )
    assert pump_until(lambda: ctl.backend.state == ConnectionState.NOT_RUNNING, 10), ctl.backend.state
    ctl.start_backend()
    assert ctl.backend.state == ConnectionState.STARTING, ctl.backend.state
    try:
        assert pump_until(lambda: ctl.backend.state == ConnectionState.CONNECTED, 60), (
            ctl.backend.state,
            ctl.backend.start_error,
        )
        assert pump_until(lambda: bool(ctl.backend.hello.get("engines")), 10)
        doc = make_doc(80, 60, "U8")
        select_rect(doc, 20, 20, 20, 20)
        layer = refine(doc)
        close(doc)
    finally:
        with Client(CFG["spare_endpoint"]) as client, contextlib.suppress(Exception):
            client.shutdown(timeout=5)
    return {"states": seen, "layer": layer.name()}


@check
def bundled_example_end_to_end():
    """The bundled example (input, mask, reference) refined inside Krita through ``refine()``."""
    from krita import Selection
    from touchup_krita import refine
    from touchup_krita.qt import QtCore

    use_endpoint(CFG["endpoint"])
    ex = Path(CFG["example_dir"])
    k = krita()
    doc = k.openDocument(str(ex / "input.png"))
    mask_doc = k.openDocument(str(ex / "mask.png"))
    ref_doc = k.openDocument(str(ex / "reference.png"))
    clean_doc = k.openDocument(str(ex / "clean.png"))
    w, h = doc.width(), doc.height()
    assert (doc.colorModel(), doc.colorDepth()) == ("RGBA", "U8"), (doc.colorModel(), doc.colorDepth())
    mask_bytes = _gray(mask_doc)
    sel = Selection()
    sel.setPixelData(QtCore.QByteArray(mask_bytes), 0, 0, w, h)
    doc.setSelection(sel)
    rw, rh = ref_doc.width(), ref_doc.height()
    ref = doc.createNode("Reference photo", "paintlayer")
    ref.setPixelData(QtCore.QByteArray(bytes(ref_doc.pixelData(0, 0, rw, rh))), w - rw, 0, rw, rh)
    doc.rootNode().addChildNode(ref, None)
    ref.setVisible(False)
    doc.refreshProjection()
    doc.waitForDone()
    before = bytes(doc.pixelData(0, 0, w, h))
    t0 = time.monotonic()
    layer = refine(doc, reference=ref)
    took = time.monotonic() - t0
    assert names(doc) == ["Background", "Reference photo", "Touchup: default"], names(doc)
    stats = assert_layer_alpha_follows_selection(doc, layer, "U8")
    outside = assert_outside_unchanged(doc, before, "U8")
    after = bytes(doc.pixelData(0, 0, w, h))
    clean = bytes(clean_doc.pixelData(0, 0, w, h))
    err_in, err_out = _masked_error(before, clean, mask_bytes), _masked_error(after, clean, mask_bytes)
    for d in (mask_doc, ref_doc, clean_doc, doc):
        close(d)
    assert err_out < err_in, (
        f"the refined region is not closer to the clean image ({err_in:.2f} -> {err_out:.2f})"
    )
    return {
        "seconds": round(took, 2),
        "mean_abs_error_before": round(err_in, 2),
        "after": round(err_out, 2),
        "outside_identical": outside,
        **stats,
    }


@check
def result_outside_the_tile_is_refused():
    """A backend claiming a 5000x1 result at (-100000, 999999): the job fails with a clear
    message, no layer is added, and the document is unchanged."""
    from touchup_krita import refine

    use_endpoint(CFG["lying_endpoint"])
    doc = make_doc(120, 100, "U8")
    select_rect(doc, 30, 30, 40, 30)
    before = bytes(doc.pixelData(0, 0, 120, 100))
    message = refusal(refine, doc, "a result outside the tile was written")
    assert "does not fit the region" in message and "nothing was changed" in message, message
    assert names(doc) == ["Background"], names(doc)
    assert bytes(doc.pixelData(0, 0, 120, 100)) == before
    assert not controller().queue.active(), "the job was left hanging"
    close(doc)
    return {"message": message}


@check
def unreadable_reply_fails_the_job():
    """A progress message the plugin cannot read (its step is text): the job fails with a
    message instead of staying 'running' for ever, and no layer is added."""
    from touchup_krita import refine

    use_endpoint(CFG["garbled_endpoint"])
    doc = make_doc(100, 80, "U8")
    select_rect(doc, 20, 20, 30, 30)
    t0 = time.monotonic()
    message = refusal(lambda d: refine(d, timeout=30), doc, "a job with an unreadable reply produced a layer")
    took = time.monotonic() - t0
    assert "could not read the backend's reply" in message, message
    assert took < 10, took
    assert names(doc) == ["Background"] and not controller().queue.active()
    close(doc)
    return {"message": message, "seconds": round(took, 2)}


@check
def connection_file_reaches_a_curve_backend():
    """The docker's connection-file setting: refine through an authenticated, encrypted backend."""
    from touchup_krita import refine
    from touchup_krita.config import import_connection
    from touchup_krita.connection import ConnectionState

    ctl = controller()
    copy = import_connection(CFG["connection_file"], Path(CFG["connection_copy_dir"]))
    ctl.set_config(replace(ctl.config, connection=copy))
    try:
        assert pump_until(lambda: ctl.backend.state == ConnectionState.CONNECTED, 20), (
            "curve backend not connected"
        )
        doc = make_doc(120, 100, "U8")
        select_rect(doc, 30, 30, 40, 30)
        before = bytes(doc.pixelData(0, 0, 120, 100))
        layer = refine(doc, engine="identity")
        assert names(doc) == ["Background", layer.name()], names(doc)
        outside = assert_outside_unchanged(doc, before, "U8")
        close(doc)
    finally:
        ctl.set_config(replace(ctl.config, connection=""))
    return {"endpoint": ctl.backend.endpoint, "outside_identical": outside}


def _completed(endpoint: str) -> tuple[int, bool]:
    """(jobs the backend at ``endpoint`` has finished, whether it is busy now), from its status."""
    from touchup.shared.client import Client

    with Client(endpoint) as client:
        queue = client.status()["queue"]
    return int(queue["completed"]), bool(queue["busy"])


@check
def endpoint_changed_at_runtime():
    """The user types another address in the docker's settings while Krita runs: the docker
    lists the new backend's engines, refines go there and no longer to the old one, and a refine
    still running on the old backend ends with a message instead of hanging."""
    from touchup_krita import refine
    from touchup_krita.api import result_of
    from touchup_krita.connection import ConnectionState
    from touchup_krita.controller import wait_for
    from touchup_krita.docker import ConfigDialog, TouchupDockerWidget
    from touchup_krita.messages import SETTINGS_CHANGED

    old, new = CFG["slow_endpoint"], CFG["plain_endpoint"]  # only the old one offers "identity"
    use_endpoint(old)
    ctl = controller()
    widget = TouchupDockerWidget(ctl)

    def engines() -> set[str]:
        return {
            (widget.form.preset.itemData(i) or {}).get("engine") for i in range(widget.form.preset.count())
        }

    assert pump_until(lambda: "identity" in engines(), 10), engines()
    doc = make_doc(120, 100, "U8")
    select_rect(doc, 30, 30, 40, 30)
    new_done, _ = _completed(new)
    first = refine(doc, engine="identity", steps=2)
    old_done, _ = _completed(old)

    # A long refine on the old backend; the address changes while it runs.
    job = refine(doc, engine="identity", steps=40, wait=False)
    assert pump_until(lambda: job.state == "running", 30), job.state
    t0 = time.monotonic()
    dialog = ConfigDialog(ctl.config)  # what the docker's settings button opens
    dialog.endpoint.setText(new)
    ctl.set_config(dialog.config())  # ... and does when it is accepted
    dialog.deleteLater()
    wait_for(job, 10)
    abandoned_after = time.monotonic() - t0
    message = refusal(result_of, job, "a refine abandoned on the old backend produced a layer")
    assert message == SETTINGS_CHANGED, message
    assert not ctl.queue.active() and not widget.cancel_button.isEnabled(), "the docker still shows a refine"
    assert names(doc) == ["Background", first.name()], names(doc)

    assert pump_until(lambda: ctl.backend.state == ConnectionState.CONNECTED, 20), ctl.backend.state
    assert ctl.backend.endpoint == new and widget.state_label.toolTip() == new, widget.state_label.toolTip()
    assert pump_until(lambda: "identity" not in engines(), 10), f"the docker still lists {engines()}"
    assert "classic" in engines(), engines()
    second = refine(doc)
    assert names(doc) == ["Background", first.name(), second.name()], names(doc)
    assert _completed(new)[0] == new_done + 1, "the refine did not reach the new address"
    # The old backend stops the abandoned job (its client went away) and gets nothing more.
    assert pump_until(lambda: not _completed(old)[1], 10), "the old backend kept running the abandoned job"
    old_after = _completed(old)[0]
    assert old_after <= old_done + 1, (old_done, old_after)
    third = refine(doc)
    pump_until(lambda: False, 1.0)
    assert _completed(old) == (old_after, False), "the old backend is still being used"
    assert _completed(new)[0] == new_done + 2
    assert names(doc)[-1] == third.name(), names(doc)
    widget.deleteLater()
    close(doc)
    return {"message": message, "abandoned_after_s": round(abandoned_after, 2)}


def _gray(doc) -> bytes:
    """One byte per pixel from an 8-bit grey (GRAYA) or RGBA document."""
    data = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
    step = 2 if doc.colorModel() == "GRAYA" else 4
    return data[0::step]


def _masked_error(image: bytes, clean: bytes, mask: bytes) -> float:
    total = count = 0
    for i, m in enumerate(mask):
        if m > 127:
            for c in range(3):
                total += abs(image[i * 4 + c] - clean[i * 4 + c])
            count += 3
    return total / max(count, 1)


# -- entry point -----------------------------------------------------------------------------
def run(args=None) -> None:
    out = Path(os.environ["TOUCHUP_KRITA_RESULTS"])
    CFG.update(json.loads(Path(os.environ["TOUCHUP_KRITA_CONFIG"]).read_text()))
    only = set(filter(None, os.environ.get("TOUCHUP_KRITA_ONLY", "").split(",")))
    RESULTS["_meta"] = {"ok": True, "detail": {"krita": krita().version()}}
    for name, fn in CHECKS:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            detail = fn()
            RESULTS[name] = {"ok": True, "detail": detail}
        except Exception:
            RESULTS[name] = {"ok": False, "detail": traceback.format_exc()}
        RESULTS[name]["seconds"] = round(time.monotonic() - t0, 2)
        out.write_text(json.dumps(RESULTS, indent=1, default=str))
    out.write_text(json.dumps(RESULTS, indent=1, default=str))
