"""Conversions between wire frames and numpy arrays, and between sample types.

Engines work on float32 RGB in [0, 1]; the wire carries whatever the editor holds (u8, u16,
f16, f32; RGBA or Krita's BGRA). Everything converts here, once, so no other module cares.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...shared.frames import Frame, FrameDesc

NUMPY_DTYPES: dict[str, np.dtype] = {
    "u8": np.dtype(np.uint8),
    "u16": np.dtype(np.uint16),
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
}
WIRE_DTYPES: dict[np.dtype, str] = {v: k for k, v in NUMPY_DTYPES.items()}


def frame_to_array(frame: Frame) -> np.ndarray:
    """An ``HxWxC`` array in RGBA channel order viewing (or, for BGRA, reordering) the frame."""
    d = frame.desc
    arr = np.frombuffer(frame.data, dtype=NUMPY_DTYPES[d.dtype]).reshape(d.height, d.width, d.channels)
    if d.order == "BGRA" and d.channels >= 3:
        arr = swap_red_blue(arr)
    return arr


def swap_red_blue(arr: np.ndarray) -> np.ndarray:
    """BGR(A) <-> RGB(A) as a new contiguous array. OpenCV's SIMD path is several times faster
    than numpy fancy indexing on the large tiles Krita sends; numpy covers what it lacks (f16)."""
    if arr.dtype != np.float16:
        code = cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
        return cv2.cvtColor(np.ascontiguousarray(arr), code)
    return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3][: arr.shape[2]]])


def array_to_frame(arr: np.ndarray, role: str, order: str = "RGBA") -> Frame:
    """A frame holding ``arr`` (``HxW`` or ``HxWxC``), reordered to BGRA if asked."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    arr = swap_red_blue(arr) if order == "BGRA" and c >= 3 else np.ascontiguousarray(arr)
    return Frame(FrameDesc(w, h, c, WIRE_DTYPES[arr.dtype], order, role), arr.data.cast("B"))


def wrap_frame(arr: np.ndarray, role: str, order: str = "RGBA") -> Frame:
    """A frame labelling ``arr``'s bytes as they are (``order`` describes them; no reordering).

    For callers that hold pixels in the editor's own layout, e.g. OpenCV's BGR(A) arrays.
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    arr = np.ascontiguousarray(arr)
    return Frame(FrameDesc(w, h, c, WIRE_DTYPES[arr.dtype], order, role), arr.data.cast("B"))


def to_float(arr: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] for integer samples; float samples are passed through as float32."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32, copy=False)


def from_float(arr: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Back to ``dtype``, rounding and clipping integer targets."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.clip(np.rint(arr * 65535.0), 0, 65535).astype(np.uint16)
    return arr.astype(dtype)


def mask_to_float(arr: np.ndarray) -> np.ndarray:
    """A selection mask (``HxW`` or ``HxWx1``, any dtype) as float32 in [0, 1]."""
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    return np.clip(to_float(arr), 0.0, 1.0)


def rgb_float(image: np.ndarray) -> np.ndarray:
    """The colour of ``image`` (``HxW`` or ``HxWxC``, C = 1, 3 or 4) as a new float32 RGB array.

    Integer samples map to [0, 1]; float samples keep their values (HDR may exceed [0, 1]).
    Grey is replicated to RGB. The result never shares memory with ``image``, so engines may
    work in place. Converts only the colour channels, with OpenCV where it can (it is on the
    path of every focus crop).
    """
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        rgb = np.repeat(image, 3, axis=2)
    elif channels == 4 and image.dtype != np.float16:  # OpenCV has no half-float colour conversion
        rgb = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    else:
        rgb = image[:, :, :3]
    out = rgb.astype(np.float32)  # always a copy
    if image.dtype == np.uint8:
        out *= np.float32(1 / 255)
    elif image.dtype == np.uint16:
        out *= np.float32(1 / 65535)
    return out
