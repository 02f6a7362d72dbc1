"""What the plugins say to a user: error advice, progress stage labels and new layers' names.

Both editors read their words from here, so a retoucher sees the same text in Krita and in
GIMP, and a new error code or stage needs one entry, not one per plugin.
"""

from __future__ import annotations

from .protocol import ErrorCode

#: Advice per stable error code. The backend's own message is appended where it says something
#: specific (which file, which limit), so users get both the plain advice and the precise cause.
ERROR_TEXT: dict[str, str] = {
    ErrorCode.EMPTY_MASK: "Nothing is selected in that region. Select the area to refine first.",
    ErrorCode.TOO_LARGE: "The region is too large for the backend. Select a smaller area or lower the context margin.",
    ErrorCode.SIZE_MISMATCH: "The selection and the image tile disagree in size (a plugin bug; please report it).",
    ErrorCode.NOT_FINITE: "The image contains invalid float values (NaN or infinity) in that region.",
    ErrorCode.UNKNOWN_ENGINE: "The backend does not know the chosen engine. Pick another preset.",
    ErrorCode.UNKNOWN_PRESET: "The backend does not know the chosen preset. Pick another one.",
    ErrorCode.UNSUPPORTED: "The chosen preset cannot do this.",
    ErrorCode.MODEL_MISSING: "The model for this preset is not installed.",
    ErrorCode.MODEL_BROKEN: "The model files for this preset are damaged.",
    ErrorCode.OUT_OF_MEMORY: "The backend ran out of memory. Select a smaller area or use a lighter preset.",
    ErrorCode.QUEUE_FULL: "The backend's queue is full. Wait for running refines to finish.",
    ErrorCode.BAD_PARAMS: "A setting is out of range.",
    ErrorCode.ENGINE_FAILED: "The engine failed on this region.",
    ErrorCode.PROTOCOL_MISMATCH: "The plugin and the backend are different versions. Update both together.",
    ErrorCode.UNREACHABLE: "The Touchup backend is not running. Start it (or run `touchup serve`), then try again.",
    ErrorCode.TIMEOUT: "The refine took too long and was abandoned.",
    ErrorCode.FORBIDDEN: "The backend refused this client. Check the connection settings (endpoint and keys).",
    ErrorCode.WORKER_RESTARTED: "The backend hit an internal fault while refining and recovered. Try again.",
    ErrorCode.BACKEND_RESTARTED: "The backend was restarted while refining, so the refine was lost. Try again.",
    ErrorCode.BAD_RESULT: "The backend sent a result that does not fit the selection; nothing was changed.",
    ErrorCode.REPLICA_LOST: "The GPU worker running this refine failed, and again on a second one. Try again.",
    ErrorCode.CLUSTER_UNAVAILABLE: "The backend's GPU pool is unreachable. Ask the studio's admin, or try again shortly.",
    ErrorCode.BAD_CONNECTION: "The connection file cannot be used. Import a fresh one from the studio's admin.",
    ErrorCode.CANCELLED: "Refine cancelled.",
}

#: Codes whose backend message already is the advice (it names the command to run, etc.).
BACKEND_TEXT_FIRST = frozenset({ErrorCode.MODEL_MISSING, ErrorCode.UNSUPPORTED, ErrorCode.BAD_PARAMS})


def error_text(code: str, message: str = "", detail: str | None = None) -> str:
    """One paragraph for the user: plain advice first, then the backend's specific reason."""
    base = ERROR_TEXT.get(code)
    message = (message or "").strip()
    if base is None:
        return f"The backend reported an error: {message or code}"
    if not message or code in (ErrorCode.UNREACHABLE, ErrorCode.CANCELLED):
        return base
    if code in BACKEND_TEXT_FIRST:
        return f"{base} {message[0].upper()}{message[1:]}"
    return f"{base} ({message})"


