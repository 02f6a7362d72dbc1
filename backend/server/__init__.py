"""The resident backend: network front (endpoint), fair job queue, worker, request limits,
CurveZMQ authentication, and the one-backend-per-endpoint lock."""

from .endpoint import AlreadyRunning, InsecureEndpoint, Server, resolve_default_engine

__all__ = ["AlreadyRunning", "InsecureEndpoint", "Server", "resolve_default_engine"]
