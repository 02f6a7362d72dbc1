"""What the backend runs on: device name and memory, for ``hello`` and ``status``."""

from __future__ import annotations

import os
import sys
from typing import Any


def device_info() -> dict[str, Any]:
    """The best device here and its memory. Torch is consulted only when something already
    imported it (a diffusion engine did), so a CPU-only backend starts in a fraction of a second."""
    info: dict[str, Any] = {"device": "cpu", "memory": {"ram_total": _ram_total()}}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        info["device"] = f"cuda:0 {torch.cuda.get_device_name(0)}"
        info["memory"].update({"vram_total": total, "vram_free": free})
    return info


def _ram_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
