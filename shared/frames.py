"""Raw pixel frames: the descriptor that travels in the header and the bytes beside it.

Pixels never travel as PNG or base64: a frame is the raw buffer exactly as the editor holds it,
and its descriptor says how to read it. Keeping the editor's own layout (including Krita's BGRA
byte order for integer depths) means plugins never touch individual bytes in Python, which is
slow in an embedded interpreter; the backend converts with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Bytes per sample for each dtype name used on the wire.
DTYPE_SIZES: dict[str, int] = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
#: Channel orders. ``BGRA`` is Krita's integer layout; ``RGBA`` everything else. For 1 or 3
#: channels the order names the colour channels only ("RGB"/"BGR" are accepted as aliases).
ORDERS = ("RGBA", "BGRA")
CHANNELS = (1, 3, 4)
#: Longest side a descriptor may claim, and longest dtype/order/role text.
MAX_FRAME_SIDE = 2**20
MAX_ROLE = 32
#: Largest sample, for byte limits derived from pixel limits.
MAX_SAMPLE_BYTES = max(DTYPE_SIZES.values())


class FrameError(ValueError):
    """A frame descriptor is invalid or disagrees with its buffer."""


@dataclass(frozen=True)
class FrameDesc:
    """How to read one raw buffer: ``width*height*channels`` samples of ``dtype``, row-major."""

    width: int
    height: int
    channels: int
    dtype: str = "u8"
    order: str = "RGBA"
    role: str = "image"

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * DTYPE_SIZES[self.dtype]

    def validate(self) -> None:
        """Raise :class:`FrameError` unless every field is one the protocol allows."""
        for name in ("width", "height", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FrameError(f"frame {self.role!r}: {name} must be a positive integer, got {value!r}")
        if self.channels not in CHANNELS:
            raise FrameError(f"frame {self.role!r}: channels must be 1, 3 or 4, got {self.channels}")
        if self.dtype not in DTYPE_SIZES:
            raise FrameError(
                f"frame {self.role!r}: dtype must be one of {sorted(DTYPE_SIZES)}, got {self.dtype!r}"
            )
        if self.order not in ORDERS:
            raise FrameError(f"frame {self.role!r}: order must be RGBA or BGRA, got {self.order!r}")

    def to_wire(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "dtype": self.dtype,
            "order": self.order,
        }

    @classmethod
    def from_wire(cls, data: Any) -> FrameDesc:
        """A descriptor from the wire; anything not exactly as the protocol says is a FrameError
        (never a TypeError: a list where text belongs must not reach a dict lookup)."""
        if not isinstance(data, dict):
            raise FrameError("a frame descriptor must be a map")
        for key in ("dtype", "order", "role"):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_ROLE):
                raise FrameError(f"frame descriptor: {key} must be a short text")
        for key in ("width", "height"):
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_FRAME_SIDE:
                raise FrameError(f"frame descriptor: {key} {value} is over {MAX_FRAME_SIDE}")
        try:
            order = data.get("order") or "RGBA"
            desc = cls(
                width=data["width"],
                height=data["height"],
                channels=data["channels"],
                dtype=data.get("dtype") or "u8",
                order={"RGB": "RGBA", "BGR": "BGRA"}.get(order, order),
                role=data.get("role") or "image",
            )
        except KeyError as exc:
            raise FrameError(f"frame descriptor lacks {exc.args[0]!r}") from None
        desc.validate()
        return desc


@dataclass(frozen=True)
class Frame:
    """A descriptor plus its buffer (``bytes``, ``bytearray`` or ``memoryview``; never copied)."""

    desc: FrameDesc
    data: Any

    def validate(self) -> None:
        self.desc.validate()
        size = memoryview(self.data).nbytes
        if size != self.desc.nbytes:
            raise FrameError(
                f"frame {self.desc.role!r} holds {size} bytes but its descriptor "
                f"({self.desc.width}x{self.desc.height}x{self.desc.channels} {self.desc.dtype}) needs {self.desc.nbytes}"
            )
