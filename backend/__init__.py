"""The resident Touchup backend: ZeroMQ server, job queue, Focus-and-Refine, engines."""

from ..shared import __version__

__all__ = ["__version__"]
