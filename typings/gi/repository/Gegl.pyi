from enum import IntEnum

class AbyssPolicy(IntEnum):
    NONE = 0
    CLAMP = 1
    LOOP = 2
    BLACK = 3
    WHITE = 4

class Rectangle:
    x: int
    y: int
    width: int
    height: int
    @staticmethod
    def new(x: int, y: int, width: int, height: int) -> Rectangle: ...

class Buffer:
    def get(
        self, rect: Rectangle, scale: float, format_name: str | None, repeat_mode: AbyssPolicy
    ) -> bytes: ...
    def set(self, rect: Rectangle, format_name: str, src: bytes) -> None: ...
    def flush(self) -> None: ...
