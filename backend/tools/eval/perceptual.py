"""Learned perceptual metrics (LPIPS, DreamSim, DINOv2), used only when already installed.

They are what papers report, but each needs torch and network weights. ``touchup eval`` never
downloads anything: a metric whose package or weights are not on this machine is skipped,
and the report says which and why, so a table without them is never mistaken for one with.
All three compare the selection's bounding box of the result with the same box of the truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: name -> (label, direction: +1 higher is better, -1 lower is better)
PERCEPTUAL: dict[str, tuple[str, int]] = {
    "lpips": ("LPIPS inside", -1),
    "dreamsim": ("DreamSim inside", -1),
    "dino": ("DINOv2 similarity inside", 1),
}
DINO_MODEL = "facebook/dinov2-small"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def _torch() -> Any:
    import torch

    return torch


def _device(torch: Any) -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _tensor(torch: Any, img: np.ndarray, device: str, size: int | None = None) -> Any:
    """uint8 RGB -> 1x3xHxW float tensor in [0, 1] (optionally resized to ``size`` square)."""
    if size is not None:
        import cv2

        img = cv2.resize(
            img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
        )
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
    return t.to(device)


def _load_lpips() -> Callable[[np.ndarray, np.ndarray], float]:
    torch = _torch()
    import lpips

    hub = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if not hub.is_file():
        raise FileNotFoundError(f"AlexNet weights ({ALEXNET_FILE}) are not in the torch hub cache")
    device = _device(torch)
    model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    def compute(a: np.ndarray, b: np.ndarray) -> float:
        with torch.no_grad():
            ta, tb = (_tensor(torch, x, device) * 2 - 1 for x in (a, b))
            return float(model(ta, tb).item())

    return compute


def _load_dreamsim() -> Callable[[np.ndarray, np.ndarray], float]:
    torch = _torch()
    from dreamsim import dreamsim

    cache = Path(os.environ.get("DREAMSIM_CACHE", Path.home() / ".cache" / "dreamsim"))
    if not cache.is_dir() or not any(cache.iterdir()):
        raise FileNotFoundError(f"no DreamSim weights in {cache} (set DREAMSIM_CACHE to their folder)")
    device = _device(torch)
    model, _ = dreamsim(pretrained=True, cache_dir=str(cache), device=device)

    def compute(a: np.ndarray, b: np.ndarray) -> float:
        with torch.no_grad():
            return float(model(_tensor(torch, a, device, 224), _tensor(torch, b, device, 224)).item())

    return compute


def _load_dino() -> Callable[[np.ndarray, np.ndarray], float]:
    torch = _torch()
    from transformers import AutoImageProcessor, AutoModel

    # local_files_only: raises at once (no network) when the weights are not cached.
    processor = AutoImageProcessor.from_pretrained(DINO_MODEL, local_files_only=True)
    device = _device(torch)
    model = AutoModel.from_pretrained(DINO_MODEL, local_files_only=True).to(device).eval()

    def compute(a: np.ndarray, b: np.ndarray) -> float:
        with torch.no_grad():
            inputs = processor(images=[a, b], return_tensors="pt").to(device)
            cls = model(**inputs).last_hidden_state[:, 0]
            return float(torch.nn.functional.cosine_similarity(cls[0:1], cls[1:2]).item())

    return compute


_LOADERS: dict[str, Callable[[], Callable[[np.ndarray, np.ndarray], float]]] = {
    "lpips": _load_lpips,
    "dreamsim": _load_dreamsim,
    "dino": _load_dino,
}


class Perceptual:
    """The perceptual metrics available here; ``skipped`` maps the others to the reason."""

    def __init__(self, enabled: bool = True) -> None:
        self.metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
        self.skipped: dict[str, str] = {}
        for name, loader in _LOADERS.items():
            if not enabled:
                self.skipped[name] = "disabled (--no-perceptual)"
                continue
            try:
                self.metrics[name] = loader()
            except ImportError as exc:
                self.skipped[name] = f"package not installed ({exc.name or exc})"
            except Exception as exc:  # missing weights, offline hub, incompatible versions
                self.skipped[name] = (
                    f"weights not available locally ({str(exc).splitlines()[0].split('. ')[0][:120]})"
                )

    def score(self, result: np.ndarray, truth: np.ndarray, selection: np.ndarray) -> dict[str, float]:
        """Each available metric on the selection's bounding box (at least 32 px a side)."""
        if not self.metrics:
            return {}
        ys, xs = np.nonzero(selection)
        h, w = selection.shape[:2]
        cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
        half_h = max(16, (ys.max() - ys.min() + 1) // 2)
        half_w = max(16, (xs.max() - xs.min() + 1) // 2)
        y0, y1 = max(0, cy - half_h), min(h, cy + half_h)
        x0, x1 = max(0, cx - half_w), min(w, cx + half_w)
        a, b = result[y0:y1, x0:x1], truth[y0:y1, x0:x1]
        return {name: fn(a, b) for name, fn in self.metrics.items()}
