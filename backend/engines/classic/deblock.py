"""JPEG deblocking: smoothing the 8x8 grid's steps and the ringing around edges.

Luma gets an edge-preserving (bilateral) filter whose range is set by the blocking's strength:
block steps are small jumps between flat blocks and are smoothed, real edges are large and
kept. JPEG stores colour at half resolution and quantises it hardest, so chroma carries
little true detail and is low-passed more firmly.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Spatial scale (px) of the luma filter, and of the chroma low-pass.
LUMA_SPACE, CHROMA_SIGMA = 2.0, 1.5
#: Bilateral range (in [0, 1] luma units) at strong blocking, and the blockiness that is "strong".
LUMA_RANGE, STRONG_BLOCKING = 0.1, 2.0


def deblock(image: np.ndarray, blocking: float) -> np.ndarray:
    """``image`` (float RGB in [0, 1]) deblocked; ``blocking`` is :func:`.damage.blockiness`."""
    strength = float(np.clip((blocking - 1.0) / (STRONG_BLOCKING - 1.0), 0.0, 1.0))
    if strength <= 0:
        return image
    ycc = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    luma = cv2.bilateralFilter(ycc[..., 0], 0, LUMA_RANGE * strength, LUMA_SPACE)
    chroma = [cv2.GaussianBlur(ycc[..., c], (0, 0), CHROMA_SIGMA * strength) for c in (1, 2)]
    return np.clip(cv2.cvtColor(np.dstack([luma, *chroma]), cv2.COLOR_YCrCb2RGB), 0.0, 1.0)
