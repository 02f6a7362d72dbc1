"""Denoising: non-local means at the measured noise level, run in strips.

OpenCV's non-local means finds each patch's twins nearby and averages them, which removes
pixel noise while keeping lettering and texture that repeat. It runs in overlapping strips so
that cancellation is checked between them (one call on a megapixel would take seconds).
"""

from __future__ import annotations

import cv2
import numpy as np

from .cancel import Checkpoint

#: Patch and search windows, in pixels of the photo's own scale: lettering and texture there
#: are a few pixels wide, and larger patches find no twins for them.
NLM_TEMPLATE, NLM_SEARCH = 3, 11
#: Rows per strip (about 0.1 s of work on a 1000-px-wide image), and the overlap each side.
STRIP_ROWS, STRIP_OVERLAP = 128, NLM_SEARCH // 2 + NLM_TEMPLATE // 2 + 1
#: Filter strength (8-bit units) per unit of noise sigma, and its cap.
MAX_STRENGTH = 8.0


def denoise(image: np.ndarray, sigma: float, check: Checkpoint) -> np.ndarray:
    """``image`` (float RGB in [0, 1]) with noise of standard deviation ``sigma`` removed."""
    h = float(np.clip(sigma * 255, 0.0, MAX_STRENGTH))
    if h < 1.0:
        return image
    u8 = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    out = np.empty_like(u8)
    rows = u8.shape[0]
    for top in range(0, rows, STRIP_ROWS):
        check()
        lo, hi = max(0, top - STRIP_OVERLAP), min(rows, top + STRIP_ROWS + STRIP_OVERLAP)
        strip = cv2.fastNlMeansDenoisingColored(u8[lo:hi], None, h, h, NLM_TEMPLATE, NLM_SEARCH)
        out[top : min(rows, top + STRIP_ROWS)] = strip[top - lo : top - lo + min(STRIP_ROWS, rows - top)]
    return out.astype(np.float32) / 255
