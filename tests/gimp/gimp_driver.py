"""Runs INSIDE GIMP 3 (``gimp-console-3.0 --batch-interpreter=python-fu-eval``) for the tests.

It reads a JSON spec (path in ``TOUCHUP_GIMP_SPEC``), builds each case's image the way a user
would have it (layers, a hidden reference layer, a soft selection), calls the Refine Selection
procedure through the PDB, and writes what a user would look at -- the layer stack, the new
layer's name/offsets/pixels and the visible composite before and after -- into the spec's
folder as ``results.json`` plus raw pixel files. The assertions live in ``test_gimp_plugin.py``
on the host, where numpy is available. Several cases share one GIMP launch to keep tests fast.
"""

import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PROC = "plug-in-touchup-refine-selection"
PRECISIONS = {
    "u8": Gimp.Precision.U8_NON_LINEAR,
    "u16": Gimp.Precision.U16_NON_LINEAR,
    "float": Gimp.Precision.FLOAT_LINEAR,
}


def fmt(dtype, channels):
    """Integer test images are gamma-encoded, float ones linear (as GIMP creates them);
    1 channel is grey, 3 RGB, 4 RGBA."""
    model = {1: "Y", 3: "RGB", 4: "RGBA"}[channels]
    if dtype != "float":
        model = model.replace("Y", "Y'").replace("RGB", "R'G'B'")
    return f"{model} {dtype}"


def put(drawable, path, dtype, channels):
    w, h = drawable.get_width(), drawable.get_height()
    buf = drawable.get_buffer()
    with open(path, "rb") as f:
        buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt(dtype, channels), f.read())
    buf.flush()
    drawable.update(0, 0, w, h)


def dump(drawable, path, dtype):
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(
        Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt(dtype, 4), Gegl.AbyssPolicy.NONE
    )
    with open(path, "wb") as f:
        f.write(bytes(data))


def dump_visible(image, path, dtype):
    merged = Gimp.Layer.new_from_visible(image, image, "dump")
    dump(merged, path, dtype)
    merged.delete()


def stack(image):
    return [layer.get_name() for layer in image.get_layers()]


def build(case, workdir):
    """The case's image: a background layer, maybe a hidden reference layer, a soft selection.
    ``gray``: a grayscale image (raw inputs then hold one channel)."""
    w, h, dtype = case["width"], case["height"], case["dtype"]
    gray = bool(case.get("gray"))
    channels = 1 if gray else 3
    layer_type = Gimp.ImageType.GRAY_IMAGE if gray else Gimp.ImageType.RGB_IMAGE
    if "input_png" in case:
        image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(case["input_png"]))
        background = image.get_layers()[0]
    else:
        base = Gimp.ImageBaseType.GRAY if gray else Gimp.ImageBaseType.RGB
        image = Gimp.Image.new_with_precision(w, h, base, PRECISIONS[dtype])
        background = Gimp.Layer.new(image, "Background", w, h, layer_type, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(background, None, 0)
        put(background, os.path.join(workdir, case["input_raw"]), dtype, channels)
    reference = None
    if case.get("reference_png"):
        reference = Gimp.file_load_layer(
            Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(case["reference_png"])
        )
        reference.set_name("Reference")
        image.insert_layer(reference, None, 0)
        reference.set_visible(False)
    elif case.get("reference_raw"):
        rw, rh = case["reference_size"]
        reference = Gimp.Layer.new(image, "Reference", rw, rh, layer_type, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(reference, None, 0)
        put(reference, os.path.join(workdir, case["reference_raw"]), dtype, channels)
        reference.set_visible(False)
    sel = case["selection"]
    if sel.get("none"):
        Gimp.Selection.none(image)
    elif "mask_raw" in sel:
        channel = Gimp.Channel.new(image, "mask", w, h, 100.0, Gegl.Color.new("black"))
        image.insert_channel(channel, None, 0)
        buf = channel.get_buffer()
        with open(os.path.join(workdir, sel["mask_raw"]), "rb") as f:
            buf.set(Gegl.Rectangle.new(0, 0, w, h), "Y u8", f.read())
        buf.flush()
        image.select_item(Gimp.ChannelOps.REPLACE, channel)
        image.remove_channel(channel)
    else:
        x, y, sw, sh = sel["ellipse"]
        image.select_ellipse(Gimp.ChannelOps.REPLACE, x, y, sw, sh)
        if sel.get("feather"):
            Gimp.Selection.feather(image, sel["feather"])
    # The user's active layer is the photo, not the reference.
    image.set_selected_layers([background])
    return image, background, reference


def call(image, drawable, reference, args, run_mode=Gimp.RunMode.NONINTERACTIVE):
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        return "not-registered", "the procedure is not registered"
    cfg = proc.create_config()
    cfg.set_property("run-mode", run_mode)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [drawable])
    if reference is not None:
        cfg.set_property("reference", reference)
    for key, value in args.items():
        cfg.set_property(key, value)
    res = proc.run(cfg)
    status = res.index(0).value_nick
    message = res.index(1) if res.length() > 1 else ""
    return status, message


def registered_defaults(case):
    """The default value of each named argument, as a new call of the procedure starts with."""
    cfg = Gimp.get_pdb().lookup_procedure(PROC).create_config()
    defaults = {k: cfg.get_property(k) for k in case["defaults_of"]}
    return {"name": case["name"], "status": "success", "defaults": defaults}


def run_case(case, workdir):
    name = case["name"]
    if "defaults_of" in case:
        return registered_defaults(case)
    image, background, reference = build(case, workdir)
    out = {"name": name}
    try:
        dtype = case["dtype"]
        dump_visible(image, os.path.join(workdir, f"{name}.before.raw"), dtype)
        dump(background, os.path.join(workdir, f"{name}.layer_before.raw"), dtype)
        selection = image.get_selection().get_buffer()
        data = selection.get(
            Gegl.Rectangle.new(0, 0, image.get_width(), image.get_height()),
            1.0,
            "Y " + dtype,
            Gegl.AbyssPolicy.NONE,
        )
        with open(os.path.join(workdir, f"{name}.selection.raw"), "wb") as f:
            f.write(bytes(data))
        out["stack_before"] = stack(image)
        mode = Gimp.RunMode.WITH_LAST_VALS if case.get("last_vals") else Gimp.RunMode.NONINTERACTIVE
        out["status"], out["message"] = call(image, background, reference, case.get("args", {}), mode)
        out["stack_after"] = stack(image)
        dump_visible(image, os.path.join(workdir, f"{name}.after.raw"), dtype)
        dump(background, os.path.join(workdir, f"{name}.layer_after.raw"), dtype)
        new = [layer for layer in image.get_layers() if layer.get_name() not in out["stack_before"]]
        if new:
            layer = new[0]
            _ok, x, y = layer.get_offsets()
            out["layer"] = {
                "name": layer.get_name(),
                "offsets": [x, y],
                "size": [layer.get_width(), layer.get_height()],
                "index": image.get_item_position(layer),
                "gray": layer.is_gray(),
                "active_index": image.get_item_position(background),
            }
            dump(layer, os.path.join(workdir, f"{name}.result.raw"), dtype)
    finally:
        image.delete()
    return out


def main():
    spec_path = os.environ["TOUCHUP_GIMP_SPEC"]
    with open(spec_path) as f:
        spec = json.load(f)
    workdir = os.path.dirname(spec_path)
    results = []
    for case in spec["cases"]:
        try:
            results.append(run_case(case, workdir))
        except Exception:
            results.append(
                {"name": case["name"], "status": "driver-error", "message": traceback.format_exc()}
            )
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


main()
