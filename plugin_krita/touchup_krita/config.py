"""Plugin configuration (where the backend is, how to start it) and the user's refine settings.

Configuration comes from three layers, later ones winning:

1. ``config.json`` beside this module, written by the installer (the backend command it
   installed, a non-default endpoint);
2. Krita's own settings (``kritarc`` group ``touchup``), which the settings dialog writes;
3. the environment (``TOUCHUP_ENDPOINT``, ``TOUCHUP_BACKEND_COMMAND``), for scripts and tests.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from touchup.shared.client import DEFAULT_PARAMS
from touchup.shared.protocol import DEFAULT_ENDPOINT
from touchup.shared.texts import layer_name

SETTINGS_GROUP = "touchup"
CONFIG_FILE = Path(__file__).with_name("config.json")


@dataclass
class PluginConfig:
    """How to reach and start the backend, and how patient to be with it."""

    endpoint: str = DEFAULT_ENDPOINT
    #: Command line of the backend; ``{endpoint}`` is replaced by :attr:`endpoint`.
    backend_command: str = "touchup serve --endpoint {endpoint}"
    #: Seconds between liveness pings.
    ping_interval_s: float = 1.0
    #: A ping unanswered this long means "not running" (idle) ...
    ping_timeout_s: float = 3.0
    #: ... and this long while jobs run (a busy CPU engine may answer slowly).
    busy_ping_timeout_s: float = 20.0
    #: How long a started backend may take to answer its first ping (model imports, ...).
    start_timeout_s: float = 120.0
    #: A connection file (``touchup keys add``) for a backend on another machine; overrides endpoint.
    connection: str = ""

    def command(self) -> list[str]:
        """The backend command as argv; a bare ``touchup`` is resolved on PATH."""
        argv = shlex.split(self.backend_command.replace("{endpoint}", self.endpoint))
        if argv and os.sep not in argv[0]:
            argv[0] = shutil.which(argv[0]) or argv[0]
        return argv


def load_config(read_setting: Any = None) -> PluginConfig:
    """Installer file, then Krita settings (``read_setting(group, key, default)``), then env."""
    config = PluginConfig()
    if CONFIG_FILE.exists():
        try:
            data = json.loads(CONFIG_FILE.read_text(encoding="utf-8"))
            config = _merge(config, data)
        except (OSError, ValueError):
            pass
    if read_setting is not None:
        stored = {f.name: read_setting(SETTINGS_GROUP, f.name, "") for f in fields(PluginConfig)}
        config = _merge(config, {k: v for k, v in stored.items() if v not in ("", None)})
    env = {
        "endpoint": os.environ.get("TOUCHUP_ENDPOINT"),
        "backend_command": os.environ.get("TOUCHUP_BACKEND_COMMAND"),
        "connection": os.environ.get("TOUCHUP_CONNECTION"),
    }
    return _merge(config, {k: v for k, v in env.items() if v})


def save_config(config: PluginConfig, write_setting: Any) -> None:
    """Persist the user-editable fields into Krita's settings."""
    write_setting(SETTINGS_GROUP, "endpoint", config.endpoint)
    write_setting(SETTINGS_GROUP, "backend_command", config.backend_command)
    write_setting(SETTINGS_GROUP, "connection", config.connection)


def import_connection(path: str, folder: Path | None = None) -> str:
    """Check a connection file and keep a private copy beside the plugin's config; returns the
    copy's path for :attr:`PluginConfig.connection`. Raises ``ConnectionError_`` with the reason."""
    from touchup.shared.connection import load_connection

    conn = load_connection(path)
    target = (folder or CONFIG_FILE.parent) / "connection.touchup"
    return str(conn.save(target))


def _merge(config: PluginConfig, data: dict[str, Any]) -> PluginConfig:
    known = {f.name for f in fields(PluginConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            continue
        default = getattr(config, key)
        try:
            values[key] = type(default)(value) if not isinstance(default, str) else str(value)
        except (TypeError, ValueError):
            continue
    return replace(config, **values)


SOURCE_VISIBLE = "visible"
SOURCE_LAYER = "layer"


@dataclass
class RefineSettings:
    """Everything the user chose for one refine; the docker edits one, ``refine()`` builds one."""

    instruction: str = ""
    #: ``uniqueId`` (as text) of the reference layer, or None.
    reference: str | None = None
    engine: str | None = None
    preset: str | None = None
    strength: float = float(DEFAULT_PARAMS["strength"])
    steps: int | None = None
    seed: int = int(DEFAULT_PARAMS["seed"])
    guidance: float | None = None
    context: float = float(DEFAULT_PARAMS["context"])
    feather: float = float(DEFAULT_PARAMS["feather"])
    source: str = SOURCE_VISIBLE
    #: ``uniqueId`` of the source layer for ``source="layer"``; None: the active layer.
    layer: str | None = None
    mode: str = "refine"
    color_correct: bool = True
    #: Candidates per refine (1-8, consecutive seeds); None: the preset's default.
    variants: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        """The request's ``params`` map (``None`` values: the engine's default)."""
        out = {
            "strength": self.strength,
            "steps": self.steps,
            "seed": self.seed,
            "guidance": self.guidance,
            "context": self.context,
            "feather": self.feather,
            "mode": self.mode,
            "color_correct": self.color_correct,
            "variants": self.variants,
        }
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}

    def layer_name(self, default_preset: str | None = None) -> str:
        """``Touchup: <instruction or preset>``, short enough for the layer docker.

        ``default_preset``: the preset the backend will use when none is chosen."""
        return layer_name(self.instruction, self.preset, default_preset, self.engine, self.mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefineSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
