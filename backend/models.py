"""Model weights: where they are, whether they are whole, and how to get them.

Weights are looked up, never fetched, when a model loads: first in the configured models folder
(either a Hugging Face cache layout or plain ``org/name`` folders), then in the Hugging Face
cache. Only safetensors are accepted -- a pickle checkpoint can run code when loaded. Downloads
(``touchup models download``) go through huggingface_hub, which resumes interrupted files and
shows a progress bar; ``verify`` re-hashes the cached blobs against the names the hub gave them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared.protocol import ErrorCode
from .engines.diffusion.presets import IGNORE_PATTERNS, PICKLE_SUFFIXES, PRESETS, DiffusionPreset, ModelRef
from .errors import EngineError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def download_command(preset: str) -> str:
    """The exact command a user runs to fetch a preset's weights."""
    return f"touchup models download {preset}"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import) like the hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "huggingface" / "hub"


def repo_folder_name(repo: str) -> str:
    """The folder the Hugging Face cache keeps ``repo`` in (``models--org--name``)."""
    return "models--" + repo.replace("/", "--")


@dataclass
class Located:
    """Where one repository's files are on disk."""

    ref: ModelRef
    folder: Path
    files: list[Path] = field(default_factory=list)

    def file(self, name: str) -> Path:
        return self.folder / name


