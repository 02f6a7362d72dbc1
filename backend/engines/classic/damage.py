"""Damage estimation: what happened to the region, measured against its surroundings.

Without a reference the engine can only undo damage it can measure, and each measurement here
is what one restoration step needs to decide whether to act and how strongly:

* **blur** -- edge width by the re-blur gradient ratio (Zhuo & Sim, "Defocus map estimation
  from a single image", 2011): blurring an edge of width ``s`` again by ``r`` lowers its
  gradient peak by ``sqrt(s^2 + r^2) / s``, so the ratio gives ``s``. Measured on the
  region's edges and on the context's, whose width is what the photo's own optics and
  sampling give; the difference is the damage. Downsampling shows up here too (its loss of
  high frequencies widens edges like a blur of about half the factor).
* **blocking** -- JPEG's 8x8 grid as a comb in the profile of pixel steps;
* **noise** -- Immerkaer's estimator on the flattest blocks of the region.

Where the region's edges are no wider than the context's, the blur estimate is zero and the
restoration does nothing: "when unsure, do less".
"""

from __future__ import annotations

from dataclasses import dataclass

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


def blockiness(image: np.ndarray, period: int = 8, region: np.ndarray | None = None) -> float:
    """How much stronger steps are across a ``period``-px grid than elsewhere (1: no blocking).

    JPEG's 8x8 blocks show as a comb in the column/row profile of absolute differences; the
    grid phase is unknown (crops start anywhere), so the strongest phase is taken. With
    ``region``, only steps inside it count (the clean surroundings would dilute the comb).
    """
    grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    if min(grey.shape) < 4 * period:
        return 1.0
    inside = np.ones(grey.shape, bool) if region is None else region.astype(bool)
    ratios = []
    for axis in (1, 0):
        steps = np.abs(np.diff(grey, axis=axis))
        where = inside[:, 1:] & inside[:, :-1] if axis == 1 else inside[1:] & inside[:-1]
        weight = where.sum(axis=1 - axis).astype(np.float64)
        profile = (steps * where).sum(axis=1 - axis) / np.maximum(weight, 1)
        n = (len(profile) // period) * period
        if weight[:n].sum() < 16 * period:
            return 1.0
        sums = (profile[:n] * weight[:n]).reshape(-1, period).sum(axis=0)
        counts = weight[:n].reshape(-1, period).sum(axis=0)
        phases = sums / np.maximum(counts, 1)
        ratios.append(phases.max() / max(float(np.median(phases)), 1e-6))
    return float(min(ratios))


#: Re-blur scale (px) of the edge-width estimate.
REBLUR_SIGMA = 1.0
#: Fewest edge pixels that make a width estimate (fewer: "unsure", no blur assumed).
MIN_EDGE_PIXELS = 8
#: Edge width of a sharp photo's edges (sampling and optics), used when the context has no edges.
SHARP_EDGE_SIGMA = 0.6
#: The re-blur ratio underestimates wide edges a little (neighbouring edges and the Sobel
#: kernel's own smoothing); measured on Gaussian blurs of the evaluation's photos.
BLUR_CALIBRATION = 1.2


@dataclass(frozen=True)
class EdgeWidths:
    """Per-pixel edge width (Gaussian sigma, px) where ``edges`` is set, 0 elsewhere."""

    sigma: np.ndarray
    edges: np.ndarray

    def median(self, where: np.ndarray) -> float | None:
        sel = self.edges & where
        return float(np.median(self.sigma[sel])) if sel.sum() >= MIN_EDGE_PIXELS else None


def _gradient(grey: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))


def edge_widths(grey: np.ndarray, areas: list[np.ndarray], ignore: np.ndarray | None = None) -> EdgeWidths:
    """Edge widths by the re-blur gradient ratio at the Canny edges of each of ``areas``.

    Canny's thresholds are set per area from its own gradients: a blurred region has weaker
    edges than its sharp surroundings and would otherwise show none.
    """
    mag = _gradient(grey)
    mag_r = _gradient(cv2.GaussianBlur(grey, (0, 0), REBLUR_SIGMA))
    u8 = np.clip(np.rint(grey * 255), 0, 255).astype(np.uint8)
    edges = np.zeros(grey.shape, bool)
    for area in areas:
        if area.sum() < 16:
            continue
        high = max(float(np.percentile(mag[area], 85)) * 255, 4.0)
        edges |= (cv2.Canny(u8, 0.5 * high, high, L2gradient=True) > 0) & area
    ratio = mag / np.maximum(mag_r, 1e-6)
    edges &= (ratio > 1.001) & (mag > 0.01)
    if ignore is not None:
        edges &= ~ignore
    sigma = np.where(edges, REBLUR_SIGMA / np.sqrt(np.maximum(ratio * ratio - 1, 1e-6)), 0)
    return EdgeWidths(sigma.astype(np.float32), edges)


@dataclass(frozen=True)
class Blur:
    """The region's blur: ``sigma`` (px, 0 = none measured) beyond the context's edge width,
    and where inside the selection it is (``weight`` in [0, 1]: the selection also holds
    clean surroundings, which deconvolution would over-sharpen)."""

    sigma: float
    context_sigma: float
    weight: np.ndarray | None = None


def estimate_blur(grey: np.ndarray, region: np.ndarray, ignore: np.ndarray | None = None) -> Blur:
    """The region's blur against its surroundings (see the module's notes); edges where
    ``ignore`` is set are not measured (JPEG's block boundaries: steps the blur did not make)."""
    kernel = np.ones((5, 5), np.uint8)
    inner = cv2.erode(region.astype(np.uint8), kernel) > 0
    outer = ~cv2.dilate(region.astype(np.uint8), kernel).astype(bool)
    widths = edge_widths(grey, [inner, outer], ignore)
    inside, context = widths.median(inner), widths.median(outer)
    context = SHARP_EDGE_SIGMA if context is None else context
    if inside is None or inside <= context:
        return Blur(0.0, context)
    sigma = float(np.sqrt(inside * inside - context * context)) * BLUR_CALIBRATION
    # Where the blur is: the excess width of nearby edges (normalised convolution), relative
    # to the region's; far from any edge the region's own estimate holds.
    excess = np.where(widths.edges, np.maximum(widths.sigma**2 - context**2, 0), 0).astype(np.float32)
    scale = max(2.0, sigma)
    num = cv2.GaussianBlur(excess, (0, 0), scale)
    den = cv2.GaussianBlur(widths.edges.astype(np.float32), (0, 0), scale)
    local = np.where(den > 1e-3, num / np.maximum(den, 1e-6), (sigma / BLUR_CALIBRATION) ** 2)
    weight = np.clip(np.sqrt(local) * BLUR_CALIBRATION / sigma, 0.0, 1.0).astype(np.float32)
    return Blur(sigma, context, weight)