#: Progress stages the backend reports (``PROTOCOL.md``), as a user reads them.
STAGE_TEXT: dict[str, str] = {
    "queued": "Queued",
    "starting": "Starting",
    "loading": "Loading model",
    "focus": "Preparing region",
    "analyse": "Analysing",
    "register": "Matching the reference",
    "transfer": "Transferring detail",
    "restore": "Restoring detail",
    "denoise": "Refining",
    "refine": "Refining",
    "paste": "Blending into the image",
    "done": "Finishing",
}


def stage_text(stage: str) -> str:
    """Human text for a progress stage; ``refine 2/3`` (several regions) keeps its counter."""
    head, _, tail = (stage or "").partition(" ")
    text = STAGE_TEXT.get(head, head.replace("_", " ").capitalize() or "Working")
    return f"{text} (region {tail})" if tail else text


#: Longest label in a new layer's name: long enough for an instruction, short enough that the
#: layers docker of either editor shows it whole.
LAYER_LABEL_MAX = 60
LAYER_PREFIX = "Touchup: "


def layer_name(instruction: str = "", *fallbacks: str | None) -> str:
    """``Touchup: <instruction>``, or the first non-empty fallback (a preset, "from <reference>")."""
    label = " ".join((instruction or "").split()) or next((f for f in fallbacks if f), "refined selection")
    if len(label) > LAYER_LABEL_MAX:
        label = label[: LAYER_LABEL_MAX - 1].rstrip() + "…"
    return LAYER_PREFIX + label


# -- the retoucher's loop: variants, preview, compare -----------------------------------------

#: Words of the results strip (Krita's docker; GIMP shows variants as layers).
STRIP_TEXT: dict[str, str] = {
    "title": "Results",
    "variants": "Variants",
    "variants_tip": "How many candidates one Refine makes, each with the next seed (1-8)",
    "apply": "Apply",
    "apply_tip": "Insert the chosen result as a new layer (one undo step)",
    "discard": "Discard",
    "discard_tip": "Drop the chosen result and the other candidates of its refine; the document stays as it is",
    "compare": "Compare",
    "compare_tip": "Flip the canvas between the original and the chosen result",
    "running": "Refining…",
    "empty": "Results of this document appear here; choose one to preview it on the canvas.",
    "preview_unavailable": "The canvas preview needs an unrotated, unmirrored view; Apply still works.",
    "applied": "Added layer '{name}'.",
    "discarded": "Discarded {count} result(s); the document is unchanged.",
    "arrived": "{count} of {total} results ready; choose one to preview it.",
}


def result_tooltip(seed: int, preset: str, instruction: str, variant: int = 0, variants: int = 1) -> str:
    """A strip thumbnail's tooltip: what made this candidate, so it can be made again."""
    lines = [f"Seed {seed}", f"Preset {preset or 'default'}"]
    if instruction:
        lines.append(f"Instruction: {instruction}")
    if variants > 1:
        lines.append(f"Variant {variant + 1} of {variants}")
    return "\n".join(lines)


def applied_layer_name(label: str, seed: int, variants: int) -> str:
    """The layer an applied candidate becomes (Krita's strip): the refine's label plus its seed
    when there were several, so the layer says how to make it again."""
    return f"{label} (seed {seed})" if variants > 1 else label


#: What a group of variants is called when neither an instruction nor a reference names it.
VARIANTS_LABEL = "variants"


def variants_group_name(instruction: str = "", *fallbacks: str | None) -> str:
    """The name of the layer group holding one request's variants: the same rule as a single
    result layer (``Touchup: <instruction>``), with ``Touchup: variants`` as the last resort, so
    a group never reads "refined selection" when it holds several candidates."""
    return layer_name(instruction, *fallbacks, VARIANTS_LABEL)


def variant_label(index: int, count: int) -> str:
    """``variant 2 of 4`` for the 0-based ``index``: how progress and layers count variants."""
    return f"variant {index + 1} of {count}"


def variant_layer_name(index: int, count: int, seed: int | None) -> str:
    """One variant's layer inside its group: which one it is and the seed that reproduces it."""
    label = variant_label(index, count).capitalize()
    return f"{label} (seed {seed})" if seed is not None else label
