"""Starting the tray at login: XDG autostart on Linux, the Run key on Windows, a LaunchAgent on macOS.

Each function returns what to write rather than writing it, so ``--dry-run`` can show it and
the installer's manifest machinery (never overwrite a foreign file, record what was written)
applies to autostart entries exactly as to plugin files.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from platformdirs import unix

from .paths import _Environ, _home, current_system

AGENT_LABEL = "org.touchup.tray"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "Touchup"


@dataclass(frozen=True)
class AutostartEntry:
    """Either a file (``path`` + ``content``) or a Windows registry value (``registry``)."""

    description: str
    path: Path | None = None
    content: bytes = b""
    registry: tuple[str, str, str] | None = None  # (key under HKCU, value name, command)


def tray_command(python: str | None = None, system: str | None = None) -> list[str]:
    """The tray daemon started with this very environment's Python (absolute path).

    On Windows ``pythonw.exe`` is preferred so no console window opens at login.
    """
    system = system or current_system()
    python = python or sys.executable
    if system == "win32":
        w = Path(python).with_name("pythonw.exe")
        if w.exists():
            python = str(w)
    return [python, "-m", "touchup.backend", "tray"]


def autostart_entry(
    command: list[str], system: str | None = None, env: Mapping[str, str] | None = None
) -> AutostartEntry:
    system = system or current_system()
    env = os.environ if env is None else env
    if system == "win32":
        return AutostartEntry(
            f"HKCU\\{RUN_KEY}\\{RUN_VALUE}", registry=(RUN_KEY, RUN_VALUE, subprocess.list2cmdline(command))
        )
    if system == "darwin":
        plist = {
            "Label": AGENT_LABEL,
            "ProgramArguments": command,
            "RunAtLoad": True,
            "KeepAlive": False,  # the tray supervises the backend itself
            "ProcessType": "Interactive",
        }
        path = _home(env) / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
        return AutostartEntry(f"LaunchAgent {path}", path, plistlib.dumps(plist))
    with _Environ(env):
        folder = Path(unix.Unix().user_config_dir) / "autostart"
    desktop = "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=Touchup",
            "Comment=Touchup backend for Krita and GIMP (tray icon)",
            f"Exec={_desktop_exec(command)}",
            "Icon=image-x-generic",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "",
        ]
    )
    path = folder / "touchup-tray.desktop"
    return AutostartEntry(f"XDG autostart {path}", path, desktop.encode())


def _desktop_exec(command: list[str]) -> str:
    """Quote for the Exec key (desktop entry spec: double quotes, with \\ " ` $ escaped)."""
    out = []
    for arg in command:
        if arg and all(c.isalnum() or c in "/._-+=:," for c in arg):
            out.append(arg)
        else:
            escaped = "".join("\\" + c if c in '\\"`$' else c for c in arg)
            out.append(f'"{escaped}"')
    return " ".join(out)


def write_registry(key: str, name: str, command: str) -> str | None:
    """Set ``HKCU\\key\\name`` and return the previous value (None if there was none)."""
    if sys.platform != "win32":
        raise OSError("the registry exists on Windows only")
    import winreg

    with winreg.CreateKey(winreg.HKEY_CURRENT_USER, key) as handle:
        try:
            previous = str(winreg.QueryValueEx(handle, name)[0])
        except FileNotFoundError:
            previous = None
        winreg.SetValueEx(handle, name, 0, winreg.REG_SZ, command)
    return previous


def delete_registry(key: str, name: str) -> None:
    if sys.platform != "win32":
        raise OSError("the registry exists on Windows only")
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as handle:
            winreg.DeleteValue(handle, name)
    except FileNotFoundError:
        pass
