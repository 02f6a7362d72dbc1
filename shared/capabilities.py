"""Reading the backend's ``hello`` capabilities the same way in every editor."""

from __future__ import annotations

from typing import Any


def engines_of(hello: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine descriptions of a ``hello`` reply, the backend's default engine first."""
    caps = hello.get("capabilities") or {}
    engines = caps.get("engines") or []
    default_engine = caps.get("default_engine")
    return sorted(engines, key=lambda e: e.get("name") != default_engine)


def preset_missing(engine: dict[str, Any], preset: dict[str, Any]) -> str:
    """Why ``preset`` of ``engine`` cannot run on this backend (e.g. weights not downloaded,
    with the command that fixes it), or "" when it can."""
    available = engine.get("available") or {}
    per_preset = available.get("presets") or {}
    ok = per_preset.get(preset.get("name"), available.get("ok", True)) and preset.get("present", True)
    if ok:
        return ""
    if preset.get("download"):
        return f"models not downloaded; run `{preset['download']}`"
    return str(available.get("reason") or "not available on this backend")
