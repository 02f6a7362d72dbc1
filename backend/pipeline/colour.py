"""The sRGB transfer function (IEC 61966-2-1) between linear light and sRGB-encoded values.

Why: every engine's model was trained on sRGB-encoded pictures, but a linear document (Krita's
scRGB float, GIMP's linear precision) holds light intensities; fed as they are, mid-tones reach
the model about 2.5 stops too dark and it "corrects" them. The job pipeline therefore encodes
the focus crop and the references of a ``linear`` request before the engine and decodes the
engine's output before paste-back (see ``refine.py``). Neither OpenCV nor scikit-image exposes
the bare transfer function (scikit-image applies it only inside its XYZ conversions, which the
tests use as the independent reference), so the two formulas are written here.

Both functions are extended the way scRGB documents need: the curve continues above 1 and is
mirrored below 0 (``f(-x) = -f(x)``), so HDR highlights and out-of-gamut negatives survive the
round trip instead of being clipped.
"""

from __future__ import annotations

import numpy as np

from ...shared.protocol import Transfer
from .imaging import to_float

#: IEC 61966-2-1 constants: linear segment slope, breakpoints and the power-law segment.
_SLOPE = 12.92
_LINEAR_BREAK = 0.0031308  # linear-light value where the power law takes over
_ENCODED_BREAK = 0.04045  # the same point in encoded values (12.92 * 0.0031308, rounded)
_GAMMA = 2.4
_A = 0.055

__all__ = ["Transfer", "decode_srgb", "encode_srgb", "from_engine", "to_engine"]


def encode_srgb(linear: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sRGB-encoded float32 values of linear-light ``linear`` (any dtype; integers map to [0, 1]).

    ``out`` may be ``linear`` itself (float32) to convert in place, as the pipeline does with
    the crops it owns.
    """
    x = to_float(linear)
    mag = np.abs(x)
    low = mag <= np.float32(_LINEAR_BREAK)
    p = np.maximum(mag, np.float32(_LINEAR_BREAK))
    np.power(p, np.float32(1.0 / _GAMMA), out=p)
    # 1.055 p - 0.055 written as p + 0.055 (p - 1), so that 1 encodes to exactly 1 in float32.
    curve = p - np.float32(1.0)
    curve *= np.float32(_A)
    curve += p
    mag *= np.float32(_SLOPE)
    return _join(curve, mag, low, x, out)


def decode_srgb(encoded: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Linear-light float32 values of sRGB-encoded ``encoded`` (any dtype; integers map to [0, 1])."""
    v = to_float(encoded)
    mag = np.abs(v)
    low = mag <= np.float32(_ENCODED_BREAK)
    curve = np.maximum(mag, np.float32(_ENCODED_BREAK))
    curve += np.float32(_A)
    curve /= np.float32(1.0) + np.float32(_A)  # the same float32 sum as above: 1 decodes to exactly 1
    np.power(curve, np.float32(_GAMMA), out=curve)
    mag /= np.float32(_SLOPE)
    return _join(curve, mag, low, v, out)


def _join(
    curve: np.ndarray, line: np.ndarray, low: np.ndarray, signed: np.ndarray, out: np.ndarray | None
) -> np.ndarray:
    """``line`` where ``low`` else ``curve``, with the sign of ``signed``, into ``out``.

    Multiplying by the boolean masks is exact (x 1 or x 0) and several times faster than a
    masked copy; the sign is restored only when there are negative values at all.
    """
    curve *= ~low
    line *= low
    curve += line
    if (signed < 0).any():
        np.copysign(curve, signed, out=curve)
    if out is None:
        return curve
    np.copyto(out, curve)
    return out


def to_engine(image: np.ndarray, transfer: Transfer) -> np.ndarray:
    """``image`` (float32, owned by the caller) as the sRGB-encoded values an engine expects, in place."""
    return encode_srgb(image, out=image) if transfer is Transfer.LINEAR else image


def from_engine(image: np.ndarray, transfer: Transfer) -> np.ndarray:
    """An engine's sRGB-encoded output (float32, owned by the caller) back in the request's encoding."""
    return decode_srgb(image, out=image) if transfer is Transfer.LINEAR else image
