"""Deconvolution: undoing a measured blur with a regularised (Wiener) inverse filter.

The Wiener filter with a Laplacian regulariser (scikit-image's ``restoration.wiener``, the same
formula), computed with SciPy's real FFT on all channels at once and at a size the FFT is fast
for: scikit-image's version transforms at the image's own size, which for an awkward size
(a large prime factor) takes seconds on a megapixel instead of a tenth of one. One transform
costs the same for any blur width, and the regulariser keeps noise and JPEG residue from
being amplified without limit.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import fft

from .cancel import Checkpoint

#: The regulariser: a discrete Laplacian, as scikit-image's Wiener filter uses.
_LAPLACIAN = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)


def gaussian_psf(sigma: float) -> np.ndarray:
    """A normalised Gaussian point-spread function reaching 3.5 sigma."""
    radius = max(1, int(np.ceil(3.5 * sigma)))
    k = cv2.getGaussianKernel(2 * radius + 1, sigma)
    return (k @ k.T).astype(np.float32)


def _transfer_function(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The real FFT of ``kernel`` centred at the origin of a ``shape`` grid."""
    grid = np.zeros(shape, np.float32)
    kh, kw = kernel.shape
    grid[:kh, :kw] = kernel
    grid = np.roll(grid, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return fft.rfft2(grid)


def wiener(image: np.ndarray, psf: np.ndarray, balance: float, check: Checkpoint) -> np.ndarray:
    """Wiener-Hunt deconvolution of a float ``HxWxC`` image by ``psf`` (edges reflected)."""
    pad = psf.shape[0]
    h, w = image.shape[:2]
    shape = (fft.next_fast_len(h + 2 * pad, real=True), fft.next_fast_len(w + 2 * pad, real=True))
    padded = cv2.copyMakeBorder(
        image, pad, shape[0] - h - pad, pad, shape[1] - w - pad, cv2.BORDER_REFLECT_101
    )
    if padded.ndim == 2:
        padded = padded[:, :, None]
    otf = _transfer_function(psf, shape)
    reg = _transfer_function(_LAPLACIAN, shape)
    gain = (np.conj(otf) / (np.abs(otf) ** 2 + balance * np.abs(reg) ** 2)).astype(np.complex64)
    out = np.empty(image.shape if image.ndim == 3 else (*image.shape, 1), np.float32)
    for c in range(padded.shape[2]):
        check()
        spectrum = fft.rfft2(padded[:, :, c], workers=-1)
        out[:, :, c] = fft.irfft2(spectrum * gain, s=shape, workers=-1)[pad : pad + h, pad : pad + w]
    return out if image.ndim == 3 else out[:, :, 0]


def deconvolve(
    image: np.ndarray, region: np.ndarray, sigma: float, balance: float, check: Checkpoint
) -> np.ndarray:
    """``image`` (float RGB) with a Gaussian blur of ``sigma`` undone inside ``region``.

    The selection's surroundings are sharp while the region is blurred, so near the region's
    edge a plain deconvolution would "unblur" sharp pixels into ringing. The surroundings are
    blurred by the same kernel first: the whole observation then fits one blur model.
    """
    observed = image.astype(np.float32).copy()
    outside = ~region.astype(bool)
    observed[outside] = cv2.GaussianBlur(observed, (0, 0), sigma)[outside]
    return np.clip(wiener(observed, gaussian_psf(sigma), balance, check), 0.0, 1.0)
