"""Pixel operations of the ``classic`` engine: tone matching a reference, and reference-free
restoration.

Both are deliberately conservative. Tone matching fits one smooth monotonic curve per channel
on pixels the user did not select (where the reference and the original show the same thing),
so the reference's lighting is replaced by the photo's. Restoration only removes what it can
measure (noise/blocking, via non-local means at the estimated noise level) and then lifts fine
texture a little with an edge-preserving base, so strong edges get no halos.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..pipeline.focus import resize
from .classic_native import native_size, unenlarge

MAX_TONE_SAMPLES = 60_000
#: Non-local means patch and search windows, in pixels of the photo's own scale: lettering and
#: texture there are a few pixels wide, and larger patches find no twins for them.
NLM_TEMPLATE, NLM_SEARCH = 3, 11


def fit_tone(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Per-channel polynomials mapping ``source`` values to ``target`` values.

    Fitted by least squares on the pixels where ``weights`` is true (quadratic when that stays
    monotonic over the observed range, linear otherwise), after dropping the worst 10 % of
    residuals once -- misregistered edges and specular spots should not bend the curve.
    """
    sel = np.flatnonzero(weights.ravel())
    if len(sel) > MAX_TONE_SAMPLES:
        sel = sel[:: len(sel) // MAX_TONE_SAMPLES + 1]
    curves = []
    for c in range(3):
        x = source[..., c].ravel()[sel].astype(np.float64)
        y = target[..., c].ravel()[sel].astype(np.float64)
        curves.append(_robust_curve(x, y))
    return curves


def _robust_curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if len(x) < 16 or np.ptp(x) < 1e-3:
        shift = float(np.median(y - x)) if len(x) else 0.0
        return np.array([1.0, shift])
    coeffs = np.array([1.0, 0.0])
    for degree in (2, 1):
        coeffs = np.polyfit(x, y, degree)
        resid = np.abs(np.polyval(coeffs, x) - y)
        keep = resid <= np.quantile(resid, 0.9)
        if keep.sum() >= 16:
            coeffs = np.polyfit(x[keep], y[keep], degree)
        grid = np.linspace(x.min(), x.max(), 32)
        if np.all(np.diff(np.polyval(coeffs, grid)) >= 0):
            return coeffs
    return coeffs if coeffs[0] > 0 else np.array([1.0, float(np.median(y - x))])


def apply_tone(image: np.ndarray, curves: list[np.ndarray]) -> np.ndarray:
    out = np.empty_like(image)
    for c, coeffs in enumerate(curves):
        out[..., c] = np.polyval(coeffs, image[..., c])
    return np.clip(out, 0.0, 1.0)


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


def restore(
    image: np.ndarray,
    region: np.ndarray | None = None,
    amount: float = 0.25,
    noise_factor: float = 1.0,
    native: tuple[int, int] | None = None,
) -> np.ndarray:
    """Reference-free restoration of a float RGB image, at the scale its damage was made.

    An enlarged focus crop is taken back to the photo's own pixels (see ``classic_native``),
    restored there, and only the change is enlarged and added back, so it gets the same
    treatment as the photo itself would. ``native`` is that size when the caller knows it (the
    job pipeline does: ``params.extra["native_size"]``); otherwise it is detected.
    """
    h, w = image.shape[:2]
    size = tuple(native) if native else native_size(image)
    if size is None or size[0] >= w or size[1] >= h:  # not enlarged: restore as it is
        return restore_native(image, region, amount, noise_factor)
    small = unenlarge(image, *size)
    small_region = None
    if region is not None:
        small_region = cv2.resize(region.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    change = restore_native(small, small_region, amount, noise_factor) - small
    return np.clip(image + resize(change, w, h), 0.0, 1.0)


def restore_native(
    image: np.ndarray, region: np.ndarray | None = None, amount: float = 0.25, noise_factor: float = 1.0
) -> np.ndarray:
    """Denoise (non-local means at the measured noise level), then lift fine texture a
    little against an edge-preserving (bilateral) base; no sharpening over JPEG blocking."""
    sigma = estimate_noise(image, region)
    u8 = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    h = float(np.clip(sigma * 255 * noise_factor, 0.0, 8.0))
    if h >= 1.0:
        denoised = (
            cv2.fastNlMeansDenoisingColored(u8, None, h, h, NLM_TEMPLATE, NLM_SEARCH).astype(np.float32) / 255
        )
    else:
        denoised = image.astype(np.float32)
    if blockiness(image) > 1.2:
        amount = 0.0  # lifting "detail" here would lift the block edges
    if amount <= 0:
        return np.clip(denoised, 0.0, 1.0).astype(np.float32)
    # Detail = what an edge-preserving base lacks: texture and lettering, not the strong edges
    # (those stay in the base, so boosting the detail adds no halos around them).
    base = cv2.bilateralFilter(denoised, 0, 0.08, 1.5)
    sharpened = denoised + amount * (denoised - base)
    return np.clip(sharpened, 0.0, 1.0).astype(np.float32)
