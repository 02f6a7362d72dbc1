"""Runs INSIDE GIMP 3 for ``tests/test_installer_gimp.py``: the plug-in as ``touchup install``
laid it out must import its vendored modules from its ``lib`` folder, be registered, and refine.

The batch interpreter runs the same Python as the plug-in, so importing from the plug-in's
``lib`` here shows what the plug-in itself imports. Results go to ``results.json``.
"""

import json
import os
import sys
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

PROC = "plug-in-touchup-refine-selection"


def main():
    spec_path = os.environ["TOUCHUP_GIMP_SPEC"]
    with open(spec_path) as f:
        spec = json.load(f)
    out = {"name": "installed"}
    try:
        lib = os.path.join(os.environ["GIMP3_DIRECTORY"], "plug-ins", "touchup-refine", "lib")
        sys.path.insert(0, lib)
        import msgpack
        import zmq

        import touchup.shared

        out["zmq"], out["msgpack"], out["shared"] = zmq.__file__, msgpack.__file__, touchup.shared.__file__
        out["python"] = "{}.{}".format(*sys.version_info[:2])
        proc = Gimp.get_pdb().lookup_procedure(PROC)
        out["registered"] = proc is not None
        if proc is not None:
            image = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
            layer = Gimp.Layer.new(
                image, "photo", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL
            )
            image.insert_layer(layer, None, 0)
            buf = layer.get_buffer()
            buf.set(Gegl.Rectangle.new(0, 0, 64, 48), "R'G'B'A u8", bytes([200, 60, 30, 255]) * (64 * 48))
            buf.flush()
            image.select_rectangle(Gimp.ChannelOps.REPLACE, 16, 12, 24, 20)
            cfg = proc.create_config()
            cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
            cfg.set_property("image", image)
            cfg.set_core_object_array("drawables", [layer])
            cfg.set_property("endpoint", spec["endpoint"])
            res = proc.run(cfg)
            out["status"] = res.index(0).value_nick
            out["layers"] = [item.get_name() for item in image.get_layers()]
            image.delete()
    except Exception:
        out["error"] = traceback.format_exc()
    with open(os.path.join(os.path.dirname(spec_path), "results.json"), "w") as fh:
        json.dump([out], fh)


main()
