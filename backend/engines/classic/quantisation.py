"""JPEG quantisation, measured from the decoded pixels: how hard, and which blocks.

A JPEG stores each 8x8 block's DCT coefficients as multiples of a step from its quantisation
table. Nearly every encoder (libjpeg, and all that copy it) scales the standard table of the
JPEG specification (Annex K) by one quality setting, so the decoded pixels give the quality
away: on the true block grid, the low-frequency coefficients of a damaged block sit within
rounding of multiples of that quality's steps, and no coarser table fits them. This measures

* the block grid's phase (crops start anywhere; the steps between blocks show where),
* the coarsest quality whose table explains the blocks, and
* which blocks it explains -- so restoration acts where the JPEG damage is, not on the clean
  surroundings a retoucher selected along with it.

A measurement, not a guess: when no table with a real step fits (an image that was never a
JPEG, or one resampled after it), the answer is None and the caller does less.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import fft

#: The JPEG specification's example luminance table (Annex K.1), which libjpeg scales.
STANDARD_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.float64,
)
BLOCK = 8
#: Coefficients tested: the 4x4 lowest frequencies (the rest are mostly quantised to zero and
#: fit any coarse table).
TESTED = 4
#: Mean squared distance (8-bit units) to the nearest multiples below which a block fits: the
#: decoder's rounding to 8-bit RGB leaves about 0.2.
FIT = 1.0
#: Share of the region's whole blocks that must fit (a generous selection holds clean blocks too).
MIN_SHARE = 0.2
MIN_BLOCKS = 8
#: Blocks on which the table is chosen.
SAMPLE_BLOCKS = 2048
#: A coarser table is preferred while it fits this share of what the best-fitting table fits.
NEAR_BEST = 0.9
#: Finest table tried: its lowest AC step must be a real step, or chance fits noise to it.
MIN_STEP = 8.0


def luma_table(quality: int) -> np.ndarray:
    """libjpeg's luminance table at ``quality`` (1-100)."""
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((STANDARD_LUMA * scale + 50.0) / 100.0), 1, 255)


@dataclass(frozen=True)
class Quantisation:
    """A measured JPEG compression of the region."""

    quality: int
    #: The table's lowest AC step, in [0, 1] luma units: the size of the detail JPEG removed.
    step: float
    #: Where the blocks fit the table, ``HxW`` bool (whole blocks on the measured grid).
    damaged: np.ndarray
    #: (x, y) of the first block boundary in the image.
    grid: tuple[int, int] = (0, 0)

    def boundaries(self) -> np.ndarray:
        """``HxW`` bool: the pixels either side of a block boundary, whose steps JPEG made
        (an edge measurement there would read the blocks' false sharpness)."""
        h, w = self.damaged.shape
        ox, oy = self.grid
        cols = ((np.arange(w) - ox) % BLOCK == 0) | ((np.arange(w) - ox) % BLOCK == BLOCK - 1)
        rows = ((np.arange(h) - oy) % BLOCK == 0) | ((np.arange(h) - oy) % BLOCK == BLOCK - 1)
        return rows[:, None] | cols[None, :]


def grid_phase(luma: np.ndarray, region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the first block boundary: where steps between pixels are strongest, mod 8."""
    phase = []
    for axis in (1, 0):
        steps = np.abs(np.diff(luma, axis=axis))
        inside = region[:, 1:] & region[:, :-1] if axis == 1 else region[1:] & region[:-1]
        profile = (steps * inside).sum(axis=1 - axis) / np.maximum(inside.sum(axis=1 - axis), 1)
        n = (len(profile) // BLOCK) * BLOCK
        phase.append((int(np.argmax(profile[:n].reshape(-1, BLOCK).mean(axis=0))) + 1) % BLOCK)
    return phase[0], phase[1]


def _blocks(plane: np.ndarray, ox: int, oy: int) -> np.ndarray:
    """The whole blocks of ``plane`` on the grid starting at (ox, oy): ``by x bx x 8 x 8``."""
    h, w = plane.shape
    by, bx = (h - oy) // BLOCK, (w - ox) // BLOCK
    cut = plane[oy : oy + by * BLOCK, ox : ox + bx * BLOCK]
    return cut.reshape(by, BLOCK, bx, BLOCK).transpose(0, 2, 1, 3)


def _fits(low: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Which blocks' low-frequency coefficients (``n x 4 x 4``) sit on multiples of ``steps``."""
    return ((low - steps * np.round(low / steps)) ** 2).mean(axis=(1, 2)) < FIT


def measure_quantisation(image: np.ndarray, region: np.ndarray) -> Quantisation | None:
    """The JPEG quantisation of ``image`` (float RGB in [0, 1]) inside ``region``, or None."""
    region = region.astype(bool)
    luma = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float64)
    if min(luma.shape) < 4 * BLOCK:
        return None
    ox, oy = grid_phase(luma, region)
    inside = _blocks(region.astype(np.float32), ox, oy).min(axis=(2, 3)) > 0
    if inside.sum() < MIN_BLOCKS:
        return None
    low = fft.dctn(_blocks(luma * 255.0 - 128.0, ox, oy)[inside], axes=(1, 2), norm="ortho")[
        :, :TESTED, :TESTED
    ]
    # The table is chosen on an even sample of the blocks (a megapixel holds 16,000), then
    # every block is tested against it.
    sample = low[np.linspace(0, len(low) - 1, min(len(low), SAMPLE_BLOCKS)).astype(int)]
    # The true table fits every damaged block; coarser ones fit only flat blocks by chance, and
    # finer ones fit as well only where their steps nearly divide the true steps (quality 49's
    # are a tenth of quality 5's). So: the coarsest table that fits nearly as many blocks as the
    # best one.
    shares: dict[int, float] = {}
    for quality in range(1, 100):
        table = luma_table(quality)
        if table[0, 1] < MIN_STEP:
            break
        shares[quality] = float(_fits(sample, table[:TESTED, :TESTED]).mean())
    top = max(shares.values(), default=0.0)
    if top < MIN_SHARE:
        return None
    quality = min(q for q, share in shares.items() if share >= NEAR_BEST * top)
    fits = _fits(low, luma_table(quality)[:TESTED, :TESTED])
    blocks = np.zeros(inside.shape, bool)
    blocks[inside] = fits
    damaged = np.zeros(region.shape, bool)
    by, bx = blocks.shape
    damaged[oy : oy + by * BLOCK, ox : ox + bx * BLOCK] = np.repeat(
        np.repeat(blocks, BLOCK, axis=0), BLOCK, axis=1
    )
    return Quantisation(quality, float(luma_table(quality)[0, 1]) / 255.0, damaged, (ox, oy))


def detail_free(image: np.ndarray, found: Quantisation) -> np.ndarray:
    """``HxW`` bool: pixels of whole blocks whose every AC coefficient was quantised to zero --
    blocks in which the JPEG kept no detail at all, only their mean."""
    ox, oy = found.grid
    luma = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float64)
    blocks = _blocks(luma * 255.0 - 128.0, ox, oy)
    levels = np.round(fft.dctn(blocks, axes=(2, 3), norm="ortho") / luma_table(found.quality))
    levels[:, :, 0, 0] = 0
    flat = ~np.abs(levels).any(axis=(2, 3))
    out = np.zeros(luma.shape, bool)
    by, bx = flat.shape
    out[oy : oy + by * BLOCK, ox : ox + bx * BLOCK] = np.repeat(np.repeat(flat, BLOCK, axis=0), BLOCK, axis=1)
    return out
