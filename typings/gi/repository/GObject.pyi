from enum import IntFlag
from typing import Any

class GType: ...

TYPE_NONE: GType

class ParamFlags(IntFlag):
    READABLE = 1
    WRITABLE = 2
    READWRITE = 3

class BindingFlags(IntFlag):
    DEFAULT = 0
    BIDIRECTIONAL = 1
    SYNC_CREATE = 2

class Binding: ...
class ParamSpec: ...

class Object:
    __gtype__: GType
    def get_property(self, name: str) -> Any: ...
    def set_property(self, name: str, value: object) -> None: ...
    def bind_property(
        self, source_property: str, target: Object, target_property: str, flags: BindingFlags
    ) -> Binding: ...
    def connect(self, signal: str, handler: Any, *args: object) -> int: ...
