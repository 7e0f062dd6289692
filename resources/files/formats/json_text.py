"""JSON values as the text the raw layer lands: one rule whichever parser read them.

- strings as they are; null as null;
- booleans as `true` / `false`;
- integers exactly, whatever their size;
- other numbers in canonical form: Arrow's rendering of the double (shortest text that reads back to the
  same double: `12.50` lands as `12.5`, `1e3` as `1000`). The fast path (Arrow's JSON reader) only ever
  sees doubles, so the Python path renders its floats through Arrow too, and both agree;
- objects and arrays as compact JSON text (`{"a":[1,2]}`, keys in delivered order; numbers inside are
  Python's rendering, e.g. `1000.0`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

EXACT_DOUBLE_LIMIT = 2**53
"""Beyond this magnitude a double no longer holds every integer: such integers never go through one."""

_SCALAR_TYPES_AS_TEXT = (
    pa.types.is_string,
    pa.types.is_null,
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_floating,
)


def arrow_column_as_text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column Arrow parsed from JSON (string, int64, double, bool or null) as text."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


def records_as_text(records: Iterable[Mapping[str, Any]]) -> pa.RecordBatch:
    """Parsed JSON objects as one all-text batch: columns in first-seen order, a missing key is null."""
    rows = list(records)
    names = list(dict.fromkeys(key for row in rows for key in row))
    return pa.RecordBatch.from_arrays(
        [values_as_text([row.get(name) for row in rows]) for name in names], names=names
    )


def values_as_text(values: list[Any]) -> pa.Array:
    """Parsed JSON values of one column as text. Columns of one scalar kind go through Arrow in one call."""
    try:
        inferred = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _mixed_values_as_text(values)
    if pa.types.is_floating(inferred.type) and any(
        type(value) is int and abs(value) >= EXACT_DOUBLE_LIMIT for value in values
    ):
        return _mixed_values_as_text(values)  # Arrow made big integers doubles
    if any(is_kind(inferred.type) for is_kind in _SCALAR_TYPES_AS_TEXT):
        return arrow_column_as_text(inferred)
    return _mixed_values_as_text(values)


def _mixed_values_as_text(values: list[Any]) -> pa.Array:
    texts = [value if value is None or isinstance(value, str) else _value_text(value) for value in values]
    floats = [at for at, value in enumerate(values) if isinstance(value, float)]
    if floats:
        rendered = pa.array([values[at] for at in floats], pa.float64()).cast(pa.string()).to_pylist()
        for at, text in zip(floats, rendered, strict=True):
            texts[at] = text
    return pa.array(texts, pa.string())


def _value_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return None  # rendered through Arrow by the caller, all floats of the column at once
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
