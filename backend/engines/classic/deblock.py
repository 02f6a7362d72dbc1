"""JPEG deblocking: smoothing away what the quantisation added, where it added it.

When the JPEG quantisation is measured (:mod:`.quantisation`), luma is smoothed by total
variation (scikit-image's Chambolle solver), whose weight is the measured quantisation step: a
coarse table left large false steps and flat blocks that only a firm smoothing removes, a fine
one little to remove. Blocks whose detail the table removed entirely are smoothed more firmly
than blocks that kept some. Total variation keeps the large jumps of real edges and lettering that a
Gaussian would blur. Chroma, stored at half resolution and quantised hardest, is low-passed
more firmly. Both act only on the blocks the table explains (and the pixels next to them):
the clean surroundings a retoucher selected along with the damage stay as they are.

Without a measured table (a region whose blocks fit none), an edge-preserving bilateral filter
with a range set by the blocking's strength is the fallback.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.restoration import denoise_tv_chambolle

from .cancel import Checkpoint, never
from .quantisation import Quantisation, detail_free

#: Spatial scale (px) of the fallback luma filter, and of the chroma low-pass.
LUMA_SPACE, CHROMA_SIGMA = 2.0, 1.5
#: Fallback bilateral range (in [0, 1] luma units) at strong blocking, and the blockiness that is "strong".
LUMA_RANGE, STRONG_BLOCKING = 0.1, 2.0
#: Total-variation weight per unit of the measured lowest AC step ([0, 1] luma units), and in
#: blocks where the JPEG kept no detail at all (every AC coefficient zero: only the block's
#: mean is known, so the smoothest fill is the best guess), blended over half a block (px).
TV_PER_STEP, TV_FLAT_PER_STEP, FLAT_BLEND = 0.07, 0.2, 4.0
#: Chroma low-pass (px) at a coarse table (lowest AC step 55/255: quality 10 and below), scaled
#: down with the step for finer tables (1 px at quality 30, half a pixel at 60).
CHROMA_SIGMA_COARSE, COARSE_STEP = 3.0, 55.0 / 255.0
#: Blocks cut by the selection's edge cannot be tested but are as damaged as their neighbours:
#: the tested blocks' area is widened by this much (px), with a soft edge.
REACH, SOFT_EDGE = 8, 2.0
#: Chambolle iterations: on the evaluation's JPEG regions 30 and 100 give the same result to
#: 0.01 dB; 40 costs a fifth of scikit-image's default 200.
TV_ITERATIONS = 40


def deblock(
    image: np.ndarray,
    blocking: float,
    region: np.ndarray | None = None,
    found: Quantisation | None = None,
    check: Checkpoint = never,
) -> np.ndarray:
    """``image`` (float RGB in [0, 1]) deblocked inside ``region``.

    ``found`` is the measured quantisation (:func:`.quantisation.measure_quantisation`);
    without it, ``blocking`` (:func:`.damage.blockiness`) sets the fallback filter's strength.
    """
    region = np.ones(image.shape[:2], bool) if region is None else region.astype(bool)
    ycc = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    if found is None:
        return _bilateral(ycc, blocking)
    check()
    luma = denoise_tv_chambolle(ycc[..., 0], weight=TV_PER_STEP * found.step, max_num_iter=TV_ITERATIONS)
    flat = cv2.GaussianBlur(detail_free(image, found).astype(np.float32), (0, 0), FLAT_BLEND)
    if flat.max() > 0:
        check()
        firm = denoise_tv_chambolle(
            ycc[..., 0], weight=TV_FLAT_PER_STEP * found.step, max_num_iter=TV_ITERATIONS
        )
        luma = luma + flat * (firm - luma)
    sigma = CHROMA_SIGMA_COARSE * min(1.0, found.step / COARSE_STEP)
    chroma = [cv2.GaussianBlur(ycc[..., c], (0, 0), sigma) for c in (1, 2)]
    smooth = np.dstack([luma.astype(np.float32), *chroma])
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * REACH + 1, 2 * REACH + 1))
    where = (cv2.dilate(found.damaged.astype(np.uint8), kernel) > 0) & region
    weight = cv2.GaussianBlur(where.astype(np.float32), (0, 0), SOFT_EDGE) * region
    out = ycc + weight[..., None] * (smooth - ycc)
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_YCrCb2RGB), 0.0, 1.0)


def _bilateral(ycc: np.ndarray, blocking: float) -> np.ndarray:
    """The fallback: bilateral luma and low-passed chroma, as strong as the blocking."""
    strength = float(np.clip((blocking - 1.0) / (STRONG_BLOCKING - 1.0), 0.0, 1.0))
    if strength <= 0:
        return np.clip(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB), 0.0, 1.0)
    luma = cv2.bilateralFilter(ycc[..., 0], 0, LUMA_RANGE * strength, LUMA_SPACE)
    chroma = [cv2.GaussianBlur(ycc[..., c], (0, 0), CHROMA_SIGMA * strength) for c in (1, 2)]
    return np.clip(cv2.cvtColor(np.dstack([luma, *chroma]), cv2.COLOR_YCrCb2RGB), 0.0, 1.0)
