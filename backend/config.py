"""Backend configuration: a TOML file in the user config dir, every key overridable by flags.

Example ``config.toml``::

    endpoint = "tcp://127.0.0.1:57361"
    engine = "classic"          # default engine for requests that name none (unset: refine-anything
                                # when its weights are present, else classic)
    max_pixels = 67108864       # largest tile accepted (width*height)
    max_queue_per_client = 16   # jobs one client may have waiting (the queue is round-robin)
    curve = true                # CurveZMQ: required to listen beyond this machine (`touchup keys`)
    idle_unload_s = 600         # unload a GPU model after this long without jobs (0: never)

    [engines.qwen-edit]         # options passed to that engine
    memory_policy = "auto"
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from ..shared.protocol import DEFAULT_ENDPOINT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP = "touchup"


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def default_config_path() -> Path:
    return config_dir() / "config.toml"


@dataclass
class Config:
    """Every backend setting with its default. Field names are the TOML keys."""

    endpoint: str = DEFAULT_ENDPOINT
    engine: str | None = None  # None: the best engine whose weights are here (see server)
    log_level: str = "INFO"
    log_file: str | None = None  # default: <user log dir>/backend.log
    max_pixels: int = 8192 * 8192  # per tile
    max_side: int = 16384
    max_references: int = 4
    max_queue: int = 32  # waiting jobs, all clients together
    max_queue_per_client: int = 16  # waiting jobs of one client (a key's user, else a connection)
    max_queued_bytes: int = 4 << 30  # pixel memory waiting jobs may hold together
    curve: bool = False  # CurveZMQ: encrypt, and accept only clients whose key is in keys_dir
    keys_dir: str | None = None  # default: <user config dir>/keys (see `touchup keys`)
    heartbeat_s: float = 1.0  # ZeroMQ heartbeat; a peer silent for 3 heartbeats is dropped
    idle_unload_s: float = 600.0
    models_dir: str | None = None  # extra folder searched before the Hugging Face cache
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: name -> "package.module:Class": engines outside the product's table, for benchmarks and
    #: tests (a test engine is offered only by a backend configured to offer it).
    extra_engines: dict[str, str] = field(default_factory=dict)
    #: Scale-out (``touchup serve --cluster``): None runs jobs in this process; ``"local"``
    #: starts a Ray cluster on this machine; anything else is a Ray address to join.
    cluster: str | None = None
    replicas: int = 1  # engine replicas in the pool (fixed size)
    autoscale: str | None = None  # "MIN:MAX" replicas instead of a fixed number
    #: How long a job waits for a busy replica that holds its preset before taking a free one
    #: that must load it (loads of diffusion models take far longer than this).
    affinity_wait_s: float = 20.0

    def engine_options(self, name: str) -> dict[str, Any]:
        opts = dict(self.engines.get(name, {}))
        if self.models_dir and "models_dir" not in opts:
            opts["models_dir"] = self.models_dir
        return opts

    def log_path(self) -> Path:
        return Path(self.log_file) if self.log_file else log_dir() / "backend.log"


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file (if it exists), then non-None ``overrides`` (from flags).

    Unknown keys are an error rather than silently ignored, so a typo in the file is noticed.
    """
    values: dict[str, Any] = {}
    file = Path(path) if path else default_config_path()
    if file.exists():
        with file.open("rb") as fh:
            values.update(tomllib.load(fh))
    elif path:
        raise FileNotFoundError(f"config file not found: {file}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) in {file}: {', '.join(unknown)}")
    return Config(**values)
