"""Runs INSIDE the GIMP 3 GUI under Xvfb: variants as a layer group, one undo step, Repeat.

Steps, in one launch, on a displayed image (a background photo and a layer above it): refine
with one variant (one plain layer, as without variants); refine with N variants through the
dialog (a watcher thread presses OK), which gives a layer group; record the layer tree and
every variant's pixels; press Ctrl+Z once in GIMP's window; refine again with Filters > Repeat
(WITH_LAST_VALS: GIMP stores the last values of interactive runs only, and starts every later
interactive run from them, so only one run here is interactive); show each variant of the
repeated group alone and record the composite; finally refine twice more, cancelled after the
first variant and from a backend that dies after the first variant, undoing each. Results go to ``results.json`` beside the spec, pixels to
raw files; the assertions live in ``test_gimp_variants.py``.
"""

import json
import os
import sys
import threading
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

# The harness copies gimp_gui_keys.py beside this driver (and the spec).
sys.path.insert(0, os.path.dirname(os.environ["TOUCHUP_GIMP_SPEC"]))
from gimp_gui_keys import undo_with_keyboard, xdotool  # noqa: E402

PROC = "plug-in-touchup-refine-selection"
FORMAT = "R'G'B'A u8"


def press_ok(out):
    """Wait for the Refine Selection dialog and press Return (OK) in it."""
    try:
        found = xdotool("search", "--sync", "--onlyvisible", "--name", "^Refine Selection$", timeout=60)
        window = found.splitlines()[0]
        time.sleep(1.0)  # let GTK finish building the dialog
        xdotool("windowfocus", "--sync", window)
        xdotool("key", "--clearmodifiers", "Return")
    except Exception:
        out["watch_error"] = traceback.format_exc()


def through_dialog(image, drawable, args, out):
    """Run the procedure INTERACTIVE and press OK in its dialog (GIMP stores last values then;
    ``args`` apply only while none are stored)."""
    watcher = threading.Thread(target=press_ok, args=(out,), daemon=True)
    watcher.start()
    try:
        return call(image, drawable, Gimp.RunMode.INTERACTIVE, args)
    finally:
        watcher.join(timeout=5)


def tree(image):
    """The layer tree as a user sees it in the Layers dock: name, visibility, children."""

    def node(layer):
        entry = {"name": layer.get_name(), "visible": layer.get_visible()}
        if layer.is_group():
            entry["children"] = [node(child) for child in layer.get_children()]
        return entry

    return [node(layer) for layer in image.get_layers()]


def dump(drawable, path):
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, FORMAT, Gegl.AbyssPolicy.NONE)
    with open(path, "wb") as f:
        f.write(bytes(data))


def dump_visible(image, path):
    merged = Gimp.Layer.new_from_visible(image, image, "dump")
    dump(merged, path)
    merged.delete()


def call(image, drawable, run_mode, args):
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        return "not-registered", ""
    cfg = proc.create_config()
    cfg.set_property("run-mode", run_mode)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [drawable])
    for key, value in args.items():
        cfg.set_property(key, value)
    started = time.monotonic()
    res = proc.run(cfg)
    return res.index(0).value_nick, (res.index(1) if res.length() > 1 else ""), time.monotonic() - started


def record_group(image, workdir, prefix, out):
    """The top layer group's variants: position, size and pixels of each."""
    group = next((layer for layer in image.get_layers() if layer.is_group()), None)
    if group is None:
        return None
    layers = []
    for i, layer in enumerate(group.get_children()):
        _ok, x, y = layer.get_offsets()
        dump(layer, os.path.join(workdir, f"{prefix}.variant{i}.raw"))
        layers.append({"offsets": [x, y], "size": [layer.get_width(), layer.get_height()]})
    out[f"{prefix}_layers"] = layers
    return group


def main():
    spec_path = os.environ["TOUCHUP_GIMP_SPEC"]
    workdir = os.path.dirname(spec_path)
    with open(spec_path) as f:
        spec = json.load(f)
    out = {"name": "variants"}
    w, h = spec["width"], spec["height"]
    image = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
    layers = {}
    for name, raw in (("Background", spec["input_raw"]), ("Sticker", spec["sticker_raw"])):
        layer = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        with open(os.path.join(workdir, raw), "rb") as f:
            layer.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), FORMAT, f.read())
        layer.get_buffer().flush()
        layers[name] = layer
    background = layers["Background"]
    image.set_selected_layers([background])
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *spec["ellipse"])
    Gimp.Selection.feather(image, spec["feather"])
    selection = image.get_selection().get_buffer()
    data = selection.get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
    with open(os.path.join(workdir, "selection.raw"), "wb") as f:
        f.write(bytes(data))
    image.clean_all()
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    try:
        out["before"] = tree(image)
        dump_visible(image, os.path.join(workdir, "before.raw"))
        for name, layer in layers.items():
            dump(layer, os.path.join(workdir, f"{name}.before.raw"))

        out["single"] = call(image, background, Gimp.RunMode.NONINTERACTIVE, spec["single_args"])
        # Hidden, so that the composites below show the variants (it lies above their group).
        for layer in image.get_layers():
            if layer.get_name() not in layers:
                layer.set_visible(False)
        out["after_single"] = tree(image)

        out["several"] = through_dialog(image, background, spec["args"], out)
        out["after_several"] = tree(image)
        out["selected_after_several"] = [layer.get_name() for layer in image.get_selected_layers()]
        dump_visible(image, os.path.join(workdir, "after.raw"))
        record_group(image, workdir, "several", out)
        for name, layer in layers.items():
            dump(layer, os.path.join(workdir, f"{name}.after.raw"))

        Gimp.displays_flush()
        time.sleep(0.5)
        out["undo_window"] = undo_with_keyboard(image)
        out["after_undo"] = tree(image)
        dump_visible(image, os.path.join(workdir, "after_undo.raw"))

        out["repeat"] = call(image, background, Gimp.RunMode.WITH_LAST_VALS, {})
        out["after_repeat"] = tree(image)
        group = record_group(image, workdir, "repeat", out)
        if group is not None:  # each variant alone on the canvas, as a user flips through them
            children = group.get_children()
            for i, shown in enumerate(children):
                for layer in children:
                    layer.set_visible(layer == shown)
                dump_visible(image, os.path.join(workdir, f"repeat.alone{i}.raw"))

        # Cancelled after the first variant (the test kills the plug-in, as GIMP's Cancel does):
        # nothing is inserted. Then a backend that dies after the first variant: what arrived
        # is inserted, as one undo step.
        for case in ("cancelled", "doomed"):
            out[f"before_{case}"] = tree(image)
            out[case] = call(image, background, Gimp.RunMode.NONINTERACTIVE, spec[f"{case}_args"])
            out[f"after_{case}"] = tree(image)
            Gimp.displays_flush()
            if case == "doomed":
                out[f"{case}_undo_window"] = undo_with_keyboard(image)
                out[f"after_{case}_undo"] = tree(image)
    except Exception:
        out["error"] = traceback.format_exc()
    finally:
        image.clean_all()
        display.delete()
        image.delete()
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump([out], f, indent=1)


main()
