"""``touchup models list|download|verify`` against a local fake hub and a temporary cache.

The hub's download functions are replaced by ones that copy from a local "remote" folder while
honouring the same allow/ignore patterns (through huggingface_hub's own filter), so the test
sees which files a real download would fetch and where they would land.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tiny_models import require_diffusion, tiny_hub, use_hub, writable_copy

require_diffusion()
pytest.importorskip("huggingface_hub")

from touchup.backend.app.cli import main  # noqa: E402

pytestmark = pytest.mark.diffusion

KONTEXT = "black-forest-labs/FLUX.1-Kontext-dev"
RA_REPOS = [
    "Qwen/Qwen-Image-Edit-2511",
    "limuloo1999/RefineAnything",
    "lightx2v/Qwen-Image-Edit-2511-Lightning",
]


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    return tiny_hub(tmp_path_factory)


@pytest.fixture(autouse=True)
def own_config(tmp_path, monkeypatch):
    """No developer config (and its models_dir) leaks into these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))


def _snapshot(cache: Path, repo: str) -> Path:
    return next((cache / ("models--" + repo.replace("/", "--")) / "snapshots").iterdir())


@pytest.fixture
def remote(hub, tmp_path) -> Path:
    """What the hub would serve for the Kontext repository: the pipeline folders, plus a root
    single-file checkpoint and a pickle that a download must skip."""
    for repo in (*RA_REPOS, KONTEXT):
        shutil.copytree(_snapshot(hub, repo), tmp_path / "remote" / repo, symlinks=False)
    root = tmp_path / "remote" / KONTEXT
    (root / "flux1-kontext-dev.safetensors").write_bytes(b"\0" * 64)
    (root / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    return tmp_path / "remote"


@pytest.fixture
def fake_hub(remote, monkeypatch):
    """Replace huggingface_hub's downloads by copies from ``remote`` into an HF-cache layout."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects
    from tiny_pipelines import add_to_cache

    calls = []

    def snapshot_download(
        repo_id, cache_dir=None, allow_patterns=None, ignore_patterns=None, token=None, **kw
    ):
        calls.append(repo_id)
        source = remote / repo_id
        if not source.exists():
            raise huggingface_hub.errors.RepositoryNotFoundError.__new__(
                huggingface_hub.errors.RepositoryNotFoundError
            )
        files = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()]
        keep = list(
            filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        )
        staging = remote.parent / "staging" / repo_id
        for name in keep:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, staging / name)
        return str(add_to_cache(Path(cache_dir), repo_id, staging))

    def hf_hub_download(repo_id, filename, cache_dir=None, token=None, **kw):
        calls.append(f"{repo_id}/{filename}")
        staging = remote.parent / "staging" / repo_id
        staging.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote / repo_id / filename, staging / filename)
        return str(add_to_cache(Path(cache_dir), repo_id, staging) / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def test_list_shows_present_missing_sizes_and_licence_notes(hub, tmp_path, monkeypatch, capsys):
    cache = writable_copy(hub, tmp_path / "cache", ["Qwen/Qwen-Image-Edit-2509"])
    use_hub(monkeypatch, cache)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "present" in lines["qwen-image-edit-2509"]
    assert re.search(r"\d+\.\d (KiB|MiB)", lines["qwen-image-edit-2509"]), "size on disk"
    assert "missing" in lines["refine-anything"] and "missing" in lines["flux-kontext"]
    assert "gated: FLUX.1 [dev] Non-Commercial License" in out
    assert "touchup models download refine-anything" in out


def test_download_fetches_only_safetensors_pipeline_folders_then_list_and_verify_agree(
    fake_hub, tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "cache"
    use_hub(monkeypatch, cache)
    assert main(["models", "download", "flux-kontext"]) == 0
    assert fake_hub == [KONTEXT]
    snapshot = _snapshot(cache, KONTEXT)
    assert (snapshot / "model_index.json").exists()
    assert (snapshot / "transformer" / "diffusion_pytorch_model.safetensors").exists()
    assert not (snapshot / "flux1-kontext-dev.safetensors").exists(), (
        "the root checkpoint duplicates the folders"
    )
    assert not (snapshot / "transformer" / "diffusion_pytorch_model.bin").exists(), (
        "pickles are never fetched"
    )

    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    import json

    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["flux-kontext"]["present"] is True and rows["flux-kontext"]["bytes"] > 0
    assert main(["models", "verify", "flux-kontext"]) == 0
    assert "all files present and intact" in capsys.readouterr().out


def test_download_of_a_preset_with_loras_fetches_the_named_files(fake_hub, tmp_path, monkeypatch, capsys):
    """refine-anything = a pipeline + two single LoRA files; afterwards the engine can load it."""
    from touchup.backend.config import Config
    from touchup.backend.server import resolve_default_engine

    use_hub(monkeypatch, tmp_path / "cache")
    assert resolve_default_engine(Config()) == "classic"  # no weights yet: the CPU engine
    assert main(["models", "download", "refine-anything"]) == 0
    assert fake_hub == [
        "Qwen/Qwen-Image-Edit-2511",
        "limuloo1999/RefineAnything/Qwen-Image-Edit-2511-RefineAny.safetensors",
        "lightx2v/Qwen-Image-Edit-2511-Lightning/Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors",
    ]
    lightning = _snapshot(tmp_path / "cache", RA_REPOS[2])
    assert sorted(p.name for p in lightning.iterdir()) == [
        "Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors"
    ]
    from touchup.backend.models import first_present_preset

    assert first_present_preset() == "refine-anything"
    assert resolve_default_engine(Config()) == "qwen-edit"  # RefineAnything is the default once present


def test_gated_repo_without_access_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        err = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(err, "403 gated")
        raise err

    use_hub(monkeypatch, tmp_path / "cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    assert main(["models", "download", "flux-fill"]) == 1
    err = capsys.readouterr().err
    assert "black-forest-labs/FLUX.1-Fill-dev is gated" in err
    assert "hf auth login" in err and "touchup models download flux-fill" in err


def test_unknown_preset_is_refused(capsys):
    assert main(["models", "download", "flux-pro"]) == 2
    assert "unknown preset 'flux-pro'" in capsys.readouterr().err


def test_verify_finds_corrupt_truncated_and_missing_files(hub, tmp_path, monkeypatch, capsys):
    repos = [
        "Qwen/Qwen-Image-Edit-2511",
        "limuloo1999/RefineAnything",
        "lightx2v/Qwen-Image-Edit-2511-Lightning",
    ]
    cache = writable_copy(hub, tmp_path / "cache", repos)
    use_hub(monkeypatch, cache)
    assert main(["models", "verify", "refine-anything"]) == 0
    capsys.readouterr()

    snapshot = _snapshot(cache, repos[0])
    blob = (snapshot / "transformer" / "diffusion_pytorch_model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights: only the checksum can tell
    blob.write_bytes(bytes(data))
    lora = (_snapshot(cache, repos[1]) / "Qwen-Image-Edit-2511-RefineAny.safetensors").resolve()
    lora.write_bytes(lora.read_bytes()[:-100])
    (snapshot / "vae" / "config.json").unlink()

    assert main(["models", "verify", "refine-anything", "--quick"]) == 1
    quick = capsys.readouterr().out
    assert "truncated" in quick and "vae/config.json" in quick and "checksum" not in quick
    assert main(["models", "verify", "refine-anything"]) == 1
    full = capsys.readouterr().out
    assert "transformer/diffusion_pytorch_model.safetensors is corrupt (checksum mismatch)" in full
    assert "touchup models download refine-anything" in full


def test_models_folder_in_plain_layout_is_found(hub, tmp_path, capsys):
    """A ``models_dir`` holding ``org/name`` folders (``hf download --local-dir``) is used as is."""
    models_dir = tmp_path / "models"
    shutil.copytree(_snapshot(hub, KONTEXT), models_dir / KONTEXT, symlinks=False)
    assert main(["models", "--models-dir", str(models_dir), "list", "--json"]) == 0
    import json

    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["flux-kontext"]["present"] is True
