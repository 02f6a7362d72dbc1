"""Conversions between wire frames and numpy arrays, and between sample types.

Engines work on float32 RGB in [0, 1]; the wire carries whatever the editor holds (u8, u16,
f16, f32; RGBA or Krita's BGRA). Everything converts here, once, so no other module cares.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..shared.frames import Frame, FrameDesc

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
    return Frame(FrameDesc(w, h, c, WIRE_DTYPES[arr.dtype], order, role), memoryview(arr).cast("B"))


def wrap_frame(arr: np.ndarray, role: str, order: str = "RGBA") -> Frame:
    """A frame labelling ``arr``'s bytes as they are (``order`` describes them; no reordering).

    For callers that hold pixels in the editor's own layout, e.g. OpenCV's BGR(A) arrays.
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    arr = np.ascontiguousarray(arr)
    return Frame(FrameDesc(w, h, c, WIRE_DTYPES[arr.dtype], order, role), memoryview(arr).cast("B"))


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


def rgb_float(arr: np.ndarray) -> np.ndarray:
    """The colour channels of an image as float32 RGB in [0, 1] (grey is replicated)."""
    f = to_float(arr)
    if f.ndim == 2:
        f = f[:, :, None]
    if f.shape[2] == 1:
        return np.repeat(f, 3, axis=2)
    return np.ascontiguousarray(f[:, :, :3])
