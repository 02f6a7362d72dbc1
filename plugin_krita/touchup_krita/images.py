"""Result pixels as Qt images for display: the strip's thumbnails and the canvas preview.

Only for showing: Apply writes the backend's frame itself, bit for bit (``layer.py``). Krita's
integer layouts are BGRA, which is what ``QImage.Format_ARGB32`` holds in memory on the
little-endian machines Krita runs on, so 8-bit tiles need no per-pixel work; 16-bit tiles keep
their high bytes; float tiles (RGBA, possibly linear light) go through a small loop, once per
result.
"""

from __future__ import annotations

import struct
from array import array

from touchup.shared.frames import Frame
from touchup.shared.geometry import Rect
from touchup.shared.protocol import Transfer

from .qt import Qt, QtCore, QtGui

THUMB_SIDE = 96
#: Longest side of a float result's display image (converted in Python, see :func:`frame_image`).
FLOAT_SIDE = 384


def frame_image(frame: Frame, transfer: Transfer = Transfer.SRGB) -> QtGui.QImage:
    """An 8-bit, non-premultiplied ARGB32 image of a 4-channel (or 3-channel RGB preview) frame.

    Float frames are converted in Python, so they are sampled down to :data:`FLOAT_SIDE` first
    (the canvas preview scales the image to the result's size; Apply uses the frame itself)."""
    d = frame.desc
    data = bytes(frame.data)
    if d.channels == 3 and d.dtype == "u8":  # the live preview: RGB
        fmt = QtGui.QImage.Format.Format_RGB888
        return QtGui.QImage(data, d.width, d.height, d.width * 3, fmt).convertToFormat(
            QtGui.QImage.Format.Format_ARGB32
        )
    if d.channels != 4:
        raise ValueError(f"cannot show a {d.channels}-channel frame")
    if d.dtype == "u8":
        bgra = data if d.order == "BGRA" else _swap_rb(data)
    elif d.dtype == "u16":
        high = data[1::2]  # little-endian samples: the high byte is the second one
        bgra = high if d.order == "BGRA" else _swap_rb(high)
    else:
        bgra, width, height = _float_to_bgra8(data, d.width, d.height, d.dtype, d.order, transfer)
        image = QtGui.QImage(bgra, width, height, width * 4, QtGui.QImage.Format.Format_ARGB32)
        return image.copy()
    image = QtGui.QImage(bgra, d.width, d.height, d.width * 4, QtGui.QImage.Format.Format_ARGB32)
    return image.copy()  # own the pixels: ``bgra`` goes away with this frame


def composite_thumbnail(
    background: QtGui.QImage,
    tile: Rect,
    result: QtGui.QImage,
    result_rect: Rect,
    zoom: Rect,
    side: int = THUMB_SIDE,
) -> QtGui.QImage:
    """The result over the original tile, cropped to ``zoom`` (document coordinates) and scaled
    to fit ``side``: what the retoucher compares candidates by. ``tile`` and ``result_rect``
    say where the images lie in the document (a float tile's image is smaller: it is scaled)."""
    canvas = QtGui.QImage(zoom.width, zoom.height, QtGui.QImage.Format.Format_ARGB32)
    canvas.fill(QtGui.QColor(0, 0, 0, 0))
    painter = QtGui.QPainter(canvas)
    painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, True)
    for image, rect in ((background, tile), (result, result_rect)):
        painter.drawImage(QtCore.QRectF(rect.x - zoom.x, rect.y - zoom.y, rect.width, rect.height), image)
    painter.end()
    return canvas.scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


def fit(image: QtGui.QImage, side: int = THUMB_SIDE) -> QtGui.QImage:
    return image.scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


def _swap_rb(data: bytes) -> bytes:
    out = bytearray(data)
    out[0::4], out[2::4] = data[2::4], data[0::4]
    return bytes(out)


def _float_to_bgra8(
    data: bytes, width: int, height: int, dtype: str, order: str, transfer: Transfer
) -> tuple[bytes, int, int]:
    """8-bit BGRA of a float RGBA tile, every ``step``-th pixel so the longer side is at most
    :data:`FLOAT_SIDE`; returns (pixels, width, height)."""
    samples = struct.unpack(f"<{len(data) // 2}e", data) if dtype == "f16" else array("f", data)
    step = max(1, -(-max(width, height) // FLOAT_SIDE))
    out_w, out_h = -(-width // step), -(-height // step)
    values: list[float] = []
    for y in range(0, height, step):
        row = samples[y * width * 4 : (y + 1) * width * 4]
        if step == 1:
            values.extend(row)
        else:
            for x in range(0, width, step):
                values.extend(row[x * 4 : x * 4 + 4])
    size = 4096
    if transfer == Transfer.LINEAR:  # display linear light sRGB-encoded
        lut = bytes(round(255 * _srgb(i / (size - 1))) for i in range(size))
    else:
        lut = bytes(round(255 * i / (size - 1)) for i in range(size))
    alpha = bytes(round(255 * i / (size - 1)) for i in range(size))
    top = size - 1
    out = bytearray(len(values))
    for i, v in enumerate(values):
        k = 0 if not v > 0 else (top if v >= 1 else int(v * top))
        out[i] = alpha[k] if i % 4 == 3 else lut[k]
    pixels = _swap_rb(bytes(out)) if order == "RGBA" else bytes(out)
    return pixels, out_w, out_h


def _srgb(v: float) -> float:
    return 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
