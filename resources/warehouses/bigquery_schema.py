"""Arrow to BigQuery: column types, the DDL and SQL text the BigQuery warehouse sends.

Pure functions (no client, no network), so the text BigQuery receives can be pinned by tests even where the
emulator cannot run it (partitioning and clustering metadata).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence

import pyarrow as pa
from google.cloud.bigquery import SchemaField

from resources.warehouses.load import TOMBSTONE_COLUMN, TableLayout, WarehouseLoadError

LEGACY_TYPE_NAMES = {
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "RECORD": "STRUCT",
}
"""The API reports legacy names for some types (depending on how the table was made); SQL names are used."""
MAX_CLUSTER_COLUMNS = 4
NUMERIC_MAX_PRECISION = 38
NUMERIC_MAX_SCALE = 9
BIGNUMERIC_MAX_SCALE = 38


def quote_identifier(name: str) -> str:
    """A BigQuery identifier in backticks, so that no configured name is ever read as SQL."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def qualified_name(project: str, dataset: str, table: str) -> str:
    """`project.dataset.table`, one quoted path (BigQuery reads the dots inside the backticks)."""
    for part in (project, dataset, table):
        if "`" in part or "." in part or not part:
            raise WarehouseLoadError(
                f"{project}.{dataset}.{table}: project, dataset and table names must be non-empty and "
                f"contain no '.' or '`'"
            )
    return f"`{project}.{dataset}.{table}`"


def bigquery_field(field: pa.Field) -> SchemaField:
    """The BigQuery column an Arrow field loads into (always NULLABLE: loads never enforce NOT NULL)."""
    arrow_type = field.type
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        element = bigquery_field(pa.field(field.name, arrow_type.value_type))
        if element.mode == "REPEATED":
            raise WarehouseLoadError(
                f"column {field.name!r} is a list of lists ({field.type}); BigQuery has no ARRAY<ARRAY>: "
                f"wrap the inner list in a struct before loading"
            )
        return SchemaField(field.name, element.field_type, mode="REPEATED", fields=element.fields)
    if pa.types.is_struct(arrow_type):
        return SchemaField(
            field.name,
            "RECORD",
            fields=[bigquery_field(arrow_type.field(i)) for i in range(arrow_type.num_fields)],
        )
    return SchemaField(field.name, _scalar_type(field.name, arrow_type))


