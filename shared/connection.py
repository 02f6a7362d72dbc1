"""Connection files: everything a client needs to reach a backend on another machine.

``touchup keys add NAME --endpoint tcp://gpu-box:57361`` writes one per user: the endpoint, the
server's public key (so the client knows it talks to the right server) and the user's own key
pair (so the server knows who connects). The CLI (``--connection FILE``), the Krita docker and
the GIMP plug-in import the same file. It holds a secret key: it is written readable by its
owner only, and should be handed over like a password.

Pure stdlib + pyzmq: this module runs inside Krita's and GIMP's own Pythons too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The ``format`` field of a connection file, for future changes.
FORMAT = "touchup-connection-1"
_Z85_KEY_LEN = 40


class ConnectionError_(ValueError):  # noqa: N801 - the builtin ConnectionError is taken
    """A connection file is missing, unreadable or incomplete (the message says which)."""


@dataclass(frozen=True)
class Connection:
    endpoint: str
    server_key: str  # z85, 40 characters
    public_key: str
    secret_key: str
    user: str = ""

    def validate(self) -> Connection:
        if not self.endpoint.startswith(("tcp://", "ipc://")):
            raise ConnectionError_(
                f"the endpoint must be tcp://HOST:PORT or ipc://PATH, got {self.endpoint!r}"
            )
        for name in ("server_key", "public_key", "secret_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) != _Z85_KEY_LEN:
                raise ConnectionError_(f"{name} must be a {_Z85_KEY_LEN}-character CurveZMQ key")
        return self

    def apply(self, socket: Any) -> None:
        """Make ``socket`` (a zmq socket, before ``connect``) a CurveZMQ client of this server."""
        socket.curve_serverkey = self.server_key.encode()
        socket.curve_publickey = self.public_key.encode()
        socket.curve_secretkey = self.secret_key.encode()

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the file readable by its owner only (it holds the user's secret key)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
        os.chmod(path, 0o600)
        return path


def load_connection(path: str | Path) -> Connection:
    """Read and check a connection file; :class:`ConnectionError_` with a clear message otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectionError_(f"connection file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConnectionError_(f"cannot read connection file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConnectionError_(f"{path} is not a Touchup connection file")
    try:
        conn = Connection(
            endpoint=str(data["endpoint"]),
            server_key=str(data["server_key"]),
            public_key=str(data["public_key"]),
            secret_key=str(data["secret_key"]),
            user=str(data.get("user", "")),
        )
    except KeyError as exc:
        raise ConnectionError_(f"connection file {path} lacks {exc.args[0]!r}") from None
    return conn.validate()
