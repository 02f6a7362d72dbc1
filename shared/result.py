"""Checking a ``result`` against the tile that was sent, before an editor writes a pixel of it.

A plugin must never trust the backend blindly: a result whose tile lies outside the region
that was sent, or whose channel order or sample type differs from what the editor will read it
as, would write garbage (or far outside the selection) into the user's document. Both editors
and the CLI call :func:`checked_result`; a result that does not fit fails the job with
``bad_result`` and a message that says nothing was changed.

Pure stdlib: this module runs inside Krita's and GIMP's own Pythons too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from .client import BackendError
from .frames import Frame
from .protocol import ErrorCode, Kind, Message


@dataclass(frozen=True)
class SentTile:
    """Where the source tile of a request lies in the document, and how its pixels are laid out."""

    x: int
    y: int
    width: int
    height: int
    order: str
    dtype: str

    @classmethod
    def of_request(cls, header: dict[str, Any], frames: list[Frame]) -> SentTile:
        source = next(f for f in frames if f.desc.role == "source")
        x, y = header.get("origin") or (0, 0)
        d = source.desc
        return cls(int(x), int(y), d.width, d.height, d.order, header.get("output_dtype") or d.dtype)


def checked_result(msg: Message, sent: SentTile) -> tuple[Frame, tuple[int, int]]:
    """The result frame and its document origin, or :class:`BackendError` ``bad_result``.

    ``msg`` is a ``result`` or a ``variant`` message (each variant of a job is checked alike).
    """

    def bad(why: str) -> BackendError:
        return BackendError(
            ErrorCode.BAD_RESULT,
            f"the backend's result does not fit the region that was sent ({why}); nothing was changed",
        )

    if msg.kind not in (Kind.RESULT, Kind.VARIANT):
        raise bad(f"it is a {msg.kind[:32]!r} message")
    frame = msg.frame("result")
    if frame is None:
        raise bad("it holds no image")
    d = frame.desc
    origin, size = msg.header.get("origin"), msg.header.get("size")
    if not _int_pair(origin):
        raise bad(f"origin {str(origin)[:40]}")
    if size is not None and (not _int_pair(size) or tuple(size) != (d.width, d.height)):
        raise bad(f"size {str(size)[:40]} but the image is {d.width}x{d.height}")
    ox, oy = cast("tuple[int, int]", origin)  # checked by _int_pair above
    if (
        ox < sent.x
        or oy < sent.y
        or ox + d.width > sent.x + sent.width
        or oy + d.height > sent.y + sent.height
    ):
        raise bad(
            f"{d.width}x{d.height} at ({ox}, {oy}) is outside the {sent.width}x{sent.height} tile at "
            f"({sent.x}, {sent.y})"
        )
    if d.channels != 4:
        raise bad(f"{d.channels} channels instead of 4")
    if d.order != sent.order:
        raise bad(f"channel order {d.order} instead of {sent.order}")
    if d.dtype != sent.dtype:
        raise bad(f"sample type {d.dtype} instead of {sent.dtype}")
    return frame, (int(ox), int(oy))


def _int_pair(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
