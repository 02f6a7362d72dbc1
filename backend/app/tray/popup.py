"""The menu as a small Tk popup in a child process, for pystray's X backend, which has no menus.

Tk runs in its own process (``python -m touchup.backend.app.tray.popup``) so that its event loop
never meets the tray's."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def popup_menu(
    items: list[tuple[str, str, bool]], keep: Callable[[subprocess.Popen], None] | None = None
) -> str | None:
    """Show ``items`` as a popup menu at the mouse pointer in a child process; the chosen id.

    ``keep`` receives the child so that quitting the tray can close an open menu.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "touchup.backend.app.tray.popup"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if keep is not None:
        keep(proc)
    try:
        out, _ = proc.communicate(json.dumps(items), timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out.strip() or None


def _choose(chosen: list[str], ident: str, root: Any) -> None:
    chosen.append(ident)
    root.quit()


def popup_main() -> int:
    """Child side of :func:`popup_menu`: a Tk menu at the pointer, prints the chosen id."""
    import tkinter

    items = json.loads(sys.stdin.read())
    root = tkinter.Tk()
    root.withdraw()
    chosen: list[str] = []
    menu = tkinter.Menu(root, tearoff=False)
    for ident, label, enabled in items:
        if not ident:
            menu.add_separator()
            continue
        menu.add_command(
            label=label,
            state="normal" if enabled else "disabled",
            command=functools.partial(_choose, chosen, ident, root),
        )
    menu.bind("<Unmap>", lambda _e: root.after(50, root.quit))
    x, y = root.winfo_pointerxy()
    root.after(0, lambda: menu.tk_popup(x, y))
    root.mainloop()
    if chosen:
        print(chosen[0], flush=True)
    root.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(popup_main())
