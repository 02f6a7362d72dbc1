"""Reference-free restoration: undo what the damage measurements say, at the photo's scale.

The steps, each applied only when its measurement calls for it (see :mod:`.damage`):

1. JPEG blocking -> the quantisation table measured from the blocks (:mod:`.quantisation`)
   and deblocking at its step, on the blocks it explains (:mod:`.deblock`); otherwise pixel
   noise -> non-local means (:mod:`.denoise`);
2. blur, or the lost high frequencies of a downsampled region -> Wiener deconvolution with the
   measured Gaussian width (:mod:`.deconvolve`), weighted by where in the selection the blur
   is. Under JPEG the blur is measured between the block boundaries, and only when the table
   is fine enough to have kept edges (a coarse one widens them itself: unsure, so nothing).
   After deblocking or denoising the deconvolution is regularised more firmly, so the residue
   is not sharpened back.

An enlarged focus crop is taken back to the photo's own pixels first (:mod:`.native`), restored
there, and only the change is enlarged and added back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ...pipeline.focus import resize
from .cancel import Checkpoint, never
from .damage import blockiness, estimate_blur, estimate_noise
from .deblock import deblock
from .deconvolve import deconvolve
from .denoise import denoise
from .native import native_size, unenlarge
from .quantisation import measure_quantisation

#: Blockiness above which a region is treated as JPEG-damaged.
JPEG_BLOCKING = 1.2
#: Blur (px) below which deconvolution is not worth its risk, and the most it undoes.
MIN_BLUR, MAX_BLUR = 0.6, 6.0
#: Under JPEG, the quantisation's own smoothing of fine texture reads as up to about a pixel of
#: blur: only more than this is deconvolved.
MIN_BLUR_UNDER_JPEG = 1.2
#: Coarsest JPEG step (lowest AC, [0, 1] luma) at which the blur beneath the blocks is measured:
#: at quality 10 (0.22) it is, at quality 5 (0.43) every edge below a fifth of full contrast was
#: quantised away and the blocks' ramps are as wide as any blur.
MAX_TRUSTED_STEP = 0.25
#: Fewest unselected pixels that make a measurement of the surroundings.
MIN_CONTEXT_PIXELS = 1024
#: Wiener regularisation: for a clean blurred region, and after deblocking or denoising.
BALANCE, BALANCE_AFTER_CLEANUP = 0.02, 0.25


@dataclass
class Restoration:
    """The restored image and what was measured and done (for the result's metadata)."""

    image: np.ndarray
    steps: list[str] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)


def restore(
    image: np.ndarray,
    region: np.ndarray | None = None,
    native: tuple[int, int] | None = None,
    check: Checkpoint = never,
) -> Restoration:
    """Reference-free restoration of a float RGB image, at the scale its damage was made.

    ``native`` is the crop's size before enlargement when the caller knows it (the job
    pipeline does: ``EngineRequest.native_size``); otherwise it is detected.
    """
    h, w = image.shape[:2]
    if region is None:
        region = np.ones((h, w), bool)
    size = tuple(native) if native else native_size(image)
    if size is None or size[0] >= w or size[1] >= h:  # not enlarged: restore as it is
        return restore_native(image, region, check)
    check()
    small = unenlarge(image, *size)
    small_region = cv2.resize(region.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    done = restore_native(small, small_region, check)
    change = resize(done.image - small, w, h)
    done.image = np.clip(image + change, 0.0, 1.0)
    return done


def restore_native(image: np.ndarray, region: np.ndarray, check: Checkpoint = never) -> Restoration:
    """Restore ``image`` (float RGB in [0, 1], the photo's own pixels) inside ``region``."""
    region = region.astype(bool)
    out = Restoration(image.astype(np.float32))
    if region.sum() < 16:
        return out
    blocking = blockiness(image, region=region)
    noise = estimate_noise(image, region)
    # The photo's own grain is not damage: only noise beyond the surroundings' is removed.
    outside = ~region
    grain = estimate_noise(image, outside) if outside.sum() >= MIN_CONTEXT_PIXELS else 0.0
    noise = float(np.sqrt(max(noise * noise - grain * grain, 0.0)))
    out.measured.update(blocking=round(blocking, 3), noise=round(noise, 4))
    cleaned = False
    found = measure_quantisation(image, region) if blocking > JPEG_BLOCKING else None
    if found is not None:
        out.measured.update(jpeg_quality=found.quality, quantisation_step=round(found.step, 4))
    if blocking > JPEG_BLOCKING:
        out.image = deblock(out.image, blocking, region, found, check)
        out.steps.append("deblock")
        cleaned = True
    elif noise * 255 >= 1.0:
        out.image = denoise(out.image, noise, check)
        out.steps.append("denoise")
        cleaned = True
    check()
    grey = cv2.cvtColor(out.image, cv2.COLOR_RGB2GRAY)
    # Block boundaries are JPEG's own sharp steps: an edge measurement there reads the blocks,
    # not the blur. Only where the quantisation left detail to measure (a fine enough step) is
    # the blur read between them; a coarse table alone makes edges as wide as a blur does, and
    # deconvolving that would sharpen the blocks' ramps into artefacts.
    fine = found if found is not None and found.step <= MAX_TRUSTED_STEP else None
    blur = estimate_blur(grey, region, None if fine is None else fine.boundaries())
    out.measured.update(blur=round(blur.sigma, 3), context_edge=round(blur.context_sigma, 3))
    # Under a coarse table the measured width is the quantisation's as much as any blur's: unsure,
    # so no deconvolution.
    coarse = found is not None and fine is None
    least = MIN_BLUR if found is None else MIN_BLUR_UNDER_JPEG
    if blur.sigma >= least and blur.weight is not None and not coarse:
        check()
        sigma = min(blur.sigma, MAX_BLUR)
        sharp = deconvolve(out.image, region, sigma, BALANCE_AFTER_CLEANUP if cleaned else BALANCE, check)
        out.image = out.image + blur.weight[..., None] * (sharp - out.image)
        out.steps.append("deconvolve")
    out.image = np.clip(out.image, 0.0, 1.0).astype(np.float32)
    return out
