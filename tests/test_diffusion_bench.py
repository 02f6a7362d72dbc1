"""``touchup bench speed --tiny``: the benchmark runs end to end on the CPU and reports every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tiny_models import require_diffusion

require_diffusion()

pytestmark = [pytest.mark.diffusion, pytest.mark.slow]


def test_bench_speed_tiny_reports_stages_for_ours_and_the_seed_recipe(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(tmp_path), TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "touchup.backend", "bench", "speed", "--preset", "flux-kontext", "--tiny"]
    cmd += ["--repeat", "1", "--cases", "96@1024,96@4096", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["preset"] == "flux-kontext" and report["tiny"] is True
    assert report["memory_policy"] == "cpu" and report["device"] == "cpu"
    assert [r["case"] for r in report["results"]] == ["96x96 in 1024x1024", "96x96 in 4096x4096"]
    for row in report["results"]:
        for recipe in ("ours", "seed"):
            stages = row[recipe]
            assert stages["total"] > 0 and stages["denoise"] > 0 and stages["vae_decode"] > 0
            assert stages["total"] >= stages["condition_encode"] + stages["denoise"] + stages["vae_decode"]
            assert 0 <= stages["overhead"] < stages["total"]
