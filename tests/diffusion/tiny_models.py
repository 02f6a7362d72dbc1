"""Tiny random diffusion models for the tests, in a temporary folder laid out like the HF cache.

The builders live in ``tiny_pipelines`` (``scripts/gpu_check.sh --tiny`` uses them too); this
module adds what only tests need: one shared build per test session, a copy that a test may
damage, and the environment that points the loading code at it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from touchup.backend.engines.diffusion.presets import PRESETS
from touchup.backend.models import repo_folder_name

#: Every preset of the table: each one must load and run through the real code.
ALL_PRESETS = list(PRESETS)

_BUILT: dict[str, Path] = {}


def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF-cache folder with tiny weights for every preset (built once per session)."""
    if "hub" not in _BUILT:
        from tiny_pipelines import build_tiny_hub

        root = tmp_path_factory.mktemp("tiny-hub")
        _BUILT["hub"] = build_tiny_hub(root / "cache", staging=root / "staging")
    return _BUILT["hub"]


def writable_copy(hub: Path, dest: Path, repos: list[str]) -> Path:
    """A copy of some repositories of ``hub`` (blobs included) that a test may break."""
    for repo in repos:
        name = repo_folder_name(repo)
        shutil.copytree(hub / name, dest / name, symlinks=True)
    return dest


def use_hub(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Point model lookup at ``cache``, offline, with the Qwen condition sizes shrunk for tiny runs."""
    from tiny_pipelines import patch_for_tiny_runs

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    patch_for_tiny_runs(monkeypatch.setattr)


def tiny_engine(preset: str, **options: Any):
    """The engine that runs ``preset``, configured for tiny models on the CPU."""
    from tiny_pipelines import tiny_options

    from touchup.backend.engines import create_engine

    family = PRESETS[preset].family
    return create_engine(family, {**tiny_options(family), **options})


def require_diffusion() -> None:
    """Skip without torch/diffusers on a developer machine; fail where they must be present.

    CI installs the diffusion extra and sets TOUCHUP_REQUIRE_EDITORS=1 (or
    TOUCHUP_REQUIRE_DIFFUSION=1), so a broken install there cannot pass as a skip.
    """
    from touchup.backend.engines.diffusion.engine import diffusion_libraries_missing

    missing = diffusion_libraries_missing()
    if not missing:
        return
    required = "1" in (os.environ.get("TOUCHUP_REQUIRE_DIFFUSION"), os.environ.get("TOUCHUP_REQUIRE_EDITORS"))
    if required:
        pytest.fail(f"diffusion tests need {', '.join(missing)} (install touchup[diffusion])", pytrace=False)
    pytest.skip(f"needs {', '.join(missing)}", allow_module_level=True)
