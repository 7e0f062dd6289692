"""How far an incremental extraction got, as a small JSON document the caller stores after landing.

Format (JSON-serializable, exact round trip, microseconds included):

    {"cursor_column": "updated_at", "cursor": "2026-01-01T00:00:00.123456",
     "tie_breaker_columns": ["id"], "tie_breaker": [42]}

Timestamps are ISO-8601 (`+00:00` for timestamptz), dates ISO dates, decimals strings, integers, floats and
texts themselves. `key` mode and custom queries record no tie-breaker. The column names are recorded so
that a watermark is never applied to a different cursor after the catalog changed.

The extraction returns the new watermark and never stores it: the caller persists it only after its
landing committed, so a failed landing re-reads the same rows next time.

Filters, with `(cursor, tie-breakers...)` ordered ascending (tie-breakers default to the primary key):

- `timestamp`, lookback 0: `(cursor, tb...) > (:cursor, :tb...)`. Rows sharing the boundary timestamp
  are never lost (the tie-breaker says which of them were already read) and no row version is read twice.
  Without any tie-breaker column: `cursor > :cursor`.
- `timestamp`, lookback > 0: `cursor >= :cursor - lookback`. Rows landed before are read again on purpose;
  the staging layer de-duplicates them by primary key (latest cursor wins). The lookback exists for late
  commits: a transaction stamps `updated_at` (`now()` is its start, `clock_timestamp()` the statement's)
  before it commits; an extraction in between sees later-stamped rows, moves the watermark past the late
  one, and `>` never reads it (tests/test_database_source_postgres.py shows it happen). Set the lookback
  above the longest write transaction of the source; unset, it is 300 s (`DEFAULT_LOOKBACK_SECONDS`).
- `key`: `key > :cursor`, for append-only tables. Sequences have the same late-commit gap (a smaller key
  can commit after a larger one is read): with concurrent writers prefer `timestamp` mode with a lookback.
- first run: no filter, or `cursor >= initial_value` when one is configured.

Rows whose cursor is NULL are read by the first run only: no watermark can be placed before them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from resources.databases.column_types import ColumnType
from resources.databases.errors import ExtractionConfigError

Mode = Literal["timestamp", "key", "query"]
Position = tuple[Any, ...]
"""The cursor value followed by the tie-breaker values, as Python values."""


@dataclass(frozen=True)
class WatermarkColumns:
    """The columns whose values say how far an extraction got."""

    mode: Mode
    cursor: ColumnType
    tie_breakers: tuple[ColumnType, ...] = ()

    def __post_init__(self) -> None:
        for column in (self.cursor, *self.tie_breakers):
            if not _is_cursor_type(column.arrow_type):
                raise ExtractionConfigError(
                    f"Column {column.name!r} ({column.database_type}) cannot order an incremental "
                    f"extraction: use a timestamp, date, number or text column."
                )

    @property
    def all(self) -> tuple[ColumnType, ...]:
        return (self.cursor, *self.tie_breakers)

    def decode(self, watermark: Mapping[str, Any]) -> Position:
        """A stored watermark as Python values; refused if it was recorded for other columns."""
        recorded = (
            watermark.get("cursor_column", self.cursor.name),
            *watermark.get("tie_breaker_columns", ()),
        )
        expected = tuple(column.name for column in self.all)
        if recorded != expected[: len(recorded)] or "cursor" not in watermark:
            raise ExtractionConfigError(
                f"The stored watermark {dict(watermark)} was recorded for columns {list(recorded)}, the "
                f"catalog now extracts by {list(expected)}: reset the entity's watermark to re-extract."
            )
        values = (watermark["cursor"], *watermark.get("tie_breaker", ()))
        return tuple(python_value(value, column) for value, column in zip(values, self.all, strict=False))

    def encode(self, position: Position) -> dict[str, Any]:
        watermark: dict[str, Any] = {"cursor_column": self.cursor.name, "cursor": json_value(position[0])}
        if self.tie_breakers:
            watermark["tie_breaker_columns"] = [column.name for column in self.tie_breakers]
            watermark["tie_breaker"] = [json_value(value) for value in position[1:]]
        return watermark


def incremental_filter(
    columns: WatermarkColumns,
    sources: Mapping[str, ColumnElement],
    position: Position | None,
    initial_value: str | int | None,
    lookback_seconds: float,
) -> ColumnElement | None:
    """The WHERE clause of a table extraction (see the module docstring), with bound parameters."""
    cursor = sources[columns.cursor.name]
    if position is None:
        if initial_value is None:
            return None
        return cursor >= sa.bindparam("initial_value", python_value(initial_value, columns.cursor))
    if columns.mode == "key":
        return cursor > sa.bindparam("watermark", position[0])
    if lookback_seconds > 0:
        return cursor >= sa.bindparam("lookback_from", looked_back(position[0], lookback_seconds))
    if len(position) < len(columns.all):
        return cursor > sa.bindparam("watermark", position[0])
    bounds = [sa.bindparam("watermark", position[0])]
    bounds += [sa.bindparam(f"tie_breaker_{index}", value) for index, value in enumerate(position[1:])]
    return sa.tuple_(*(sources[column.name] for column in columns.all)) > sa.tuple_(*bounds)


def custom_query_parameter(
    columns: WatermarkColumns,
    position: Position | None,
    initial_value: str | int | None,
    lookback_seconds: float,
) -> Any:
    """The value of a custom query's `:watermark`: the last cursor minus the lookback, the initial value on
    the first run, else NULL."""
    if position is None:
        return None if initial_value is None else python_value(initial_value, columns.cursor)
    return looked_back(position[0], lookback_seconds) if lookback_seconds > 0 else position[0]


class WatermarkTracker:
    """Follows the batches of one extraction and knows the position it reached. Ordered extractions (table
    modes) end at their last row with a cursor; a custom query's rows have no known order, so its position
    is the greatest cursor seen. Without rows, the position stays where it started."""

    def __init__(self, columns: WatermarkColumns, start: Position | None, *, ordered: bool) -> None:
        self.columns = columns
        self._ordered = ordered
        self.position = start

    def observe(self, batch: pa.RecordBatch) -> None:
        cursor = batch.column(self.columns.cursor.name)
        if cursor.null_count == len(cursor):
            return
        if self._ordered:
            last = (
                len(cursor) - 1
                if cursor.null_count == 0
                else pc.indices_nonzero(cursor.is_valid())[-1].as_py()
            )
            self.position = tuple(batch.column(column.name)[last].as_py() for column in self.columns.all)
            return
        greatest = pc.max(cursor).as_py()
        if self.position is None or greatest > self.position[0]:
            self.position = (greatest,)

    @property
    def watermark(self) -> dict[str, Any] | None:
        return None if self.position is None else self.columns.encode(self.position)


def json_value(value: Any) -> Any:
    """A cursor value as JSON: ISO text for dates and times (microseconds kept), text for decimals."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def python_value(value: Any, column: ColumnType) -> Any:
    """A JSON watermark value (or a configured initial value) as the Python value of the column's type."""
    arrow_type = column.arrow_type
    try:
        if pa.types.is_timestamp(arrow_type):
            parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            if arrow_type.tz is not None and parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            if arrow_type.tz is None and parsed.tzinfo is not None:
                raise ValueError("a time zone for a column without one")
            return parsed
        if pa.types.is_date(arrow_type):
            return date.fromisoformat(str(value))
        if pa.types.is_decimal(arrow_type):
            return Decimal(str(value))
        if pa.types.is_integer(arrow_type):
            return int(value)
        if pa.types.is_floating(arrow_type):
            return float(value)
        return str(value)
    except (ValueError, ArithmeticError) as error:
        raise ExtractionConfigError(
            f"Watermark value {value!r} is not a valid {arrow_type} for column {column.name!r} "
            f"({column.database_type}): {error}"
        ) from error


