"""Runs INSIDE the GIMP 3 GUI under Xvfb: the dialog, the OK path, undo, and Repeat.

Steps, in one launch: show an image; call Refine Selection INTERACTIVE; a watcher thread waits
for the "Refine Selection" dialog, copies the Xvfb screen (XWD) with the dialog's geometry and
presses Return (OK); the refine then runs with the dialog's values. Ctrl+Z in GIMP's window
must remove the new layer (one undo step). Finally WITH_LAST_VALS (Filters > Repeat) must
refine again with the values the dialog stored. Results go to ``results.json`` beside the spec.
"""

import json
import os
import shutil
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


def watch_dialog(workdir, out):
    """Wait for the dialog, take the screenshot, press OK."""
    try:
        found = xdotool("search", "--sync", "--onlyvisible", "--name", "^Refine Selection$", timeout=60)
        window = found.splitlines()[0]
        time.sleep(2.0)  # let GTK finish drawing
        shell = xdotool("getwindowgeometry", "--shell", window)
        out["geometry"] = dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)
        shutil.copy(os.path.join(workdir, "fb", "Xvfb_screen0"), os.path.join(workdir, "screen.xwd"))
        xdotool("windowfocus", "--sync", window)
        xdotool("key", "--clearmodifiers", "Return")
        out["pressed_ok"] = True
    except Exception:
        out["watch_error"] = traceback.format_exc()


def layer_names(image):
    return [layer.get_name() for layer in image.get_layers()]


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
    res = proc.run(cfg)
    return res.index(0).value_nick, (res.index(1) if res.length() > 1 else "")


def main():
    spec_path = os.environ["TOUCHUP_GIMP_SPEC"]
    workdir = os.path.dirname(spec_path)
    with open(spec_path) as f:
        spec = json.load(f)
    out = {"name": "dialog"}
    w, h = spec["width"], spec["height"]
    image = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "Background", w, h, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    with open(os.path.join(workdir, spec["input_raw"]), "rb") as f:
        layer.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B' u8", f.read())
    layer.get_buffer().flush()
    reference = Gimp.Layer.new(
        image, "Reference", w, h, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL
    )
    image.insert_layer(reference, None, 0)
    with open(os.path.join(workdir, spec["input_raw"]), "rb") as f:
        reference.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B' u8", f.read())
    reference.get_buffer().flush()
    reference.set_visible(False)
    image.set_selected_layers([layer])
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *spec["ellipse"])
    image.clean_all()
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    try:
        watcher = threading.Thread(target=watch_dialog, args=(workdir, out), daemon=True)
        watcher.start()
        out["before"] = layer_names(image)
        out["interactive"] = call(
            image, layer, Gimp.RunMode.INTERACTIVE, {**spec["args"], "reference": reference}
        )
        watcher.join(timeout=5)
        out["after_ok"] = layer_names(image)
        Gimp.displays_flush()
        time.sleep(0.5)
        out["undo_window"] = undo_with_keyboard(image)
        out["after_undo"] = layer_names(image)
        out["repeat"] = call(image, layer, Gimp.RunMode.WITH_LAST_VALS, {})
        out["after_repeat"] = layer_names(image)
    except Exception:
        out["error"] = traceback.format_exc()
    finally:
        image.clean_all()
        display.delete()
        image.delete()
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump([out], f, indent=1)


main()
