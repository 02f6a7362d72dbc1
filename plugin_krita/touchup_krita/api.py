"""The headless entry point: ``refine(document, ...)`` for scripts and tests.

It runs the same code path as the menu action and the docker's button (controller ->
document capture -> job queue -> result layer), minus the dialog. With ``wait=True`` it spins
Qt's event loop until the layer is in the document, so it also works where no event loop is
running (``kritarunner``).
"""

from __future__ import annotations

from typing import Any

from .config import SOURCE_LAYER, SOURCE_VISIBLE, RefineSettings
from .controller import controller, wait_for
from .document import PluginError, find_node
from .jobs import Job, JobState


class RefineError(Exception):
    """A refine did not produce a layer; ``str()`` is the message the docker would show."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def refine(
    document: Any,
    instruction: str = "",
    reference: Any = None,
    wait: bool = True,
    timeout: float | None = 600.0,
    source: str = SOURCE_VISIBLE,
    layer: Any = None,
    **options: Any,
) -> Any:
    """Refine ``document``'s selection; return the new layer (``wait=True``) or the :class:`Job`.

    ``reference``: a layer (Node), its ``uniqueId`` or its name. ``source``: ``"visible"`` (the
    merged image, default) or ``"layer"``: ``layer`` (a Node, id or name) or else the active
    layer -- scripts without a view have no active layer, so they pass ``layer``. ``options``: any
    :class:`RefineSettings` field (``preset``, ``engine``, ``strength``, ``steps``, ``seed``,
    ``context``, ``feather``, ``mode``...). Raises :class:`RefineError` with the user-facing
    message when no layer is produced.
    """
    if source not in (SOURCE_VISIBLE, SOURCE_LAYER):
        raise ValueError(f"source must be {SOURCE_VISIBLE!r} or {SOURCE_LAYER!r}, not {source!r}")
    settings = RefineSettings.from_dict(
        {
            **options,
            "instruction": instruction,
            "source": source,
            "layer": _node_id(document, layer),
            "reference": _node_id(document, reference),
        }
    )
    ctl = controller()
    try:
        job = ctl.refine(document, settings)
    except PluginError as exc:
        raise RefineError(str(exc), "plugin") from None
    if not wait:
        return job
    wait_for(job, timeout)
    return result_of(job)


def result_of(job: Job) -> Any:
    """The layer a finished job created, or :class:`RefineError` with the docker's message."""
    if job.state == JobState.DONE:
        return job.output
    if not job.over:
        controller().queue.cancel(job)
        raise RefineError("The refine did not finish in time and was cancelled.", "timeout")
    raise RefineError(job.error, job.error_code)


def _node_id(document: Any, node: Any) -> str | None:
    """A node given as Node, QUuid, id text or layer name, as id text."""
    if node is None or node == "":
        return None
    if hasattr(node, "uniqueId"):
        return str(node.uniqueId().toString())
    text = str(node.toString() if hasattr(node, "toString") else node)
    if document is not None and find_node(document, text) is None:
        node = document.nodeByName(text)
        if node is not None:
            return str(node.uniqueId().toString())

    return text
