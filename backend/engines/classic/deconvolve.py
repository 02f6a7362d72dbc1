"""Deconvolution: undoing a measured blur with a regularised (Wiener) inverse filter.

scikit-image's Wiener filter with its Laplacian regulariser: one FFT per channel, so it costs
the same for any blur width, and the regulariser keeps noise and JPEG residue from being
amplified without limit.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.restoration import wiener

from .cancel import Checkpoint


def gaussian_psf(sigma: float) -> np.ndarray:
    """A normalised Gaussian point-spread function reaching 3.5 sigma."""
    radius = max(1, int(np.ceil(3.5 * sigma)))
    k = cv2.getGaussianKernel(2 * radius + 1, sigma)
    return (k @ k.T).astype(np.float64)


def deconvolve(
    image: np.ndarray, region: np.ndarray, sigma: float, balance: float, check: Checkpoint
) -> np.ndarray:
    """``image`` (float RGB) with a Gaussian blur of ``sigma`` undone inside ``region``.

    The selection's surroundings are sharp while the region is blurred, so near the region's
    edge a plain deconvolution would "unblur" sharp pixels into ringing. The surroundings are
    blurred by the same kernel first: the whole observation then fits one blur model.
    """
    psf = gaussian_psf(sigma)
    pad = psf.shape[0]
    observed = image.astype(np.float32).copy()
    outside = ~region.astype(bool)
    observed[outside] = cv2.GaussianBlur(observed, (0, 0), sigma)[outside]
    out = np.empty_like(observed)
    for c in range(observed.shape[2]):
        check()
        channel = np.pad(observed[..., c].astype(np.float64), pad, mode="reflect")
        out[..., c] = wiener(channel, psf, balance, clip=False)[pad:-pad, pad:-pad]
    return np.clip(out, 0.0, 1.0)
