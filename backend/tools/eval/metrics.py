"""Scores of one refined document against its input and ground truth.

All images are uint8 RGB of one size; ``selection`` is the user's mask (``HxW``, any dtype,
0 = not selected). The scores answer what a retoucher would check:

* outside the selection -- did anything change? (``out_changed`` must be 0; ``out_psnr`` and
  ``out_ssim`` against the *input*, because the promise is "untouched", not "like the truth");
* inside -- is the region closer to the truth? (``in_psnr``, ``in_ssim``, ``in_mse``);
* at the edge -- is there a visible seam or colour step? (``seam``, ``color_shift``);
* detail -- is it as crisp as the truth, not mushy and not noisy? (``sharpness``).

PSNR of identical images is reported as :data:`PSNR_CAP` rather than infinity, so averages
stay finite and tables stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

#: PSNR (dB) reported for identical pixels.
PSNR_CAP = 100.0
#: Scale (px) of the local means on either side of the selection edge that the seam compares.
SEAM_SIGMA = 2.0
#: Width (px) of the band just inside the selection edge in which colour shift is measured.
COLOR_BAND = 6
#: One grey level: the floor that keeps ratios finite on flat images.
_LEVEL = 1.0 / 255.0

#: name -> (label, direction: +1 higher is better, -1 lower is better, 0 closer to 1 is better)
METRICS: dict[str, tuple[str, int]] = {
    "out_changed": ("changed px outside", -1),
    "out_psnr": ("PSNR outside (dB)", 1),
    "out_ssim": ("SSIM outside", 1),
    "in_psnr": ("PSNR inside (dB)", 1),
    "in_ssim": ("SSIM inside", 1),
    "in_mse": ("masked MSE", -1),
    "seam": ("seam step", -1),
    "color_shift": ("edge ΔE2000", -1),
    "sharpness": ("sharpness (1 = as truth)", 0),
}


@dataclass(frozen=True)
class Regions:
    """The pixel sets the metrics look at, derived once per case from the selection."""

    inside: np.ndarray  # selection > 0
    outside: np.ndarray  # selection == 0: must stay bit-identical
    edge: np.ndarray  # selected pixels with an unselected 4-neighbour
    inner_band: np.ndarray  # selected pixels within COLOR_BAND of the edge

    @classmethod
    def from_selection(cls, selection: np.ndarray) -> Regions:
        inside = np.asarray(selection) > 0
        if inside.ndim == 3:
            inside = inside[:, :, 0]
        sel = inside.astype(np.uint8)
        # OpenCV's morphology ignores the image border, so a selection touching the image edge
        # has no edge there (there is nothing on the other side to be seamless with).
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        return cls(
            inside=inside,
            outside=~inside,
            edge=inside & (cv2.erode(sel, cross) == 0),
            inner_band=inside & (cv2.erode(sel, _disc(COLOR_BAND)) == 0),
        )


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0


def changed_pixels(result: np.ndarray, reference: np.ndarray, where: np.ndarray) -> int:
    """How many pixels in ``where`` differ from ``reference`` in any channel."""
    differs = np.any(result != reference, axis=-1) if result.ndim == 3 else result != reference
    return int(np.count_nonzero(differs & where))


def masked_mse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Mean squared error over the pixels in ``where``, on a [0, 1] scale (NaN if empty)."""
    if not where.any():
        return float("nan")
    diff = _float(a[where]) - _float(b[where])
    return float(np.mean(diff * diff))


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR (dB, peak 1) over the pixels in ``where``; :data:`PSNR_CAP` when they are equal."""
    mse = masked_mse(a, b, where)
    if np.isnan(mse):
        return mse
    if mse == 0:
        return PSNR_CAP
    return float(min(PSNR_CAP, 10.0 * np.log10(1.0 / mse)))


def _bbox(where: np.ndarray, pad: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(where)
    h, w = where.shape
    return (
        slice(max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)),
        slice(max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)),
    )


def ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Mean SSIM (7x7 windows, per channel) over the pixels in ``where``.

    The SSIM map is 1 wherever a pixel's whole window is identical in both images, so it is
    only computed around pixels that differ: scoring the untouched outside of a large
    photo costs as little as scoring a small region.
    """
    n = int(np.count_nonzero(where))
    if n == 0:
        return float("nan")
    differs = np.any(a != b, axis=-1)
    near = cv2.dilate(differs.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    roi = where & near
    if not roi.any():
        return 1.0
    ys, xs = _bbox(roi, 8)
    a_c, b_c = a[ys, xs], b[ys, xs]
    if min(a_c.shape[:2]) < 7:  # too small for a 7x7 window: use the whole image instead
        ys, xs = slice(None), slice(None)
        a_c, b_c = a, b
    _, smap = structural_similarity(a_c, b_c, channel_axis=2, data_range=255, full=True)
    local = smap.mean(axis=2)[roi[ys, xs]]
    return float((local.sum() + (n - roi.sum())) / n)


def _side_means(img: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local means of ``img`` over the selected and the unselected pixels near each pixel.

    Normalised convolution with a Gaussian of :data:`SEAM_SIGMA` px: each side is averaged
    only over its own pixels, so the two means straddle the edge without mixing.
    """
    m = inside.astype(np.float32)[:, :, None]

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), SEAM_SIGMA).reshape(x.shape)

    w_in, w_out = blur(m), blur(1.0 - m)
    mean_in = blur(img * m) / np.maximum(w_in, 1e-6)
    mean_out = blur(img * (1.0 - m)) / np.maximum(w_out, 1e-6)
    return mean_in, mean_out


def seam_score(result: np.ndarray, truth: np.ndarray, regions: Regions) -> float:
    """The colour step a method adds across the selection edge, relative to the truth's own.

    Along the edge, the jump of the error image (result - truth) from just outside to just
    inside is measured (local means of each side, RGB distance) and divided by the mean jump
    of the clean photo across the same edge (at least one grey level). 0 = no added step; a
    pasted patch whose tone differs from its surroundings scores high, more so on a flat
    background than on a busy texture, as a viewer would see it.
    """
    edge = regions.edge
    if not edge.any():
        return float("nan")
    ys, xs = _bbox(edge, round(4 * SEAM_SIGMA))
    inside = regions.inside[ys, xs]
    t = _float(truth[ys, xs])
    e_in, e_out = _side_means(_float(result[ys, xs]) - t, inside)
    t_in, t_out = _side_means(t, inside)
    on_edge = edge[ys, xs]
    added = np.linalg.norm(e_in - e_out, axis=-1)[on_edge].mean()
    natural = np.linalg.norm(t_in - t_out, axis=-1)[on_edge].mean()
    return float(added / max(natural, _LEVEL))


def color_shift(result: np.ndarray, truth: np.ndarray, regions: Regions) -> float:
    """Mean CIEDE2000 colour difference to the truth in the band just inside the selection."""
    band = regions.inner_band
    if not band.any():
        return float("nan")
    lab_res = rgb2lab(_float(result[band])[:, None, :])
    lab_truth = rgb2lab(_float(truth[band])[:, None, :])
    return float(np.mean(deltaE_ciede2000(lab_res, lab_truth)))


def high_frequency_energy(img: np.ndarray, where: np.ndarray) -> float:
    """Mean squared Laplacian of the luminance over ``where`` (fine detail and noise)."""
    ys, xs = _bbox(where, 2)
    grey = cv2.cvtColor(_float(img[ys, xs]), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    return float(np.mean(lap[where[ys, xs]] ** 2))


def sharpness(result: np.ndarray, truth: np.ndarray, regions: Regions) -> float:
    """High-frequency energy inside the selection relative to the truth's (1 = as crisp).

    Below 1 is blurrier than the truth, above 1 is over-sharpened or noisy.
    """
    if not regions.inside.any():
        return float("nan")
    floor = _LEVEL * _LEVEL
    return float(
        (high_frequency_energy(result, regions.inside) + floor)
        / (high_frequency_energy(truth, regions.inside) + floor)
    )


def score(result: np.ndarray, image: np.ndarray, truth: np.ndarray, regions: Regions) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one refined document."""
    return {
        "out_changed": changed_pixels(result, image, regions.outside),
        "out_psnr": psnr(result, image, regions.outside),
        # Windows straddling the edge would see the (allowed) change inside; compare the outside
        # alone, as masked-image metrics do, so "nothing changed" scores exactly 1.
        "out_ssim": ssim(np.where(regions.outside[:, :, None], result, image), image, regions.outside),
        "in_psnr": psnr(result, truth, regions.inside),
        "in_ssim": ssim(result, truth, regions.inside),
        "in_mse": masked_mse(result, truth, regions.inside),
        "seam": seam_score(result, truth, regions),
        "color_shift": color_shift(result, truth, regions),
        "sharpness": sharpness(result, truth, regions),
    }
