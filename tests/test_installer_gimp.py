"""`touchup install --gimp` into a GIMP 3 profile, then real GIMP (3.0 and 3.2, Debian chroots) uses it.

The installer writes into a fresh profile inside the chroot, vendoring pyzmq/msgpack wheels
picked for that GIMP's own Python (not the test's Python). GIMP then runs in batch mode: the
Refine Selection procedure must be registered from the installed folder and, called on an
image with a selection against a real backend on the host, must add the refined layer. The
batch interpreter runs in the same Python as the plug-in, so it also checks that the vendored
zmq/msgpack and the protocol copy import from the plug-in's lib folder. ``touchup uninstall``
must then leave the profile exactly as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from editor_releases import GIMP, EditorRelease

from touchup.installer.install import tree_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))
from gimp_harness import open_gimp

REPO = Path(__file__).resolve().parents[1]
WHEEL_CACHE = REPO / ".cache" / "wheels"
DRIVER = REPO / "tests" / "gimp" / "installed_driver.py"

pytestmark = [pytest.mark.gimp, pytest.mark.slow]


def _touchup(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GIMP3_", "TOUCHUP_"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "touchup.backend", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("release", GIMP, ids=[r.id for r in GIMP])
def test_install_into_real_gimp_registers_and_runs_then_uninstall_restores(
    tmp_path: Path, backend: str, release: EditorRelease
) -> None:
    gimp = open_gimp(install=False, release=release)
    probe = subprocess.run(
        ["chroot", str(release.chroot), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    python = probe.stdout.strip()
    profile = gimp.path(gimp.profile)
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
            python,
            "--vendor",
            "always",
            "--wheel-cache",
            str(WHEEL_CACHE),
            home=home,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"for Python {python}" in done.stdout

        [seen], output = gimp.run("installed", {"endpoint": backend}, driver=DRIVER)
        assert "error" not in seen, seen["error"]
        lib = gimp.profile / "plug-ins" / "touchup-refine" / "lib"
        for key in ("zmq", "msgpack", "shared"):
            assert Path(seen[key]).is_relative_to(lib), (key, seen[key])
        assert seen["python"] == python
        assert seen["registered"], output[-4000:]
        assert seen["status"] == "success", output[-4000:]
        assert len(seen["layers"]) == 2 and seen["layers"][-1] == "photo"
        assert seen["layers"][0].startswith("Touchup")

        done = _touchup("uninstall", home=home)
        assert done.returncode == 0, done.stdout + done.stderr
        assert tree_snapshot(profile / "plug-ins") == before
        assert sorted(p.name for p in (profile / "plug-ins").iterdir()) == ["someone-else"]
    finally:
        gimp.cleanup()
