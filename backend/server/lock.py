"""One backend per endpoint, ``ipc://`` included.

Two backends binding the same ``ipc://`` path both succeed (the second replaces the socket file,
and stopping either deletes it), and two started at once both find nobody answering. An
exclusive lock on a file beside the socket settles it: whoever holds the lock serves, and only
the holder removes the socket file. ``tcp://`` needs no file: the second bind fails.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no ipc:// endpoints
    fcntl = None  # type: ignore[assignment]


class EndpointLock:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.socket_path = endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        """True when this process may serve the endpoint (held until :meth:`release`)."""
        if self.socket_path is None or fcntl is None:
            return True
        fh = open(f"{self.socket_path}.lock", "a+b")  # noqa: SIM115 - held open for the lock's life
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._file = fh
        return True

    def remove_socket_file(self) -> None:
        """Delete the ipc socket file -- only ever by the backend that holds the lock."""
        if self.socket_path is not None and self._file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock; the lock file itself stays (harmless)
            self._file = None
