"""``touchup tray``: the backend as a tray daemon.

A :class:`Supervisor` thread keeps one ``touchup serve`` child alive -- restarting it with
exponential backoff when it dies -- and polls its ``status`` over the normal protocol client,
turning it into a :class:`TrayState` (starting / idle / busy with progress / error). The tray
icon (pystray) shows that state as a colour, a progress ring and a tooltip, and its menu offers
the status line, the loaded model with "Unload model", "Open log", "Open config folder",
"Restart backend" and "Quit".

Where a desktop has no tray (no system tray on X, no display at all), the same supervisor runs
as a plain foreground daemon and says so. pystray's pure-X backend cannot show menus, so there a
left click opens the same menu as a small Tk popup in a child process (``popup.py``), which
keeps Tk's event loop away from the tray's.
"""

from .icon import Tray
from .state import BUSY, COLOURS, ERROR, IDLE, STARTING, TrayState, icon_image, state_from_status
from .supervisor import Supervisor

__all__ = [
    "BUSY",
    "COLOURS",
    "ERROR",
    "IDLE",
    "STARTING",
    "Supervisor",
    "Tray",
    "TrayState",
    "icon_image",
    "state_from_status",
]
