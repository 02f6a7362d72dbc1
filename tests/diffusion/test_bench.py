"""``touchup bench speed`` on tiny models: the benchmark runs end to end on the CPU and reports
every stage, for our pipeline and the seed recipe."""

from __future__ import annotations

import argparse
import json

import pytest
from tiny_models import require_diffusion, tiny_hub, use_hub
from tiny_pipelines import TINY_AREA, tiny_options

require_diffusion()

pytestmark = [pytest.mark.diffusion, pytest.mark.slow]


def test_bench_speed_reports_stages_for_ours_and_the_seed_recipe(tmp_path_factory, monkeypatch, capsys):
    from touchup.backend.engines.diffusion.presets import PRESETS
    from touchup.backend.tools import bench_speed

    use_hub(monkeypatch, tiny_hub(tmp_path_factory))
    args = argparse.Namespace(preset="flux-kontext", steps=2, repeat=1, cases="96@1024", json=True, tiny=True)
    assert bench_speed._run(args, PRESETS["flux-kontext"], tiny_options("flux-kontext"), TINY_AREA) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preset"] == "flux-kontext" and report["tiny"] is True
    assert report["memory_policy"] == "cpu" and report["device"] == "cpu"
    # (the 4096x4096 canvas case runs in scripts/gpu_check.sh --tiny, tested in test_memory.py)
    assert [r["case"] for r in report["results"]] == ["96x96 in 1024x1024"]
    for row in report["results"]:
        for recipe in ("ours", "seed"):
            stages = row[recipe]
            assert stages["total"] > 0 and stages["denoise"] > 0 and stages["vae_decode"] > 0
            assert stages["total"] >= stages["condition_encode"] + stages["denoise"] + stages["vae_decode"]
            assert 0 <= stages["overhead"] < stages["total"]