def looked_back(value: Any, seconds: float) -> Any:
    """The cursor value `seconds` before `value`: rounded down, so the window is never shorter."""
    if isinstance(value, datetime):
        return value - timedelta(seconds=seconds)
    if isinstance(value, date):
        return value - timedelta(days=math.ceil(seconds / 86400))
    if isinstance(value, int):
        return value - math.ceil(seconds)
    if isinstance(value, Decimal):
        return value - Decimal(str(seconds))
    if isinstance(value, float):
        return value - seconds
    return _looked_back_text(str(value), seconds)


def _looked_back_text(text: str, seconds: float) -> str:
    """For text cursors (SQLite timestamps): the earlier time written the way `text` is, so that comparing
    the texts compares the times."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise ExtractionConfigError(
            f"lookback_seconds needs a cursor holding ISO-8601 timestamps; the watermark is {text!r}"
        ) from error
    earlier = parsed - timedelta(seconds=seconds)
    if len(text) == len("2026-01-01"):
        return earlier.date().isoformat()
    separator = text[10]
    timespec = "microseconds" if "." in text[19:] else "seconds"
    return earlier.isoformat(sep=separator, timespec=timespec)


def _is_cursor_type(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_timestamp(arrow_type)
        or pa.types.is_date(arrow_type)
        or pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_string(arrow_type)
    )