def _snapshot_in_cache(cache: Path, ref: ModelRef) -> Path | None:
    """The snapshot folder of ``ref`` in an HF-cache-layout folder, if it holds the key file."""
    repo_dir = cache / repo_folder_name(ref.repo)
    if not repo_dir.is_dir():
        return None
    key = ref.files[0] if ref.files else "model_index.json"
    snapshots: list[Path] = []
    ref_file = repo_dir / "refs" / "main"
    if ref_file.is_file():
        snapshots.append(repo_dir / "snapshots" / ref_file.read_text().strip())
    if (repo_dir / "snapshots").is_dir():
        snapshots += sorted((repo_dir / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((s for s in snapshots if (s / key).exists()), None)


def _plain_folder(models_dir: Path, ref: ModelRef) -> Path | None:
    """``models_dir/org/name`` or ``models_dir/name`` as made by ``hf download --local-dir``."""
    key = ref.files[0] if ref.files else "model_index.json"
    for candidate in (models_dir / ref.repo, models_dir / ref.repo.split("/")[-1]):
        if (candidate / key).exists():
            return candidate
    return None


def find_repo(
    ref: ModelRef, models_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> Path | None:
    """The folder holding ``ref``'s files, or None. Never touches the network."""
    if models_dir:
        md = Path(models_dir).expanduser()
        found = _snapshot_in_cache(md, ref) or _plain_folder(md, ref)
        if found:
            return found
    return _snapshot_in_cache(Path(cache_dir) if cache_dir else hf_cache_dir(), ref)


def _check_safetensors_only(folder: Path, ref: ModelRef) -> None:
    """Refuse a pipeline whose weights exist only as pickles (they can execute code on load)."""
    if ref.files:
        for name in ref.files:
            if not name.endswith(".safetensors"):
                raise EngineError(
                    f"{ref.repo}/{name} is not a safetensors file; Touchup loads safetensors only",
                    code=ErrorCode.MODEL_BROKEN,
                )
        return
    for component in sorted(p for p in folder.iterdir() if p.is_dir()):
        names = [p.name for p in component.iterdir()]
        has_safe = any(n.endswith(".safetensors") for n in names)
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles and not has_safe:
            raise EngineError(
                f"{ref.repo}: component '{component.name}' has only pickle weights ({pickles[0]}); "
                "Touchup refuses pickle checkpoints because loading them can run code. "
                "Use a safetensors copy of this model.",
                code=ErrorCode.MODEL_BROKEN,
            )


def check_config_files(folder: Path, ref: ModelRef) -> None:
    """Every JSON file of a pipeline must parse, and every component named in ``model_index.json`` exist."""
    if ref.files:
        return
    index = folder / "model_index.json"
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"{ref.repo}: model_index.json is unreadable ({exc}); run `touchup models verify` and re-download",
            code=ErrorCode.MODEL_BROKEN,
        ) from None
    for name, value in components.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if not (folder / name).is_dir():
            raise EngineError(
                f"{ref.repo}: component folder '{name}' named in model_index.json is missing",
                code=ErrorCode.MODEL_BROKEN,
            )
        has_weights = any((folder / name).glob("*.safetensors"))
        if has_weights and not (folder / name / "config.json").exists():
            raise EngineError(
                f"{ref.repo}: {name}/config.json is missing; run `touchup models verify` and re-download",
                code=ErrorCode.MODEL_BROKEN,
            )
    for path in folder.glob("*/*.json"):
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"{ref.repo}: {path.parent.name}/{path.name} is not valid JSON ({exc}); "
                "run `touchup models verify` and re-download",
                code=ErrorCode.MODEL_BROKEN,
            ) from None


def resolve(preset: DiffusionPreset, models_dir: str | Path | None = None) -> list[Located]:
    """Locate every repository of ``preset`` (base first) or raise MODEL_MISSING / MODEL_BROKEN."""
    located: list[Located] = []
    for ref in preset.models():
        folder = find_repo(ref, models_dir)
        if folder is None:
            where = f"{models_dir} or the Hugging Face cache" if models_dir else "the Hugging Face cache"
            raise EngineError(
                f"preset '{preset.name}' needs {ref.repo}, which is not in {where}; "
                f"run `{download_command(preset.name)}`",
                code=ErrorCode.MODEL_MISSING,
                detail=", ".join(ref.files) or None,
            )
        _check_safetensors_only(folder, ref)
        check_config_files(folder, ref)
        located.append(Located(ref, folder))
    return located


# -- listing ---------------------------------------------------------------------------------


def _files_of(folder: Path) -> list[Path]:
    """Every file of a snapshot, dangling links (blob gone) included so they can be reported."""
    return sorted(p for p in folder.rglob("*") if (p.is_file() or p.is_symlink()) and ".cache" not in p.parts)


def size_on_disk(folder: Path, ref: ModelRef) -> int:
    """Bytes the repository's files take (symlinks resolved to their blobs)."""
    paths = [folder / f for f in ref.files] if ref.files else _files_of(folder)
    return sum(p.resolve().stat().st_size for p in paths if p.exists())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def list_presets(models_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per preset: present or missing, size on disk, licence note for gated repos."""
    rows = []
    for preset in PRESETS.values():
        repos: list[dict[str, Any]] = []
        for ref in preset.models():
            folder = find_repo(ref, models_dir)
            repos.append(
                {
                    "repo": ref.repo,
                    "files": list(ref.files),
                    "present": folder is not None,
                    "bytes": size_on_disk(folder, ref) if folder else 0,
                    "gated": ref.gated,
                    "licence": ref.licence,
                }
            )
        rows.append(
            {
                "preset": preset.name,
                "engine": preset.family,
                "present": all(r["present"] for r in repos),
                "bytes": sum(r["bytes"] for r in repos),
                "repos": repos,
            }
        )
    return rows


def first_present_preset(models_dir: str | Path | None = None) -> str | None:
    """The most preferred preset whose weights are all here (refine-anything when present)."""
    for preset in PRESETS.values():
        if all(find_repo(ref, models_dir) for ref in preset.models()):
            return preset.name
    return None


# -- downloading -----------------------------------------------------------------------------


class DownloadError(Exception):
    """A download failed for a reason the user can fix (licence, token, name)."""


def download(
    preset_name: str,
    models_dir: str | Path | None = None,
    token: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Fetch every repository of a preset into the cache (or ``models_dir`` as a cache layout).

    huggingface_hub resumes partial files and draws a progress bar per file.
    """
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    preset = PRESETS[preset_name]
    cache_dir = str(Path(models_dir).expanduser()) if models_dir else str(hf_cache_dir())
    folders = []
    for ref in preset.models():
        log(f"{ref.repo}: {', '.join(ref.files) or 'pipeline'}")
        try:
            if ref.files:
                paths = [
                    huggingface_hub.hf_hub_download(ref.repo, name, cache_dir=cache_dir, token=token)
                    for name in ref.files
                ]
                folders.append(Path(paths[0]).parent)
            else:
                folders.append(
                    Path(
                        huggingface_hub.snapshot_download(
                            ref.repo,
                            cache_dir=cache_dir,
                            allow_patterns=ref.allow_patterns(),
                            ignore_patterns=IGNORE_PATTERNS,
                            token=token,
                        )
                    )
                )
        except GatedRepoError:
            raise DownloadError(
                f"{ref.repo} is gated: accept its licence at https://huggingface.co/{ref.repo} "
                "with your account, then log in with `hf auth login` (or set HF_TOKEN) and run "
                f"`{download_command(preset_name)}` again"
            ) from None
        except RepositoryNotFoundError:
            raise DownloadError(
                f"{ref.repo} was not found on the hub (or is private and needs a token: set HF_TOKEN)"
            ) from None
    return folders


# -- verifying -------------------------------------------------------------------------------


def _sha256(path: Path, progress: Callable[[int], object] | None = None) -> str:

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def verify(preset_name: str, models_dir: str | Path | None = None, quick: bool = False) -> list[str]:
    """Problems found with a preset's weights (empty: all good).

    Checks presence, that configs parse, that every safetensors header reads, and (unless
    ``quick``) that each large file's SHA-256 matches the blob name the hub cache stored it under.
    """
    from tqdm import tqdm

    problems: list[str] = []
    preset = PRESETS[preset_name]
    for ref in preset.models():
        folder = find_repo(ref, models_dir)
        if folder is None:
            problems.append(f"{ref.repo}: missing (run `{download_command(preset_name)}`)")
            continue
        try:
            _check_safetensors_only(folder, ref)
            check_config_files(folder, ref)
        except EngineError as exc:
            problems.append(exc.message)
        paths = [folder / f for f in ref.files] if ref.files else _files_of(folder)
        missing = [p for p in paths if not p.exists()]
        problems += [f"{ref.repo}: {p.relative_to(folder)} is missing" for p in missing]
        paths = [p for p in paths if p.exists()]
        for path in paths:
            if path.suffix == ".safetensors":
                problem = _check_safetensors_header(path)
                if problem:
                    problems.append(f"{ref.repo}: {path.relative_to(folder)}: {problem}")
        if quick:
            continue
        hashed = [p for p in paths if _SHA256.match(p.resolve().name)]
        total = sum(p.resolve().stat().st_size for p in hashed)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"hashing {ref.repo}", disable=total < 1 << 26
        ) as bar:
            for path in hashed:
                if _sha256(path.resolve(), bar.update) != path.resolve().name:
                    problems.append(
                        f"{ref.repo}: {path.relative_to(folder)} is corrupt (checksum mismatch); "
                        f"delete it and run `{download_command(preset_name)}`"
                    )
    return problems


def _check_safetensors_header(path: Path) -> str | None:
    """Whether a safetensors file's header parses and its data fits in the file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "truncated"
            n = int.from_bytes(head, "little")
            if n <= 0 or n > 100 * 1024 * 1024:
                return "not a safetensors file"
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if path.stat().st_size < 8 + n + end:
            return "truncated (download incomplete?)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable ({exc})"
    return None