def _scalar_type(name: str, arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "BOOL"
    if pa.types.is_integer(arrow_type):
        return "INT64"
    if pa.types.is_floating(arrow_type):
        return "FLOAT64"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "STRING"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BYTES"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP" if arrow_type.tz is not None else "DATETIME"
    if pa.types.is_time(arrow_type):
        return "TIME"
    if pa.types.is_decimal(arrow_type):
        if arrow_type.precision - arrow_type.scale <= NUMERIC_MAX_PRECISION - NUMERIC_MAX_SCALE and (
            arrow_type.scale <= NUMERIC_MAX_SCALE
        ):
            return "NUMERIC"
        if arrow_type.scale <= BIGNUMERIC_MAX_SCALE:
            return "BIGNUMERIC"
    raise WarehouseLoadError(
        f"column {name!r} has Arrow type {arrow_type}, which has no BigQuery column type here; cast it "
        f"(to string, int64, float64, timestamp, date, decimal, list or struct) before loading"
    )


def staging_type(arrow_type: pa.DataType) -> pa.DataType:
    """The Arrow type a column is written to Parquet as, so that BigQuery reads it as `bigquery_field` says:
    dictionaries decoded, unsigned and small integers widened, timestamps and times in microseconds
    (BigQuery's precision)."""
    if pa.types.is_dictionary(arrow_type):
        return staging_type(arrow_type.value_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.list_(staging_type(arrow_type.value_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct(
            [
                arrow_type.field(i).with_type(staging_type(arrow_type.field(i).type))
                for i in range(arrow_type.num_fields)
            ]
        )
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_floating(arrow_type):
        return pa.float64()
    if pa.types.is_large_string(arrow_type):
        return pa.string()
    if pa.types.is_large_binary(arrow_type):
        return pa.binary()
    if pa.types.is_date(arrow_type):
        return pa.date32()
    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp("us", tz=arrow_type.tz)
    if pa.types.is_time(arrow_type):
        return pa.time64("us")
    return arrow_type


def sql_type(field: SchemaField) -> str:
    """The column's type as BigQuery SQL writes it: `INT64`, `ARRAY<STRING>`, `STRUCT<`a` INT64>`."""
    base = LEGACY_TYPE_NAMES.get(field.field_type.upper(), field.field_type.upper())
    if base == "STRUCT":
        base = (
            "STRUCT<"
            + ", ".join(f"{quote_identifier(sub.name)} {sql_type(sub)}" for sub in field.fields)
            + ">"
        )
    if field.mode == "REPEATED":
        return f"ARRAY<{base}>"
    return base


def column_definitions(fields: Sequence[SchemaField]) -> str:
    return ", ".join(f"{quote_identifier(field.name)} {sql_type(field)}" for field in fields)


def layout_clauses(target: str, fields: Sequence[SchemaField], layout: TableLayout | None) -> str:
    """` PARTITION BY ... CLUSTER BY ...` for a table created with `layout` (empty without one)."""
    if layout is None:
        return ""
    types = {field.name: sql_type(field) for field in fields}
    clauses = ""
    if layout.partition_by is not None:
        column = layout.partition_by
        if column not in types:
            raise WarehouseLoadError(
                f"{target}: the layout partitions by {column!r}, which is not a column of the data "
                f"(columns: {list(types)}); fix partition_by in the catalog"
            )
        clauses += f" PARTITION BY {_partition_expression(target, column, types[column], layout)}"
    if layout.cluster_by:
        missing = [name for name in layout.cluster_by if name not in types]
        if missing:
            raise WarehouseLoadError(
                f"{target}: the layout clusters by {missing}, which are not columns of the data "
                f"(columns: {list(types)}); fix cluster_by in the catalog"
            )
        if len(layout.cluster_by) > MAX_CLUSTER_COLUMNS:
            raise WarehouseLoadError(
                f"{target}: BigQuery clusters by at most {MAX_CLUSTER_COLUMNS} columns, the layout names "
                f"{len(layout.cluster_by)}; shorten cluster_by in the catalog"
            )
        clauses += " CLUSTER BY " + ", ".join(quote_identifier(name) for name in layout.cluster_by)
    return clauses


def _partition_expression(target: str, column: str, column_type: str, layout: TableLayout) -> str:
    granularity = layout.partition_granularity
    quoted = quote_identifier(column)
    if column_type == "DATE":
        if granularity == "HOUR":
            raise WarehouseLoadError(
                f"{target}: {column!r} is a DATE, which cannot be partitioned by HOUR; use DAY, MONTH or "
                f"YEAR, or partition by a TIMESTAMP column"
            )
        return quoted if granularity == "DAY" else f"DATE_TRUNC({quoted}, {granularity})"
    if column_type == "TIMESTAMP":
        return f"TIMESTAMP_TRUNC({quoted}, {granularity})"
    if column_type == "DATETIME":
        return f"DATETIME_TRUNC({quoted}, {granularity})"
    raise WarehouseLoadError(
        f"{target}: {column!r} is {column_type}; BigQuery time partitioning needs a DATE, TIMESTAMP or "
        f"DATETIME column (integer-range partitioning is not supported here): change partition_by"
    )


def create_table_sql(
    target: str,
    fields: Sequence[SchemaField],
    layout: TableLayout | None,
    *,
    expires_hours: int | None = None,
    if_not_exists: bool = False,
) -> str:
    """`CREATE TABLE` with the columns and the layout's partitioning and clustering (and an expiration, for
    tables that must not outlive a load)."""
    options = ""
    if expires_hours is not None:
        expiry = f"TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {int(expires_hours)} HOUR)"
        options = f" OPTIONS (expiration_timestamp = {expiry})"
    layout_sql = layout_clauses(target, fields, layout)
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return f"{create} {target} ({column_definitions(fields)}){layout_sql}{options}"


def replace_table_sql(
    target: str,
    source: str,
    fields: Sequence[SchemaField],
    layout: TableLayout | None,
    *,
    tombstones: bool = False,
) -> str:
    """One statement that swaps in the loaded rows (the columns `fields`): readers see the old table or the
    new one. With `tombstones`, the rows marked `_deleted` are left out."""
    columns = ", ".join(quote_identifier(field.name) for field in fields)
    live = f" WHERE {_live('')}" if tombstones else ""
    return (
        f"CREATE OR REPLACE TABLE {target}{layout_clauses(target, fields, layout)} "
        f"AS SELECT {columns} FROM {source}{live}"
    )


def add_columns_sql(target: str, fields: Sequence[SchemaField]) -> str:
    additions = ", ".join(f"ADD COLUMN {quote_identifier(field.name)} {sql_type(field)}" for field in fields)
    return f"ALTER TABLE {target} {additions}"


def merge_sql(
    target: str, source: str, columns: Sequence[str], primary_key: Sequence[str], *, tombstones: bool = False
) -> str:
    """Update the rows whose key is in `source` (every column of `columns`), insert the others. With
    `tombstones`, `source` also has the column `_deleted`: a row marked deletes its key's row and inserts
    nothing (the column itself is not among `columns`, so never written)."""
    on = " AND ".join(f"T.{quote_identifier(key)} = S.{quote_identifier(key)}" for key in primary_key)
    updates = [name for name in columns if name not in primary_key]
    names = ", ".join(quote_identifier(name) for name in columns)
    values = ", ".join(f"S.{quote_identifier(name)}" for name in columns)
    deleted = f" WHEN MATCHED AND S.{quote_identifier(TOMBSTONE_COLUMN)} THEN DELETE" if tombstones else ""
    matched = (
        " WHEN MATCHED THEN UPDATE SET "
        + ", ".join(f"{quote_identifier(name)} = S.{quote_identifier(name)}" for name in updates)
        if updates
        else ""
    )
    live = f" AND {_live('S.')}" if tombstones else ""
    return (
        f"MERGE {target} AS T USING {source} AS S ON {on}{deleted}{matched} "
        f"WHEN NOT MATCHED{live} THEN INSERT ({names}) VALUES ({values})"
    )


def _live(alias: str) -> str:
    """The condition of a row that is no tombstone (a null `_deleted` is a live row, as in DuckDB and
    PostgreSQL)."""
    return f"{alias}{quote_identifier(TOMBSTONE_COLUMN)} IS NOT TRUE"


def replace_partitions_sql(
    target: str, source: str, columns: Sequence[str], column: str, values: Sequence[object]
) -> str:
    """One transaction: delete the partitions' rows, insert the loaded ones. The values are written as
    typed literals (the emulator takes no query parameters inside scripts)."""
    names = ", ".join(quote_identifier(name) for name in columns)
    in_list = ", ".join(sql_literal(value) for value in values)
    return (
        "BEGIN TRANSACTION; "
        f"DELETE FROM {target} WHERE {quote_identifier(column)} IN ({in_list}); "
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {source}; "
        "COMMIT TRANSACTION;"
    )


def outside_partitions_sql(source: str, column: str, values: Sequence[object]) -> str:
    """Rows of `source` that belong to none of the partitions being replaced (NULL counts as outside)."""
    in_list = ", ".join(sql_literal(value) for value in values)
    return (
        f"SELECT COUNT(*) FROM {source} WHERE {quote_identifier(column)} IS NULL "
        f"OR {quote_identifier(column)} NOT IN ({in_list})"
    )


def sql_literal(value: object) -> str:
    """A typed BigQuery literal for a partition value (never string-pasted into SQL unescaped)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | decimal.Decimal):
        return f"NUMERIC '{value}'" if isinstance(value, decimal.Decimal) else repr(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return f"TIMESTAMP '{value.astimezone(dt.UTC).isoformat(sep=' ')}'"
        return f"DATETIME '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
        return f"'{escaped}'"
    raise WarehouseLoadError(
        f"partition value {value!r} ({type(value).__name__}) cannot be written as a BigQuery literal; "
        f"use int, str, date, datetime, bool or Decimal values"
    )
