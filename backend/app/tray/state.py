"""What the tray shows: the backend's state from its ``status`` reply, and the icon for it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


class Phase(str, Enum):
    """The backend's state as the tray shows it: the icon's colour and the status line's word."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    ERROR = "error"


STARTING, IDLE, BUSY, ERROR = Phase.STARTING, Phase.IDLE, Phase.BUSY, Phase.ERROR
#: Icon colours per state (RGB): what a glance at the tray tells.
COLOURS = {
    STARTING: (120, 144, 156),  # grey-blue
    IDLE: (46, 160, 67),  # green
    BUSY: (230, 145, 30),  # orange
    ERROR: (211, 47, 47),  # red
}


@dataclass(frozen=True)
class TrayState:
    phase: Phase = STARTING
    detail: str = "starting the backend"
    progress: float | None = None  # 0..1 while busy, when the job reports steps
    model: str | None = None  # loaded engine (and preset)
    pid: int | None = None  # backend process id
    restarts: int = 0

    def line(self) -> str:
        """The status line: menu entry and tooltip."""
        text = f"Touchup: {self.phase.value}"
        if self.phase == BUSY and self.progress is not None:
            text += f" {round(self.progress * 100)}%"
        return f"{text} - {self.detail}" if self.detail else text


def state_from_status(status: dict[str, Any], pid: int | None, restarts: int) -> TrayState:
    """Turn a backend ``status`` reply into what the tray shows."""
    worker = status.get("worker") or {}
    queue = status.get("queue") or {}
    running = queue.get("running")
    waiting = len(queue.get("waiting") or [])
    engine = worker.get("engine")
    model = None
    if engine:
        model = f"{engine} ({worker['preset']})" if worker.get("preset") else str(engine)
    pid = status.get("pid", pid)
    if worker.get("state") == "loading":
        return TrayState(BUSY, f"loading {model or 'model'}", None, model, pid, restarts)
    if running or worker.get("state") == "busy":
        progress = None
        detail = "refining"
        if running:
            step, total = running.get("step"), running.get("total")
            if isinstance(step, int) and isinstance(total, int) and total > 0:
                progress = max(0.0, min(1.0, step / total))
            if running.get("stage"):
                detail = f"{running['stage']}"
        if waiting:
            detail += f", {waiting} waiting"
        return TrayState(BUSY, detail, progress, model, pid, restarts)
    detail = f"ready, {queue.get('completed', 0)} job(s) done"
    if worker.get("restarts"):  # the backend replaced a dead worker: worth a look at the log
        detail += f", worker restarted {worker['restarts']}x"
    return TrayState(IDLE, detail, None, model, pid, restarts)


def icon_image(state: TrayState, size: int = 64) -> Image.Image:
    """A filled circle in the state's colour; while busy, a white ring shows the progress."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    pad = max(1, size // 16)
    draw.ellipse((pad, pad, size - pad - 1, size - pad - 1), fill=COLOURS[state.phase] + (255,))
    if state.phase == BUSY and state.progress is not None:
        inner = size // 4
        box = (inner, inner, size - inner - 1, size - inner - 1)
        draw.pieslice(box, -90, -90 + 360 * state.progress, fill=(255, 255, 255, 255))
    return img
