"""Damage estimation: what happened to the region, measured from its own pixels.

Each estimate is what one restoration step needs to decide whether to act and how strongly.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Immerkaer's noise-estimation kernel: it cancels image structure up to second order.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def estimate_noise(image: np.ndarray, region: np.ndarray | None = None, block: int = 16) -> float:
    """Noise standard deviation (units of [0, 1]) of the grey image within ``region``.

    Immerkaer's estimator per block, then a low percentile over the blocks mostly inside the
    region: noise is everywhere in the damaged region, texture is not, so its flattest blocks
    measure noise while textured ones would mistake detail for noise (and denoising would then
    erase it). The region matters: the untouched surroundings may be cleaner than the damage.
    """
    grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    response = np.abs(cv2.filter2D(grey, -1, _NOISE_KERNEL))
    h, w = (response.shape[0] // block) * block, (response.shape[1] // block) * block
    if h == 0 or w == 0:
        return float(np.sqrt(np.pi / 2) * response.mean() / 6.0)

    def per_block(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))

    blocks = per_block(response)
    if region is not None:
        inside = per_block(region.astype(np.float32)) > 0.75
        if inside.sum() >= 4:
            blocks = blocks[inside]
    return float(np.sqrt(np.pi / 2) * np.percentile(blocks, 20) / 6.0)


def blockiness(image: np.ndarray, period: int = 8) -> float:
    """How much stronger steps are across a ``period``-px grid than elsewhere (1: no blocking).

    JPEG's 8x8 blocks show as a comb in the column/row profile of absolute differences; the
    grid phase is unknown (crops start anywhere), so the strongest phase is taken.
    """
    grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    if min(grey.shape) < 4 * period:
        return 1.0
    cols = np.abs(np.diff(grey, axis=1)).mean(axis=0)
    rows = np.abs(np.diff(grey, axis=0)).mean(axis=1)
    ratios = []
    for profile in (cols, rows):
        n = (len(profile) // period) * period
        phases = profile[:n].reshape(-1, period).mean(axis=0)
        ratios.append(phases.max() / max(float(np.median(phases)), 1e-6))
    return float(min(ratios))
