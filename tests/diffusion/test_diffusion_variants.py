"""Variants on tiny diffusion models: seeds batched in one pipeline call give each seed's own
pixels, outside pixels stay, and the batch follows the memory planner.

Each family runs through the real loading path and ``run_variants`` (the pipeline the backend
runs), once with its seeds batched and once seed by seed, on the CPU.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_engines import make_job
from tiny_models import require_diffusion, tiny_engine, use_hub

require_diffusion()
pytest.importorskip("torch")
pytest.importorskip("diffusers")

from touchup.backend.engines.diffusion import memory  # noqa: E402
from touchup.backend.engines.diffusion.presets import PRESETS  # noqa: E402
from touchup.backend.pipeline.refine import run_refine, run_variants  # noqa: E402

pytestmark = [pytest.mark.diffusion, pytest.mark.slow]
#: One preset per pipeline family.
FAMILIES = ["refine-anything", "flux-kontext", "flux-fill", "sdxl-inpaint"]


@pytest.fixture
def tiny(hub, monkeypatch):
    use_hub(monkeypatch, hub)
    return hub


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    from tiny_models import tiny_hub

    return tiny_hub(tmp_path_factory)


def variants_job(preset: str, count: int, seed: int = 11):
    job = make_job(preset, seed=seed)
    job.params.variants = count
    return job


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_variant_i_equals_the_single_job_with_seed_plus_i(tiny, name):
    engine = tiny_engine(name, variant_batch=2)
    job = variants_job(name, 2)
    source, mask = job.source.copy(), job.mask.copy()
    delivered = []
    outcomes = run_variants(job, engine, on_variant=lambda o: delivered.append(o.variant))
    assert delivered == [0, 1]
    assert all(o.meta["seeds_per_call"] == 2 for o in outcomes), "both seeds ran in one call"
    outside = mask == 0
    for outcome in outcomes:
        assert np.array_equal(outcome.composite[outside], source[outside])
        alone = run_refine(make_job(name, seed=outcome.seed), engine)
        assert alone.meta["seeds_per_call"] == 1
        # The same noise, the same model: a batch's arithmetic may round differently from a
        # single image's (BLAS blocking), never by more than a level here and there.
        diff = np.abs(outcome.layer.astype(int) - alone.layer.astype(int))
        assert diff.max() <= 2 and (diff == 0).mean() > 0.95, (
            f"variant {outcome.variant} is not seed {outcome.seed}"
        )
    assert not np.array_equal(outcomes[0].layer, outcomes[1].layer)


def test_one_call_per_seed_encodes_the_prompt_once_and_gives_each_seed_exactly(tiny):
    """Where memory allows one seed per call, the text encoder still runs once per job, and
    each variant has exactly the pixels of its seed alone (no batch arithmetic involved)."""
    engine = tiny_engine("refine-anything", variant_batch=1)
    events = []
    outcomes = run_variants(variants_job("refine-anything", 3), engine, lambda *e: events.append(e))
    assert [o.meta["seeds_per_call"] for o in outcomes] == [1, 1, 1]
    assert [o.meta["prompt_encodings"] for o in outcomes] == [1, 1, 1]
    denoise = [(step, variant) for stage, step, _t, _p, variant in events if stage == "refine"]
    assert denoise == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2), (2, 2)]
    alone = run_refine(make_job("refine-anything", seed=outcomes[2].seed), engine)
    np.testing.assert_array_equal(outcomes[2].layer, alone.layer)


def test_the_planner_batches_what_fits_and_no_more():
    preset = PRESETS["flux-kontext"]
    area = preset.working.target_area
    cost = memory.policy_cost(preset, memory.Policy.GPU)
    per_image = max(preset.memory.activations, preset.memory.vae_decode)
    tight = memory.plan(preset, cost.vram_gb + 0.1, None)
    roomy = memory.plan(preset, cost.vram_gb + 10 * per_image, None)
    assert tight.policy is memory.Policy.GPU and roomy.policy is memory.Policy.GPU
    assert memory.variant_batch(preset, tight, 4, area) == 1
    assert memory.variant_batch(preset, roomy, 4, area) == 4
    assert memory.variant_batch(preset, roomy, 8, area) == 8
    # A quarter of the working area needs a quarter of the memory per image.
    mid = memory.plan(preset, cost.vram_gb + 2 * per_image, None)
    assert memory.variant_batch(preset, mid, 8, area) < memory.variant_batch(preset, mid, 8, area // 4)


def test_four_variants_cost_less_than_four_jobs(tiny, capsys):
    """The figure the report quotes: 4 variants in one job against 4 one-variant jobs."""
    engine = tiny_engine("refine-anything", variant_batch=4)
    run_refine(make_job("refine-anything"), engine)  # loaded and warm
    t0 = time.perf_counter()
    for i in range(4):
        run_refine(make_job("refine-anything", seed=20 + i), engine)
    separate = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_variants(variants_job("refine-anything", 4, seed=20), engine)
    together = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n4 separate jobs {separate:.2f} s, one job of 4 variants {together:.2f} s")
    assert together < separate
