"""Touchup's wire protocol and client, shared by the backend and the editor plugins.

This package runs inside Krita's and GIMP's embedded Pythons, so it uses only the standard
library, ``msgpack`` and ``pyzmq`` -- no numpy -- and only relative imports, so that the
installer can place it under any parent package.
"""

from .protocol import DEFAULT_ENDPOINT, PROTOCOL_VERSION, ErrorCode, Kind

__version__ = "0.1.0"

__all__ = ["DEFAULT_ENDPOINT", "PROTOCOL_VERSION", "ErrorCode", "Kind", "__version__"]
