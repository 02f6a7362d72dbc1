"""Reference transfer: the registered reference resampled onto the crop and given the photo's
tone and colour.

Tone matching fits one smooth monotonic curve per channel on pixels the user did not select
(where the reference and the original show the same thing), so the reference's lighting is
replaced by the photo's while its detail is kept.
"""

from __future__ import annotations

import cv2
import numpy as np

from .registration import Registration, local_scale, resize_map, warp_to_crop

MAX_TONE_SAMPLES = 60_000
#: Fewer context pixels than this and tone is fitted on the region's low frequencies instead.
MIN_TONE_PIXELS = 400


def fit_tone(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Per-channel polynomials mapping ``source`` values to ``target`` values.

    Fitted by least squares on the pixels where ``weights`` is true (quadratic when that stays
    monotonic over the observed range, linear otherwise), after dropping the worst 10 % of
    residuals once -- misregistered edges and specular spots should not bend the curve.
    """
    sel = np.flatnonzero(weights.ravel())
    if len(sel) > MAX_TONE_SAMPLES:
        sel = sel[:: len(sel) // MAX_TONE_SAMPLES + 1]
    return [fit_curve(source[..., c].ravel()[sel], target[..., c].ravel()[sel]) for c in range(3)]


def fit_curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A monotonic polynomial mapping ``x`` to ``y`` (see :func:`fit_tone`)."""
    if len(x) > MAX_TONE_SAMPLES:
        step = len(x) // MAX_TONE_SAMPLES + 1
        x, y = x[::step], y[::step]
    x, y = x.astype(np.float64), y.astype(np.float64)
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


def transfer(
    crop: np.ndarray, mask: np.ndarray, ref: np.ndarray, reg: Registration
) -> tuple[np.ndarray, np.ndarray]:
    """The reference warped onto the crop and tone-matched to it; and where it is valid."""
    h = reg.homography
    assert h is not None
    size = (crop.shape[1], crop.shape[0])
    cx, cy = size[0] / 2, size[1] / 2
    local = local_scale(h, cx, cy)
    if local > 1.5:
        # The reference is finer than the crop grid: shrink it first (area filter) so the
        # warp does not alias.
        f = 1.0 / local
        small = cv2.resize(ref, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        h = resize_map(ref.shape[1::-1], small.shape[1::-1]) @ h
        ref = small
    warped, valid = warp_to_crop(ref, h, size, cv2.INTER_CUBIC)
    warped = np.clip(warped, 0.0, 1.0)
    covered = np.clip((valid - 0.99) / 0.01, 0.0, 1.0).astype(np.float32)
    # Fully covered pixels. Not ``covered >= 1``: float rounding leaves it a hair below 1.
    full = valid >= 0.999
    # Tone: fit on context the user did not select, a few pixels away from the selection.
    near = cv2.dilate((mask > 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    context = ~near & full
    if context.sum() >= MIN_TONE_PIXELS:
        curves = fit_tone(warped, crop, context)
    else:
        sigma = max(2.0, min(size) / 40.0)
        curves = fit_tone(
            cv2.GaussianBlur(warped, (0, 0), sigma), cv2.GaussianBlur(crop, (0, 0), sigma), full
        )
    # (Not the region's own tones, even for colours the context lacks: damage such as a colour
    # cast lives exactly there, and the curve would learn it.)
    return apply_tone(warped, curves), covered
