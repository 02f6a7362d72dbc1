"""The memory planner, the quantisation configs it asks for, the dtype choice and the extra's pins.

Component sizes are the real architectures' (re-computed here from the vendored configs on the
meta device, no weights); every hardware cell of the docs table gets a plan that fits by the
planner's own figures or a "does not fit: needs ..." answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import require_diffusion

from touchup.backend.engines.diffusion import memory
from touchup.backend.engines.diffusion.memory import SPECS, Policy
from touchup.backend.engines.diffusion.presets import PRESETS, Role

ROOT = Path(__file__).resolve().parents[2]
VRAM_CELLS = (8, 12, 16, 24, 48, 80)
RAM_CELLS = (16, 32, 64)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_hardware_cell_gets_a_plan_that_fits_or_says_what_it_needs(name):
    preset = PRESETS[name]
    fitted = 0
    for vram in VRAM_CELLS:
        for ram in RAM_CELLS:
            plan = memory.plan(preset, float(vram), float(ram))
            if plan.fits:
                fitted += 1
                assert plan.cost.vram_gb <= vram and plan.cost.ram_gb <= ram, (vram, ram, plan)
                assert plan.reason and plan.policy.value in plan.to_dict()["policy"]
            else:
                assert plan.reason.startswith("does not fit: needs "), plan.reason
                # Its own figures agree: no policy fits both limits.
                for policy in SPECS:
                    cost = memory.policy_cost(preset, policy)
                    assert cost.vram_gb > vram or cost.ram_gb > ram
    assert fitted >= 1
    biggest = memory.plan(preset, 80.0, 64.0)
    assert biggest.fits


def test_plans_follow_vram_and_host_ram():
    qwen = PRESETS["refine-anything"]
    assert memory.plan(qwen, 80.0, 64.0).policy == Policy.GPU
    # A 24 GB card with 32 GB of RAM: the bf16 model held in RAM for offloading does not fit,
    # the 4-bit model on the GPU does.
    assert memory.plan(qwen, 24.0, 32.0).policy == Policy.QUANT4_GPU
    # 16 GB card: the 4-bit components take turns on the GPU; the reason names what was missed.
    plan = memory.plan(qwen, 16.0, 32.0)
    assert plan.policy == Policy.QUANT4 and "gpu would need 64 GB VRAM" in plan.reason
    assert memory.plan(qwen, 12.0, 64.0).policy == Policy.GROUP_OFFLOAD
    assert not memory.plan(qwen, 8.0, 16.0).fits
    without_bnb = memory.plan(qwen, 24.0, 32.0, quantisation=False)
    assert not without_bnb.fits and "bitsandbytes" in without_bnb.reason
    assert memory.plan(PRESETS["sdxl-inpaint"], 12.0, 16.0).policy == Policy.GPU
    forced = memory.plan(qwen, 24.0, 32.0, forced=Policy.GPU)
    assert forced.forced and forced.policy == Policy.GPU and "expected to need" in forced.reason
    cpu = memory.plan(PRESETS["sdxl-inpaint"], None, 64.0)
    assert cpu.policy == Policy.CPU and cpu.dtype == "float32"


def test_offloading_counts_host_ram_and_streamed_offload_is_not_pinned_twice():
    qwen = PRESETS["refine-anything"]
    weights = sum(memory.component_gb(c.params, "bfloat16") for c in qwen.memory.components)
    group = memory.policy_cost(qwen, Policy.GROUP_OFFLOAD)
    # low_cpu_mem_usage: one host copy (~54 GB), not the two that stream pinning used to need.
    assert weights < group.ram_gb < 1.2 * weights
    assert memory.policy_cost(qwen, Policy.GPU).ram_gb < 10
    assert memory.policy_cost(qwen, Policy.GROUP_OFFLOAD).vram_gb < 8


def test_compute_dtype_falls_back_without_bfloat16():
    assert memory.compute_dtype(PRESETS["flux-kontext"], bf16_supported=False) == "float16"
    assert memory.compute_dtype(PRESETS["flux-kontext"], bf16_supported=True) == "bfloat16"
    # Qwen-Image is reported to overflow in float16: it stays bf16 (emulated, slow) instead.
    assert memory.compute_dtype(PRESETS["refine-anything"], bf16_supported=False) == "bfloat16"
    assert memory.compute_dtype(PRESETS["sdxl-inpaint"], bf16_supported=False) == "float16"
    assert memory.compute_dtype(PRESETS["flux-kontext"], False, override="float32") == "float32"


def test_the_diffusion_extra_pins_torch_with_out_of_memory_error_and_bitsandbytes():
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    reqs = {Requirement(r).name: Requirement(r) for r in extra["diffusion"]}
    # torch.OutOfMemoryError, which the engines catch, exists from torch 2.5 on.
    assert not reqs["torch"].specifier.contains("2.4.1")
    assert reqs["torch"].specifier.contains("2.5.0")
    bnb = reqs["bitsandbytes"]
    assert bnb.marker.evaluate({"sys_platform": "linux"}) and bnb.marker.evaluate({"sys_platform": "win32"})


# -- against the installed libraries ------------------------------------------------------------


@pytest.mark.diffusion
@pytest.mark.parametrize("policy", [p for p, s in SPECS.items() if s.needs_quantisation])
@pytest.mark.parametrize("name", ["refine-anything", "flux-kontext", "flux-fill", "sdxl-inpaint"])
def test_every_quantisation_config_builds_against_the_installed_libraries(name, policy):
    """Each config a policy can ask for is built (no GPU needed) and resolves, per component,
    to the bitsandbytes config of the library that loads that component."""
    require_diffusion()
    import torch

    from touchup.backend.engines.diffusion import loading

    preset = PRESETS[name]
    spec = SPECS[policy]
    config = loading.quantization_config(preset, spec, torch.bfloat16)
    for comp in preset.memory.components:
        if comp.role not in spec.quantise:
            assert comp.name not in (config.components_to_quantize or [])
            continue
        is_diffusers = comp.role == Role.DENOISER or comp.name == "vae"
        resolved = config._resolve_quant_config(is_diffusers=is_diffusers, module_name=comp.name)
        assert resolved is not None, comp.name
        module = type(resolved).__module__
        assert module.startswith("diffusers" if is_diffusers else "transformers"), module
        if spec.quantise[comp.role] == "nf4":
            assert resolved.load_in_4bit and resolved.bnb_4bit_quant_type == "nf4"
            assert resolved.bnb_4bit_compute_dtype == torch.bfloat16
        else:
            assert resolved.load_in_8bit and not resolved.load_in_4bit


@pytest.mark.diffusion
def test_a_quantisation_library_that_cannot_build_its_config_is_a_settings_error(monkeypatch):
    """Not "the model files are broken" (what a failing torchao config used to say)."""
    require_diffusion()
    import torch
    from diffusers import quantizers

    from touchup.backend.engines.diffusion import loading
    from touchup.shared.protocol import ErrorCode

    def broken(*_a, **_k):
        raise ImportError("bitsandbytes is not usable here")

    monkeypatch.setattr(quantizers, "PipelineQuantizationConfig", broken)
    with pytest.raises(loading.QuantisationUnavailable) as err:
        loading.quantization_config(PRESETS["flux-kontext"], SPECS[Policy.QUANT4], torch.bfloat16)
    assert err.value.code == ErrorCode.BAD_PARAMS and "bitsandbytes" in err.value.message


@pytest.mark.diffusion
@pytest.mark.slow
@pytest.mark.parametrize("name", ["refine-anything", "flux-kontext", "flux-fill", "sdxl-inpaint"])
def test_component_sizes_are_the_real_architectures(name):
    """The table's parameter counts equal the vendored real configs instantiated on the meta
    device (so the planner's figures are the real models', without weights)."""
    require_diffusion()
    import torch
    from tiny_pipelines import CONFIGS, real_config

    preset = PRESETS[name]
    for comp in preset.memory.components:
        folder = CONFIGS / preset.base.repo / comp.name
        config = real_config(preset.base.repo, comp.name)
        with torch.device("meta"):
            if "_class_name" in config:
                import diffusers

                cls = getattr(diffusers, config["_class_name"])
                model = cls.from_config(cls.load_config(str(folder)))
            else:
                import transformers

                cls = getattr(transformers, config["architectures"][0])
                model = cls._from_config(transformers.AutoConfig.from_pretrained(str(folder)))
        assert sum(p.numel() for p in model.parameters()) == comp.params, (name, comp.name)


def _plan_cli(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "touchup.backend", "models", "plan", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_models_plan_cli_answers_for_a_hypothetical_machine_and_every_cell():
    one = _plan_cli("--preset", "refine-anything", "--vram", "24", "--ram", "32")
    (row,) = one["plans"]
    assert row["preset"] == "refine-anything" and row["policy"] == "quant4_gpu" and row["fits"]
    assert row["cost"]["vram_gb"] <= 24 and row["cost"]["ram_gb"] <= 32 and row["cost"]["speed"] > 0
    table = _plan_cli("--table")
    cells = {(r["preset"], r["vram_gb"], r["ram_gb"]): r for r in table["plans"]}
    assert len(cells) == len(PRESETS) * len(VRAM_CELLS) * len(RAM_CELLS)
    for (_preset, vram, ram), r in cells.items():
        if r["fits"]:
            assert r["cost"]["vram_gb"] <= vram and r["cost"]["ram_gb"] <= ram
        else:
            assert r["reason"].startswith("does not fit: needs")


def test_the_docs_table_is_the_planners():
    """docs/diffusion.md carries the table ``touchup models plan --table --markdown`` prints."""
    done = subprocess.run(
        [sys.executable, "-m", "touchup.backend", "models", "plan", "--table", "--markdown"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    docs = (ROOT / "docs" / "diffusion.md").read_text()
    assert done.stdout.strip() in docs, "regenerate the table in docs/diffusion.md"


def test_doctor_shows_the_memory_plan():
    from touchup.installer.doctor import _plan_rows

    (row,) = _plan_rows()
    assert row.check == "memory plan"
    assert any(name in row.detail for name in PRESETS)
    vram, ram, _gpu = memory.this_machine()
    plan = memory.plan(PRESETS[row.detail.split(" on ")[0]], vram, ram)
    assert (plan.reason in row.detail) and (row.status == "ok") == plan.fits


@pytest.mark.diffusion
@pytest.mark.slow
def test_gpu_check_tiny_prints_a_row_per_preset():
    """``scripts/gpu_check.sh --tiny``: the GPU check's measurement code on tiny pipelines."""
    require_diffusion()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny", "--presets", "flux-kontext"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `flux-kontext`")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "cpu" and int(cells[3]) >= 1
    first_step, per_step, total, overhead = (float(cells[i]) for i in (4, 5, 6, 9))
    assert 0 < first_step <= total and per_step > 0 and overhead >= 0
