"""The photo's own pixels behind an enlarged focus crop.

Focus-and-Refine enlarges a small selection several times (``focus.resize``, bicubic) before an
engine sees it, while the damage the classic engine removes -- noise, blocking -- was made at
the photo's own scale. Enlarged, noise is smooth and spatially correlated, and non-local means
tuned for pixel noise no longer sees it; shrinking the crop by a guessed factor only blurs it
further. The engine is not told the factor, but the crop itself gives it away exactly:

* an enlargement by ``s`` interpolates every output pixel from the nearest input samples with
  weights that repeat every ``s`` pixels, so the crop's second differences carry a periodic
  pattern whose frequency is ``1/s`` (or ``1 - 1/s`` for ``s < 2``, aliased);
* each candidate input size then makes an exactly known linear map (``focus.resize`` of an
  identity matrix), and only the true size reproduces the crop to rounding error.

With the size known, least squares inverts the map and returns the photo's pixels within the
crop, which the engine restores as if it had the photo itself.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import splu

from ...pipeline.focus import resize

#: An enlargement smaller than this is treated as none: restoring at the crop's scale is as good.
MIN_ENLARGEMENT = 1.15
#: Residual of the exact fit, relative to the lines' own spread, below which a size is accepted
#: (float32 rounding leaves ~1e-7; a wrong size leaves 1e-4 and more).
EXACT = 1e-5
#: Lines (rows or columns) and their length used to test a candidate size.
_TEST_LINES = 32
_TEST_LENGTH = 256


def _enlargement_frequencies(lines: np.ndarray, count: int = 3) -> list[float]:
    """Frequencies (cycles per pixel) of the strongest periodic patterns along ``lines``' rows,
    strongest first (content such as lines of text can be periodic too)."""
    second = np.abs(lines[:, :-2] - 2 * lines[:, 1:-1] + lines[:, 2:]).mean(axis=0)
    second -= second.mean()
    spectrum = np.abs(np.fft.rfft(second * np.hanning(len(second))))
    freqs = np.fft.rfftfreq(len(second))
    spectrum[freqs < 0.02] = 0  # slow trends of the content, and enlargements beyond 50x
    return [float(freqs[i]) for i in np.argsort(spectrum)[::-1][:count]]


def _enlarging(native: int, size: int) -> np.ndarray:
    """``focus.resize`` along one axis as a ``size`` x ``native`` matrix (column j: sample j's trace)."""
    return resize(np.eye(native, dtype=np.float32), native, size).astype(np.float64)


def _reproduces(lines: np.ndarray, native: int) -> bool:
    """Whether ``lines`` (rows along the axis) are an enlargement of ``native`` samples.

    Tested on a window of the lines: every output pixel depends only on its nearest samples,
    so the window must be explained by the samples under it alone.
    """
    n = lines.shape[1]
    start = (n - min(n, _TEST_LENGTH)) // 2
    window = slice(start, start + min(n, _TEST_LENGTH))
    matrix = _enlarging(native, n)[window]
    used = np.flatnonzero(np.abs(matrix).sum(axis=0))
    target = lines[:, window].T.astype(np.float64)
    fit, *_ = np.linalg.lstsq(matrix[:, used], target, rcond=None)
    residual = np.median(np.abs(target - matrix[:, used] @ fit))
    spread = np.median(np.abs(target - np.median(target)))
    return bool(residual <= EXACT * max(spread, 1e-3))


def _native_length(lines: np.ndarray, prior: float | None = None) -> int | None:
    """How many samples ``lines`` (``rows x n``) were enlarged from, or None when not enlarged.

    ``prior`` is a first guess (the other axis's answer scaled to this one: the focus crop is
    enlarged by one factor on both axes, up to the rounding of its sides).
    """
    n = lines.shape[1]
    if n < 16:
        return None
    guesses = [] if prior is None else [prior]
    for f in _enlargement_frequencies(lines):
        guesses += [n * f, n * (1 - f)]  # enlarged more than twice, or less
    sample = lines[np.linspace(0, len(lines) - 1, min(_TEST_LINES, len(lines))).astype(int)]
    tried: set[int] = set()
    for guess in guesses:
        for native in sorted(range(round(guess) - 3, round(guess) + 4), key=lambda r: abs(r - guess)):
            if native in tried or not 2 <= native <= n / MIN_ENLARGEMENT:
                continue
            tried.add(native)
            if _reproduces(sample, native):
                return native
    return None


def native_size(image: np.ndarray) -> tuple[int, int] | None:
    """The (width, height) ``image`` was enlarged from by ``focus.resize``, or None."""
    grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    width = _native_length(grey)
    if width is None:
        return None
    height = _native_length(grey.T, prior=grey.shape[0] * width / grey.shape[1])
    return None if height is None else (width, height)


def _unenlarge_rows(values: np.ndarray, native: int) -> np.ndarray:
    """Least-squares samples (``native x ...``) whose enlargement along axis 0 is ``values``."""
    a = csr_matrix(_enlarging(native, values.shape[0]))
    flat = values.reshape(values.shape[0], -1).astype(np.float64)
    solved = splu((a.T @ a).tocsc()).solve(np.asarray(a.T @ flat))
    return solved.reshape(native, *values.shape[1:])


def unenlarge(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The ``width`` x ``height`` image whose ``focus.resize`` to ``image``'s size is ``image``
    (least squares, exact for a crop that was enlarged from that size)."""
    rows = _unenlarge_rows(np.swapaxes(image, 0, 1), width)  # along x first
    return np.ascontiguousarray(_unenlarge_rows(np.swapaxes(rows, 0, 1), height), dtype=np.float32)
