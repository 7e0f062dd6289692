"""How database columns become Arrow columns, decided once per column from the database's own types.

The landed file keeps the database's types where Arrow has a faithful equivalent, and the database's own
text rendering where it has not (so both read paths, the PostgreSQL COPY stream and the generic cursor, give
identical values):

| database type                                   | Arrow                       | selected as             |
|-------------------------------------------------|-----------------------------|-------------------------|
| smallint, integer, bigint                       | int64                       | value                   |
| real, double precision                          | float64                     | value                   |
| numeric(p, s) with p <= 38, 0 <= s              | decimal128(p, s)            | value                   |
| numeric without precision, wider numerics       | string (exact digits, NaN)  | CAST AS TEXT            |
| text, varchar, char, enum, citext               | string                      | value                   |
| timestamp                                       | timestamp[us]               | value                   |
| timestamptz                                     | timestamp[us, tz=UTC]       | value (session in UTC)  |
| date / time                                     | date32 / time64[us]         | value                   |
| boolean                                         | bool                        | value                   |
| bytea, blob                                     | binary                      | value                   |
| json, jsonb                                     | string (JSON text)          | CAST AS TEXT            |
| arrays                                          | string (JSON text)          | to_json(...) AS TEXT    |
| anything else (uuid, interval, inet, money...)  | string                      | CAST AS TEXT            |

Numeric is decimal128 when it fits (exact, and what warehouses load as NUMERIC) and text when it does not:
an unconstrained PostgreSQL numeric can hold more digits than decimal128 and NaN.

SQLite stores any value in any column, whatever the declared type: integer, real, text and blob affinities
map to int64, float64, string and binary; every other declared type (DATETIME, DATE, BOOLEAN, DECIMAL...)
lands as the stored text, exactly as the application wrote it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement

from resources.databases.errors import DatabaseSourceError

DECIMAL128_MAX_PRECISION = 38
UTC = "UTC"


class Rendering(enum.Enum):
    """How a column is selected: as the driver's value, or as the database's text for it."""

    VALUE = "value"
    TEXT = "text"
    JSON_TEXT = "json_text"


@dataclass(frozen=True)
class ColumnType:
    """One result column: its name, Arrow type, nullability, database type (for messages) and rendering."""

    name: str
    arrow_type: pa.DataType
    nullable: bool
    database_type: str
    rendering: Rendering = Rendering.VALUE

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type, nullable=self.nullable)


def column_type(name: str, sql_type: sa.types.TypeEngine, nullable: bool, dialect: sa.Dialect) -> ColumnType:
    """The Arrow type and rendering of a reflected column (see the table in the module docstring)."""
    if isinstance(sql_type, postgresql.DOMAIN):
        sql_type = sql_type.data_type
    arrow_type, rendering = (
        _sqlite_arrow_type(sql_type) if dialect.name == "sqlite" else _arrow_type(sql_type, dialect.name)
    )
    return ColumnType(name, arrow_type, nullable, _type_name(sql_type, dialect), rendering)


def _arrow_type(sql_type: sa.types.TypeEngine, dialect_name: str) -> tuple[pa.DataType, Rendering]:
    if isinstance(sql_type, sqltypes.ARRAY):
        return pa.string(), Rendering.JSON_TEXT if dialect_name == "postgresql" else Rendering.TEXT
    if isinstance(sql_type, sqltypes.JSON):
        return pa.string(), Rendering.TEXT
    if isinstance(sql_type, sqltypes.Boolean):
        return pa.bool_(), Rendering.VALUE
    if isinstance(sql_type, sqltypes.Integer):
        return pa.int64(), Rendering.VALUE
    if isinstance(sql_type, sqltypes.Float):
        return pa.float64(), Rendering.VALUE
    if isinstance(sql_type, sqltypes.Numeric):
        precision, scale = sql_type.precision, sql_type.scale or 0
        if precision is not None and precision <= DECIMAL128_MAX_PRECISION and 0 <= scale <= precision:
            return pa.decimal128(precision, scale), Rendering.VALUE
        return pa.string(), Rendering.TEXT
    if isinstance(sql_type, sqltypes.DateTime):
        return pa.timestamp("us", tz=UTC if sql_type.timezone else None), Rendering.VALUE
    if isinstance(sql_type, sqltypes.Date):
        return pa.date32(), Rendering.VALUE
    if isinstance(sql_type, sqltypes.Time) and not sql_type.timezone:
        return pa.time64("us"), Rendering.VALUE
    if isinstance(sql_type, sqltypes._Binary):
        return pa.binary(), Rendering.VALUE
    if isinstance(sql_type, sqltypes.String):
        return pa.string(), Rendering.VALUE
    return pa.string(), Rendering.TEXT


SQLITE_STORAGE_TYPES = (sqltypes.Integer, sqltypes.Float, sqltypes._Binary, sqltypes.String)
"""SQLite's own storage classes; every other declared type (DATETIME, BOOLEAN, DECIMAL...) is stored as
whatever was written, so it lands as the stored text."""


def _sqlite_arrow_type(sql_type: sa.types.TypeEngine) -> tuple[pa.DataType, Rendering]:
    if isinstance(sql_type, SQLITE_STORAGE_TYPES):
        return _arrow_type(sql_type, "sqlite")
    return pa.string(), Rendering.TEXT


def _type_name(sql_type: sa.types.TypeEngine, dialect: sa.Dialect) -> str:
    try:
        return sql_type.compile(dialect=dialect)
    except sa.exc.SQLAlchemyError:
        return type(sql_type).__name__


def selected(column: ColumnType, source: ColumnElement) -> ColumnElement:
    """The select-list expression for a column, labelled with its name."""
    if column.rendering is Rendering.TEXT:
        source = sa.cast(source, sa.Text)
    elif column.rendering is Rendering.JSON_TEXT:
        source = sa.cast(sa.func.to_json(source), sa.Text)
    return source.label(sa.sql.quoted_name(column.name, quote=True))


def arrow_array(values: Sequence[object], column: ColumnType) -> pa.Array:
    """One column of driver values as an Arrow array of the column's type."""
    try:
        return pa.array(values, type=column.arrow_type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as error:
        raise DatabaseSourceError(
            f"Column {column.name!r} ({column.database_type}) holds a value that is not a valid "
            f"{column.arrow_type}: {error}"
        ) from error


def inferred_column_types(names: Sequence[str], rows: Sequence[Sequence[object]]) -> list[ColumnType]:
    """Types of a custom query's columns when the driver does not report them (SQLite): what Arrow infers
    from the first batch's values; a column without any value there is text."""
    columns = []
    for index, name in enumerate(names):
        values = [row[index] for row in rows]
        try:
            arrow_type = pa.array(values).type
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as error:
            raise DatabaseSourceError(
                f"Column {name!r} of the custom query mixes value types ({error}); CAST it to one type in "
                f"the query."
            ) from error
        arrow_type = pa.string() if pa.types.is_null(arrow_type) else arrow_type
        columns.append(ColumnType(name, arrow_type, True, f"inferred {arrow_type}"))
    return columns


POSTGRES_TYPES_BY_OID: dict[int, sa.types.TypeEngine] = {
    16: postgresql.BOOLEAN(),
    17: postgresql.BYTEA(),
    18: postgresql.CHAR(),
    19: postgresql.TEXT(),
    20: postgresql.BIGINT(),
    21: postgresql.SMALLINT(),
    23: postgresql.INTEGER(),
    25: postgresql.TEXT(),
    114: postgresql.JSON(),
    700: postgresql.REAL(),
    701: postgresql.DOUBLE_PRECISION(),
    1042: postgresql.CHAR(),
    1043: postgresql.VARCHAR(),
    1082: postgresql.DATE(),
    1083: postgresql.TIME(),
    1114: postgresql.TIMESTAMP(),
    1184: postgresql.TIMESTAMP(timezone=True),
    3802: postgresql.JSONB(),
}
"""Result column types of a custom query by type OID (what the PostgreSQL wire protocol reports); numeric
(1700) gets its precision from the description, arrays are recognised by their pg_type category."""
NUMERIC_OID = 1700


def postgres_result_type(
    type_oid: int, precision: int | None, scale: int | None, is_array: bool
) -> sa.types.TypeEngine:
    """The SQLAlchemy type of a custom query's result column on PostgreSQL, from its description."""
    if is_array:
        return postgresql.ARRAY(sqltypes.NullType())
    if type_oid == NUMERIC_OID:
        bounded = precision is not None and precision <= DECIMAL128_MAX_PRECISION
        return postgresql.NUMERIC(precision, scale) if bounded else postgresql.NUMERIC()
    return POSTGRES_TYPES_BY_OID.get(type_oid, sqltypes.NullType())
