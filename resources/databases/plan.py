"""What one extraction selects, decided inside its snapshot before any row is read.

A table extraction is checked against the table's reflected definition (every configured column, the
primary key, the cursor and tie-breakers must exist; names are exact, case-sensitive) and built from
SQLAlchemy constructs, so identifiers are always quoted and never pasted into SQL text. A custom query is
the user's SELECT with its `:watermark` bound; on PostgreSQL its result columns are described up front
(an empty run of it) so both read paths type them alike, elsewhere they are inferred from the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.sql import quoted_name
from sqlalchemy.sql.elements import ColumnElement

from resources.databases.column_types import ColumnType, column_type, postgres_result_type, selected
from resources.databases.config import Incremental, TableExtraction
from resources.databases.engine import DatabaseEngine
from resources.databases.errors import ExtractionConfigError
from resources.databases.watermark import (
    WatermarkColumns,
    WatermarkTracker,
    custom_query_parameter,
    incremental_filter,
    python_value,
)

LISTED_NAMES = 50


@dataclass(frozen=True)
class TableDescription:
    """A table as the database declares it: columns with their Arrow types, and the primary key."""

    schema_name: str | None
    table: str
    columns: list[ColumnType]
    primary_key: list[str]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([column.field for column in self.columns])

    @property
    def qualified_name(self) -> str:
        return self.table if self.schema_name is None else f"{self.schema_name}.{self.table}"


@dataclass(frozen=True)
class ExtractionPlan:
    """The statement of one extraction, its result columns and how it tracks its progress."""

    statement: sa.sql.Executable
    columns: list[ColumnType] | None
    """None: a custom query on a database that does not describe results; typed from its rows."""
    tracker: WatermarkTracker | None
    what: str
    """What the extraction does, for messages: "Extracting public.orders"."""


def describe_table(
    connection: sa.Connection, extraction: TableExtraction, engine: DatabaseEngine
) -> TableDescription:
    if extraction.table is None:
        raise ExtractionConfigError("describe_table needs a `table`; a custom `query` has no table.")
    inspector = sa.inspect(connection)
    table = quoted_name(extraction.table, quote=True)
    schema = None if extraction.schema_name is None else quoted_name(extraction.schema_name, quote=True)
    try:
        reflected = inspector.get_columns(table, schema=schema)
        primary_key = inspector.get_pk_constraint(table, schema=schema)["constrained_columns"]
    except sa_exc.NoSuchTableError:
        raise _missing_table(inspector, extraction, engine) from None
    except sa_exc.DBAPIError as error:
        raise engine.failed(error, f"Reading the definition of {extraction.table!r}") from error
    columns = [
        column_type(column["name"], column["type"], column["nullable"], connection.dialect)
        for column in reflected
    ]
    return TableDescription(extraction.schema_name, extraction.table, columns, list(primary_key))


def table_plan(
    description: TableDescription,
    extraction: TableExtraction,
    primary_key: list[str],
    watermark: dict[str, Any] | None,
    until: str | int | None = None,
) -> ExtractionPlan:
    """Full or incremental extraction of a described table (see `watermark` for the filters), bounded by
    `until` (the cursor at most that, included) when a range is re-extracted."""
    by_name = {column.name: column for column in description.columns}
    incremental = extraction.incremental
    tie_breakers = _tie_breakers(incremental, primary_key)
    _require_columns(
        description,
        [*(extraction.columns or []), *primary_key, *_incremental_columns(incremental, tie_breakers)],
    )
    columns = [by_name[name] for name in extraction.columns] if extraction.columns else description.columns
    table = sa.table(
        quoted_name(description.table, quote=True),
        *(sa.column(quoted_name(name, quote=True)) for name in by_name),
        schema=None if description.schema_name is None else quoted_name(description.schema_name, quote=True),
    )
    sources: dict[str, ColumnElement] = {name: table.c[name] for name in by_name}
    statement = sa.select(*(selected(column, sources[column.name]) for column in columns)).select_from(table)
    what = f"Extracting {description.qualified_name}"
    if incremental is None:
        return ExtractionPlan(statement, columns, None, what)
    _require_selected(columns, [incremental.cursor_column, *tie_breakers], description.qualified_name)
    watermark_columns = WatermarkColumns(
        incremental.mode, by_name[incremental.cursor_column], tuple(by_name[name] for name in tie_breakers)
    )
    position = None if watermark is None else watermark_columns.decode(watermark)
    condition = incremental_filter(
        watermark_columns, sources, position, incremental.initial_value, incremental.lookback_seconds
    )
    if condition is not None:
        statement = statement.where(condition)
    if until is not None:
        bound = python_value(until, watermark_columns.cursor)
        statement = statement.where(sources[incremental.cursor_column] <= sa.bindparam("until", bound))
    statement = statement.order_by(*(sources[column.name] for column in watermark_columns.all))
    return ExtractionPlan(
        statement, columns, WatermarkTracker(watermark_columns, position, ordered=True), what
    )


def query_plan(
    connection: sa.Connection,
    extraction: TableExtraction,
    watermark: dict[str, Any] | None,
    engine: DatabaseEngine,
    until: str | int | None = None,
) -> ExtractionPlan:
    """The custom query, its `:watermark` bound (NULL on a first run without `initial_value`)."""
    assert extraction.query is not None
    if until is not None:
        raise ExtractionConfigError(
            "A custom query cannot be re-extracted up to a bound: it has no cursor column the platform "
            "filters on. Re-extract it from a point on (reset or backfill without `until`) instead."
        )
    query = sa.text(extraction.query.strip().rstrip(";"))
    incremental = extraction.incremental
    takes_watermark = "watermark" in query.compile(dialect=connection.dialect).params
    if incremental is not None and not takes_watermark:
        raise ExtractionConfigError(
            "An incremental custom query must use the bind parameter :watermark (e.g. "
            "`WHERE updated_at > :watermark`); it is NULL on the first run."
        )
    if incremental is not None and incremental.mode != "timestamp":
        raise ExtractionConfigError("A custom query tracks its watermark in `timestamp` mode only.")
    if takes_watermark:
        query = query.bindparams(watermark=None)
    columns = _query_columns(connection, query, engine) if connection.dialect.name == "postgresql" else None
    statement: sa.sql.Executable = query
    if columns is not None:
        _require_unique([column.name for column in columns])
        described = query.columns(*(sa.column(quoted_name(column.name, quote=True)) for column in columns))
        source = described.subquery("custom_query")
        statement = sa.select(*(selected(column, source.c[column.name]) for column in columns))
    tracker = None
    if incremental is not None:
        tracker, value = _query_watermark(columns, incremental, watermark)
        statement = statement.params(watermark=value)
    return ExtractionPlan(statement, columns, tracker, "Running the custom query")


def missing_query_cursor(name: str, returned: Sequence[str]) -> ExtractionConfigError:
    return ExtractionConfigError(
        f"The custom query returns no column {name!r} (the cursor_column); it returns {_listed(returned)}."
    )


def _query_columns(
    connection: sa.Connection, query: sa.TextClause, engine: DatabaseEngine
) -> list[ColumnType]:
    """A custom query's result columns on PostgreSQL, from the description of its empty result."""
    probe = sa.select(sa.literal_column("*")).select_from(query.columns().subquery("custom_query")).limit(0)
    arrays_among = sa.text("SELECT oid FROM pg_type WHERE oid IN :oids AND typcategory = 'A'").bindparams(
        sa.bindparam("oids", expanding=True)
    )
    try:
        description = connection.execute(probe).cursor.description
        oids = sorted({column[1] for column in description})
        arrays = set(connection.execute(arrays_among, {"oids": oids}).scalars())
    except sa_exc.DBAPIError as error:
        raise engine.failed(error, "Describing the custom query") from error
    return [
        column_type(
            name, postgres_result_type(oid, precision, scale, oid in arrays), True, connection.dialect
        )
        for name, oid, _, _, precision, scale, _ in description
    ]


