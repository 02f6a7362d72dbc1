"""Who may talk to the backend: CurveZMQ keys, the allow-list folder, and trusted requests.

With CurveZMQ on, every connection is encrypted and must present a client key found in the
allow-list folder (``<keys>/clients/NAME.key``); pyzmq's ZAP authenticator asks
:class:`AllowList` on each new connection, so adding or deleting a key file takes effect for the
next connection without a restart. A refused key is logged with its fingerprint. The client's
name becomes the connection's ``User-Id``, which the queue uses to share work fairly by person.

Without CurveZMQ the backend only listens on this machine (``endpoint`` refuses anything else),
and "trusted" means "on this machine". ``unload``, ``shutdown`` and seeing other clients' jobs
are for trusted clients only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ...shared.connection import Connection
from ..config import Config, config_dir

log = logging.getLogger("touchup.auth")

#: The ZAP domain the backend's socket announces.
ZAP_DOMAIN = "touchup"
SERVER_KEY = "server"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyError_(ValueError):  # noqa: N801 - the builtin KeyError is taken
    """Keys are missing or a key name is not usable (a message a user can act on)."""


def keys_dir(config: Config) -> Path:
    return Path(config.keys_dir) if config.keys_dir else config_dir() / "keys"


@dataclass(frozen=True)
class KeyStore:
    """The server key pair and the folder of allowed client public keys."""

    root: Path

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def server_public_file(self) -> Path:
        return self.root / f"{SERVER_KEY}.key"

    @property
    def server_secret_file(self) -> Path:
        return self.root / f"{SERVER_KEY}.key_secret"

    def has_server_key(self) -> bool:
        return self.server_secret_file.is_file()

    def init_server(self) -> bytes:
        """Create the server key pair once; returns its public key (z85). Existing keys are kept:
        replacing them would lock out every user."""
        if not self.has_server_key():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            zmq.auth.create_certificates(self.root, SERVER_KEY)
            os.chmod(self.server_secret_file, 0o600)
        self.clients.mkdir(parents=True, exist_ok=True)
        return self.server_keys()[0]

    def server_keys(self) -> tuple[bytes, bytes]:
        """(public, secret) z85 keys of the server."""
        if not self.has_server_key():
            raise KeyError_(f"no server key in {self.root}: create one with `touchup keys init`")
        public, secret = zmq.auth.load_certificate(self.server_secret_file)
        if secret is None:
            raise KeyError_(f"{self.server_secret_file} holds no secret key")
        return public, secret

    def add_client(self, name: str, endpoint: str) -> Connection:
        """A new key pair for ``name``: the public half joins the allow-list, both halves go into
        the returned connection file (the only copy of the user's secret key)."""
        check_name(name)
        target = self.clients / f"{name}.key"
        if target.exists():
            raise KeyError_(f"a key named {name!r} already exists; revoke it first to replace it")
        server_public, _ = self.server_keys()
        self.clients.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            # zmq.auth writes the pair; only the public half stays here, in the allow-list.
            pub_file, secret_file = zmq.auth.create_certificates(tmp, name)
            public, secret = zmq.auth.load_certificate(secret_file)
            target.write_bytes(Path(pub_file).read_bytes())
        assert secret is not None
        return Connection(
            endpoint=endpoint,
            server_key=server_public.decode(),
            public_key=public.decode(),
            secret_key=secret.decode(),
            user=name,
        )

    def revoke(self, name: str) -> bool:
        check_name(name)
        path = self.clients / f"{name}.key"
        if not path.exists():
            return False
        path.unlink()
        return True

    def allowed(self) -> dict[bytes, str]:
        """Public key (z85) -> client name, read from the folder now."""
        out: dict[bytes, str] = {}
        if not self.clients.is_dir():
            return out
        for path in sorted(self.clients.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(path)
            except Exception as exc:  # one unreadable file must not lock everyone out
                log.warning("ignoring unreadable key file %s: %s", path.name, exc)
                continue
            out[public] = path.stem
        return out


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise KeyError_(f"a key name is letters, digits, '.', '_' or '-' (at most 64), got {name!r}")


class AllowList:
    """ZAP credentials provider: is this client key in the allow-list folder right now?"""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.names: dict[bytes, str] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = self.store.allowed()
        self.names.update(allowed)
        if key in allowed:
            log.info("client %r connected (key %s...)", allowed[key], key[:8].decode())
            return True
        log.warning(
            "refused a client with an unknown key %s... (not in %s)", key[:8].decode(), self.store.clients
        )
        return False


class _NamedAuthenticator(ThreadAuthenticator):
    """The ZAP thread, naming each connection's User-Id after its key file."""

    allow_list: AllowList

    def curve_user_id(self, client_public_key: bytes) -> str:
        z85 = zmq.utils.z85.encode(client_public_key)
        return self.allow_list.names.get(z85, z85.decode())


class CurveSecurity:
    """Turns CurveZMQ on for the backend's socket and runs the authenticator while serving."""

    def __init__(self, ctx: zmq.Context, store: KeyStore) -> None:
        self.store = store
        self.public, self.secret = store.server_keys()
        self._auth = _NamedAuthenticator(ctx, log=logging.getLogger("touchup.auth.zap"))
        self._auth.allow_list = AllowList(store)

    def start(self) -> None:
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._auth.allow_list)

    def secure(self, socket: zmq.Socket) -> None:
        socket.curve_server = True
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.zap_domain = ZAP_DOMAIN.encode()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._auth.stop()


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address or ``localhost``."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: reachable from elsewhere
        return False


def peer_identity(frame: Any, curve: bool, endpoint: str) -> tuple[str | None, bool]:
    """(user name or None, trusted) for the connection a message arrived on.

    With CurveZMQ, ZAP has authenticated every connection and set its User-Id. Without it, a
    peer is trusted when it is on this machine (which, since the backend refuses to listen on
    the network without CurveZMQ, is every peer -- checked again here all the same).
    """
    if curve:
        try:
            user = frame.get("User-Id")
        except (zmq.ZMQError, AttributeError):
            user = None
        return (user or None), bool(user)
    if endpoint.startswith(("ipc://", "inproc://")):
        return None, True
    try:
        address = frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):
        return None, False
    try:
        return None, ipaddress.ip_address(address).is_loopback or address == "::ffff:127.0.0.1"
    except ValueError:
        return None, False
