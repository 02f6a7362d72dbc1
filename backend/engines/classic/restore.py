"""Pixel operations of the ``classic`` engine: tone matching a reference, and reference-free
restoration.

Both are deliberately conservative. Tone matching fits one smooth monotonic curve per channel
on pixels the user did not select (where the reference and the original show the same thing),
so the reference's lighting is replaced by the photo's. Restoration only removes what it can
measure (noise/blocking, via non-local means at the estimated noise level) and then lifts fine
texture a little with an edge-preserving base, so strong edges get no halos.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...focus import resize
from .damage import blockiness, estimate_noise
from .native import native_size, unenlarge

#: Non-local means patch and search windows, in pixels of the photo's own scale: lettering and
#: texture there are a few pixels wide, and larger patches find no twins for them.
NLM_TEMPLATE, NLM_SEARCH = 3, 11


def restore(
    image: np.ndarray,
    region: np.ndarray | None = None,
    amount: float = 0.25,
    noise_factor: float = 1.0,
    native: tuple[int, int] | None = None,
) -> np.ndarray:
    """Reference-free restoration of a float RGB image, at the scale its damage was made.

    An enlarged focus crop is taken back to the photo's own pixels (see ``classic_native``),
    restored there, and only the change is enlarged and added back, so it gets the same
    treatment as the photo itself would. ``native`` is that size when the caller knows it (the
    job pipeline does: ``params.extra["native_size"]``); otherwise it is detected.
    """
    h, w = image.shape[:2]
    size = tuple(native) if native else native_size(image)
    if size is None or size[0] >= w or size[1] >= h:  # not enlarged: restore as it is
        return restore_native(image, region, amount, noise_factor)
    small = unenlarge(image, *size)
    small_region = None
    if region is not None:
        small_region = cv2.resize(region.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    change = restore_native(small, small_region, amount, noise_factor) - small
    return np.clip(image + resize(change, w, h), 0.0, 1.0)


def restore_native(
    image: np.ndarray, region: np.ndarray | None = None, amount: float = 0.25, noise_factor: float = 1.0
) -> np.ndarray:
    """Denoise (non-local means at the measured noise level), then lift fine texture a
    little against an edge-preserving (bilateral) base; no sharpening over JPEG blocking."""
    sigma = estimate_noise(image, region)
    u8 = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    h = float(np.clip(sigma * 255 * noise_factor, 0.0, 8.0))
    if h >= 1.0:
        denoised = (
            cv2.fastNlMeansDenoisingColored(u8, None, h, h, NLM_TEMPLATE, NLM_SEARCH).astype(np.float32) / 255
        )
    else:
        denoised = image.astype(np.float32)
    if blockiness(image) > 1.2:
        amount = 0.0  # lifting "detail" here would lift the block edges
    if amount <= 0:
        return np.clip(denoised, 0.0, 1.0).astype(np.float32)
    # Detail = what an edge-preserving base lacks: texture and lettering, not the strong edges
    # (those stay in the base, so boosting the detail adds no halos around them).
    base = cv2.bilateralFilter(denoised, 0, 0.08, 1.5)
    sharpened = denoised + amount * (denoised - base)
    return np.clip(sharpened, 0.0, 1.0).astype(np.float32)
