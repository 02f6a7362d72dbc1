"""The one definition of what a request may carry: every field's type, default, bounds and values.

Each field is data (a :class:`Field`), so the client's defaults, the backend's validation and
the protocol document read the same table. Bounds are chosen so that nothing a client sends can
make the backend build a value it cannot encode or afford: coordinates stay far inside int64
after any arithmetic, strings are short enough to log, the extra-parameter map is small and flat.

Pure stdlib: this module runs inside Krita's and GIMP's own Pythons too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import ErrorCode, Kind, Transfer, WireEnum

#: Largest document coordinate or size accepted (2**24 = 16.7 million px: beyond any editor).
MAX_COORD = 2**24
#: Longest request id, engine/preset/job name and client name.
MAX_NAME = 128
#: Longest instruction (prompt) in characters.
MAX_PROMPT = 4000
#: How many unknown keys an error message names.
MAX_UNKNOWN_SHOWN = 4
#: Most results one request may ask for (``params.variants``).
MAX_VARIANTS = 8
#: Seeds wrap here (the ``seed`` field's bound plus one).
SEED_MODULUS = 2**63
#: Output sample types (the same names as frame dtypes).
DTYPES = ("u8", "u16", "f16", "f32")


class FieldType(WireEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TEXT = "text"
    INT_PAIR = "int_pair"


class Mode(WireEnum):
    REFINE = "refine"  # keep what the region shows, fix its detail
    REGENERATE = "regenerate"  # repaint the region from the instruction (selection may be empty)


@dataclass(frozen=True)
class Field:
    """One request field. ``None`` (or absence) means ``default``; ``default=None`` means the
    engine decides. ``lo``/``hi`` bound numbers (each member of a pair), ``max_len`` text,
    ``choices`` any value."""

    name: str
    type: FieldType
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    max_len: int | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def check(self, value: Any) -> Any:
        """The value, typed and within bounds, or :class:`RequestError` naming the field."""
        if value is None:
            return self.default
        t = self.type
        if t is FieldType.BOOL:
            if not isinstance(value, bool):
                raise self._error(f"must be true or false, got {_show(value)}")
            return value
        if t is FieldType.TEXT:
            if not isinstance(value, str):
                raise self._error(f"must be text, got {_show(value)}")
            if self.max_len is not None and len(value) > self.max_len:
                raise self._error(f"is {len(value)} characters long; at most {self.max_len} are accepted")
            if self.choices and value not in self.choices:
                raise self._error(f"must be one of {', '.join(self.choices)}, got {_show(value)}")
            return str(value)
        if t is FieldType.INT_PAIR:
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise self._error(f"must be two integers, got {_show(value)}")
            return tuple(self._number(v, integer=True) for v in value)
        return self._number(value, integer=t is FieldType.INT)

    def _number(self, value: Any, integer: bool) -> int | float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(value, float) and not math.isfinite(value):
            raise self._error(f"must be a finite number, got {_show(value)}")
        if not ok or (integer and not float(value).is_integer()):
            raise self._error(f"must be a{'n integer' if integer else ' number'}, got {_show(value)}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self._error(f"must be between {self.lo:g} and {self.hi:g}, got {_show(value)}")
        return int(value) if integer else float(value)

    def _error(self, what: str) -> RequestError:
        return RequestError(f"{self.name} {what}")


class RequestError(ValueError):
    """A request field is of the wrong type or out of bounds (answered as ``bad_params``)."""

    code = ErrorCode.BAD_PARAMS

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the table -----------------------------------------------------------------------------------

#: Fields every request may carry.
ID = Field("id", FieldType.TEXT, max_len=MAX_NAME, doc="client's request id, echoed on every reply")

#: Top-level fields of a ``refine`` request (besides ``kind``, ``v``, ``id``, ``frames``, ``params``).
REFINE_FIELDS: tuple[Field, ...] = (
    Field("origin", FieldType.INT_PAIR, (0, 0), -MAX_COORD, MAX_COORD, doc="tile's top-left in the document"),
    Field("doc_size", FieldType.INT_PAIR, None, 1, MAX_COORD, doc="document size (default: the tile's)"),
    Field("prompt", FieldType.TEXT, "", max_len=MAX_PROMPT, doc="instruction for engines that take one"),
    Field("engine", FieldType.TEXT, None, max_len=MAX_NAME, doc="engine name (default: the backend's)"),
    Field("preset", FieldType.TEXT, None, max_len=MAX_NAME, doc="engine preset (default: the engine's)"),
    Field("output_dtype", FieldType.TEXT, None, choices=DTYPES, doc="result dtype (default: the source's)"),
    Field(
        "transfer",
        FieldType.TEXT,
        Transfer.SRGB.value,
        choices=tuple(t.value for t in Transfer),
        doc="how the document's pixels encode light",
    ),
)

#: The ``params`` map of a ``refine`` request.
PARAM_FIELDS: tuple[Field, ...] = (
    Field("strength", FieldType.FLOAT, 1.0, 0.0, 1.0, doc="how far the engine may depart from the source"),
    Field("steps", FieldType.INT, None, 1, 1000, doc="denoising steps (engine's default)"),
    Field("seed", FieldType.INT, 0, 0, SEED_MODULUS - 1, doc="random seed (variant i uses seed + i)"),
    Field(
        "variants",
        FieldType.INT,
        None,
        1,
        MAX_VARIANTS,
        doc="results with consecutive seeds, each sent when done (default: the preset's)",
    ),
    Field("guidance", FieldType.FLOAT, None, 0.0, 100.0, doc="guidance scale (engine's default)"),
    Field("context", FieldType.FLOAT, 64.0, 0.0, 4096.0, doc="context margin, px at 1-megapixel scale"),
    Field("feather", FieldType.FLOAT, 8.0, 0.0, 1024.0, doc="inward blend width in px"),
    Field("mode", FieldType.TEXT, Mode.REFINE.value, choices=tuple(m.value for m in Mode)),
    Field("color_correct", FieldType.BOOL, True, doc="match the result's colours to the surroundings"),
)

#: Fields of the other requests, by kind.
MESSAGE_FIELDS: dict[str, tuple[Field, ...]] = {
    Kind.HELLO: (Field("client", FieldType.TEXT, "", max_len=MAX_NAME, doc="client name and version"),),
    Kind.CANCEL: (Field("job", FieldType.TEXT, None, max_len=MAX_NAME, doc="backend job id"),),
    Kind.REFINE: REFINE_FIELDS,
}

#: Parameter defaults as a client sends them (``None``: the engine's default, left out).
DEFAULT_PARAMS: dict[str, Any] = {f.name: f.default for f in PARAM_FIELDS}


def variant_seed(seed: int, index: int) -> int:
    """The seed variant ``index`` (0-based) of a request with ``seed`` runs with: consecutive
    seeds, so "variant 3 of seed 10" and "seed 13 alone" give the same pixels, wrapping within
    the ``seed`` field's range."""
    return (int(seed) + int(index)) % SEED_MODULUS


def check_fields(fields: tuple[Field, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of ``fields`` read from ``values`` (defaults filled in), checked."""
    return {f.name: f.check(values.get(f.name)) for f in fields}


def check_known(fields: tuple[Field, ...], raw: Mapping[str, Any], where: str) -> None:
    """Refuse keys the schema does not define: a misspelt or newer parameter must not be dropped
    silently (the user would believe it took effect), nor ride along untyped to an engine."""
    known = {f.name for f in fields}
    unknown = [k for k in raw if k not in known]
    if unknown:
        shown = ", ".join(_show(k) for k in unknown[:MAX_UNKNOWN_SHOWN])
        more = f" and {len(unknown) - MAX_UNKNOWN_SHOWN} more" if len(unknown) > MAX_UNKNOWN_SHOWN else ""
        raise RequestError(f"{where} has unknown key(s) {shown}{more}; known: {', '.join(sorted(known))}")


def _show(value: Any) -> str:
    """A value for an error message: never more than a line, whatever a client sent."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
