"""What the desktop offers a tray icon: is there a system tray, and can the X icon get clicks."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger("touchup.tray")


def system_tray_available() -> tuple[bool, str]:
    """Whether pystray can show an icon here, and why not."""
    if os.environ.get("TOUCHUP_TRAY") == "none":
        return False, "disabled by TOUCHUP_TRAY=none"
    try:
        import pystray  # the import itself fails without a display
    except Exception as exc:
        return False, f"no tray backend ({exc.__class__.__name__}: {exc})"
    if sys.platform.startswith(("win", "darwin")):
        return True, ""
    import pystray

    if pystray.Icon.__module__.endswith("_xorg"):
        try:
            import Xlib.display

            display = Xlib.display.Display()
            try:
                screen = display.get_default_screen()
                owner = display.get_selection_owner(display.intern_atom(f"_NET_SYSTEM_TRAY_S{screen}"))
            finally:
                display.close()
        except Exception as exc:
            return False, f"cannot talk to the X display ({exc})"
        if owner == 0 or getattr(owner, "id", 0) == 0:
            return False, "the desktop has no system tray"
    return True, ""


def enable_xorg_clicks(icon: Any) -> None:
    """pystray's X backend handles ButtonPress but never asks the X server for those events
    (its icon window selects only Exposure and StructureNotify), so a click would never reach
    the icon; add ButtonPress to the window's event mask."""
    window, display = getattr(icon, "_window", None), getattr(icon, "_display", None)
    if window is None or display is None:
        return
    try:
        import Xlib.X

        window.change_attributes(
            event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | Xlib.X.ButtonPressMask
        )
        display.flush()
    except Exception:  # clicks are a convenience; the icon works without them
        log.warning("cannot enable clicks on the tray icon", exc_info=True)