def _query_watermark(
    columns: list[ColumnType] | None, incremental: Incremental, watermark: dict[str, Any] | None
) -> tuple[WatermarkTracker, Any]:
    """The tracker and `:watermark` value of an incremental custom query. When the database does not
    describe results (SQLite), the cursor's type is that of the stored value, checked once rows arrive."""
    name = incremental.cursor_column
    if columns is None:
        start = (watermark or {}).get("cursor", incremental.initial_value)
        cursor = ColumnType(name, pa.int64() if isinstance(start, int) else pa.string(), True, "as stored")
    else:
        by_name = {column.name: column for column in columns}
        if name not in by_name:
            raise missing_query_cursor(name, list(by_name))
        cursor = by_name[name]
    watermark_columns = WatermarkColumns("query", cursor)
    position = None if watermark is None else watermark_columns.decode(watermark)
    value = custom_query_parameter(
        watermark_columns, position, incremental.initial_value, incremental.lookback_seconds
    )
    return WatermarkTracker(watermark_columns, position, ordered=False), value


def _missing_table(
    inspector: sa.Inspector, extraction: TableExtraction, engine: DatabaseEngine
) -> ExtractionConfigError:
    schema = extraction.schema_name
    where = f"schema {schema!r}" if schema else f"the default schema ({inspector.default_schema_name})"
    if schema is not None and schema not in inspector.get_schema_names():
        existing = f"Schemas there: {_listed(inspector.get_schema_names())}."
    else:
        names = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
        existing = f"Tables and views there: {_listed(names)}." if names else "It has no tables."
    return ExtractionConfigError(
        f"Table {extraction.table!r} not found in {where} of {engine.location.display}. {existing}"
    )


def _tie_breakers(incremental: Incremental | None, primary_key: list[str]) -> list[str]:
    if incremental is None or incremental.mode == "key":
        return []
    return list(incremental.tie_breaker if incremental.tie_breaker is not None else primary_key)


def _incremental_columns(incremental: Incremental | None, tie_breakers: list[str]) -> list[str]:
    if incremental is None:
        return []
    if incremental.mode == "key" and incremental.lookback_seconds > 0:
        raise ExtractionConfigError(
            "lookback_seconds applies to `timestamp` mode; `key` mode reads strictly past the last key."
        )
    return [incremental.cursor_column, *tie_breakers]


def _require_columns(description: TableDescription, names: Sequence[str]) -> None:
    existing = [column.name for column in description.columns]
    missing = [name for name in dict.fromkeys(names) if name not in existing]
    if missing:
        raise ExtractionConfigError(
            f"Column(s) {', '.join(repr(name) for name in missing)} not found in table "
            f"{description.qualified_name!r} (names are case-sensitive). Its columns: {_listed(existing)}."
        )


def _require_selected(columns: list[ColumnType], names: list[str], table: str) -> None:
    chosen = {column.name for column in columns}
    missing = [name for name in names if name not in chosen]
    if missing:
        raise ExtractionConfigError(
            f"`columns` of {table!r} must include the cursor and tie-breaker columns "
            f"({', '.join(repr(name) for name in missing)} missing): the watermark is read from them."
        )


def _require_unique(names: list[str]) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ExtractionConfigError(
            f"The custom query returns the column name(s) {', '.join(map(repr, duplicates))} more than once: "
            f"alias them."
        )


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:LISTED_NAMES])
    return shown + (f" ... ({len(names)} in all)" if len(names) > LISTED_NAMES else "")
