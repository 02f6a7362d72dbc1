"""`touchup install --gimp` into a GIMP 3 profile, then real GIMP 3 (Debian trixie chroot) uses it.

The installer writes into a fresh profile inside the chroot, vendoring pyzmq/msgpack wheels
picked for GIMP's Python 3.13 (not the test's Python). GIMP then runs in batch mode: the
Refine Selection procedure must be registered from the installed folder and, called on an
image with a selection against a real backend on the host, must add the refined layer. The
batch interpreter runs in the same Python as the plug-in, so it also checks that the vendored
zmq/msgpack and the protocol copy import from the plug-in's lib folder. ``touchup uninstall``
must then leave the profile exactly as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from touchup.installer.install import tree_snapshot

REPO = Path(__file__).resolve().parents[1]
WHEEL_CACHE = REPO / ".cache" / "wheels"
PROC = "plug-in-touchup-refine-selection"

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

BATCH = r"""
import json, os, sys, traceback
out = {}
try:
    lib = os.path.join(os.environ["GIMP3_DIRECTORY"], "plug-ins", "touchup-refine", "lib")
    sys.path.insert(0, lib)
    import zmq, msgpack, touchup.shared
    out["zmq"], out["msgpack"], out["shared"] = zmq.__file__, msgpack.__file__, touchup.shared.__file__
    out["python"] = "%d.%d" % sys.version_info[:2]
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    out["registered"] = proc is not None
    if proc is not None:
        image = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
        layer = Gimp.Layer.new(image, "photo", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        buf = layer.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, 64, 48), "R'G'B'A u8", bytes([200, 60, 30, 255]) * (64 * 48))
        buf.flush()
        image.select_rectangle(Gimp.ChannelOps.REPLACE, 16, 12, 24, 20)
        cfg = proc.create_config()
        cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        cfg.set_property("image", image)
        cfg.set_core_object_array("drawables", [layer])
        cfg.set_property("endpoint", ENDPOINT)
        res = proc.run(cfg)
        out["status"] = res.index(0).value_nick
        out["layers"] = [l.get_name() for l in image.get_layers()]
        image.delete()
except Exception:
    out["error"] = traceback.format_exc()
with open(OUT, "w") as fh:
    json.dump(out, fh)
"""


def _chroot() -> Path:
    return Path(os.environ.get("TOUCHUP_GIMP_CHROOT") or REPO / ".cache" / "gimp" / "trixie")


def _require_gimp() -> Path:
    root = _chroot()
    reason = None
    if not (root / "usr/bin/gimp-console-3.0").exists():
        reason = f"no GIMP 3 chroot at {root} (scripts/setup_gimp.sh)"
    elif os.geteuid() != 0:
        reason = "entering the GIMP 3 chroot needs root"
    if reason:
        if os.environ.get("TOUCHUP_REQUIRE_EDITORS") == "1":
            pytest.fail(reason + " and TOUCHUP_REQUIRE_EDITORS=1")
        pytest.skip(reason)
    return root


def _touchup(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GIMP3_", "TOUCHUP_"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "touchup.backend", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_install_into_real_gimp_registers_and_runs_then_uninstall_restores(
    tmp_path: Path, backend: str
) -> None:
    root = _require_gimp()
    inner = Path("/root/touchup-install-tests") / uuid.uuid4().hex[:10]
    host = root / inner.relative_to("/")
    profile_inner = inner / "profile"
    profile = host / "profile"
    (profile / "plug-ins" / "someone-else").mkdir(parents=True)
    (profile / "plug-ins" / "someone-else" / "readme.txt").write_text("not ours\n")
    before = tree_snapshot(profile / "plug-ins")  # GIMP itself writes the rest of the profile
    home = tmp_path / "home"  # the installer's own HOME (manifest, wheel cache), outside the chroot
    try:
        done = _touchup(
            "install",
            "--gimp",
            "--gimp-dir",
            str(profile),
            "--gimp-python",
            "3.13",
            "--vendor",
            "always",
            "--wheel-cache",
            str(WHEEL_CACHE),
            home=home,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "for Python 3.13" in done.stdout

        out_inner = inner / "result.json"
        script = (
            BATCH.replace("PROC", repr(PROC))
            .replace("ENDPOINT", repr(backend))
            .replace("OUT", repr(str(out_inner)))
        )
        (host / "batch.py").write_text(script)
        proc = subprocess.run(
            [
                "chroot",
                str(root),
                "env",
                "HOME=/root",
                "LANG=C.UTF-8",
                f"GIMP3_DIRECTORY={profile_inner}",
                "gimp-console-3.0",
                "-i",
                "--batch-interpreter=python-fu-eval",
                "-b",
                f"exec(open({str(inner / 'batch.py')!r}).read())",
                "--quit",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
        result_file = host / "result.json"
        assert result_file.exists(), (proc.stdout + proc.stderr)[-4000:]
        seen = json.loads(result_file.read_text())
        assert "error" not in seen, seen["error"]
        lib = profile_inner / "plug-ins" / "touchup-refine" / "lib"
        for key in ("zmq", "msgpack", "shared"):
            assert Path(seen[key]).is_relative_to(lib), (key, seen[key])
        assert seen["python"] == "3.13"
        assert seen["registered"], (proc.stdout + proc.stderr)[-4000:]
        assert seen["status"] == "success", (proc.stdout + proc.stderr)[-4000:]
        assert len(seen["layers"]) == 2 and seen["layers"][-1] == "photo"
        assert seen["layers"][0].startswith("Touchup")

        done = _touchup("uninstall", home=home)
        assert done.returncode == 0, done.stdout + done.stderr
        assert tree_snapshot(profile / "plug-ins") == before
        assert sorted(p.name for p in (profile / "plug-ins").iterdir()) == ["someone-else"]
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(host)], check=False)
