"""What a user installs: the wheel holds the product and none of the test scaffolding.

The wheel is built once per session from a clean copy of the checkout (a stale ``build/``
folder would leak deleted modules into it), then read as a zip and imported from its
unpacked files in a child interpreter, as an installed copy would be. That a plain backend
offers no test engine over the wire is checked in test_engine_registry.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Not part of a source tree a wheel is built from: environments, caches, build output.
SKIP = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)
# Scaffolding: the tiny diffusion models, vendored configs and everything else under tests/.
SCAFFOLDING = ("tiny_models", "tiny_pipelines", "diffusion_tiny", "conftest", "fake_backend")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(REPO, source, ignore=SKIP)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work),
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = work.glob("touchup-*.whl")
    return built


def test_the_wheel_holds_the_product_and_no_test_scaffolding(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    # The product is there (so the checks below read a real wheel, not an empty one) ...
    for part in (
        "touchup/shared/request.py",
        "touchup/backend/engines/diffusion/engine.py",
        "touchup/installer/commands.py",
        "touchup/plugin_krita/touchup_krita/jobs.py",
        "touchup/plugin_gimp/touchup-refine/touchup-refine.py",
    ):
        assert part in names, part
    # ... and nothing from tests/, no tiny model, no compiled leftovers, no checkout shim.
    leaked = [
        n
        for n in names
        if n.startswith("tests/")
        or "/tests/" in n
        or any(s in n for s in SCAFFOLDING)
        or "__pycache__" in n
        or n.endswith(".pyc")
        or n == "touchup/__init__.py"
    ]
    assert not leaked, leaked
    assert not [n for n in names if n.startswith("touchup/") and "/configs/" in n]


def test_the_installed_wheel_has_no_tiny_model_code(wheel: Path, tmp_path: Path) -> None:
    """Imported from the unpacked wheel (what pip installs): the product's engines load, the
    tiny-model modules do not exist, and the registry names no test engine."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import importlib.util, json, sys\n"
        "import touchup.backend.engines as e\n"
        "names = ['tiny_models', 'tiny_pipelines', 'tests.diffusion.tiny_models',\n"
        "         'touchup.backend.engines.diffusion_tiny', 'touchup.tests']\n"
        "def exists(n):\n"
        "    try:\n"
        "        return importlib.util.find_spec(n) is not None\n"
        "    except ModuleNotFoundError:  # its parent package is absent\n"
        "        return False\n"
        "found = [n for n in names if exists(n)]\n"
        "print(json.dumps({'file': e.__file__, 'engines': sorted(e.ENGINES), 'found': found}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["file"].startswith(str(site)), seen["file"]  # the wheel's copy, not the checkout
    assert seen["found"] == []
    assert not {"identity", "slow-test"} & set(seen["engines"]), seen["engines"]
