"""Arrow record batches to bronze rows (one JSON document per record) and back, by an embedded DuckDB.

The bronze layer keeps each record as JSONB, which knows strings, numbers, booleans and null only. The
extraction's Arrow schema is therefore kept beside its rows (in its commit row) and reading casts each JSON
document back to it: a timestamp comes back a timestamp, a decimal a decimal, not the text JSON stored.
DuckDB writes the JSON (`to_json`, ISO dates and times) and reads it back (`from_json` with the schema's
DuckDB types), so both directions agree on every format. Floats that JSON cannot hold (NaN, infinities,
which PostgreSQL's JSONB refuses) are kept as their text (`"nan"`) and read back as the float.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from resources.warehouses.duckdb_warehouse import quote_identifier

RECORD_COLUMN = "record"
RAW_ID_COLUMN = "raw_id"
SOURCE_TIMESTAMP_COLUMN = "source_timestamp"


def _connection() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def _json_value(field: pa.Field) -> str:
    column = quote_identifier(field.name)
    if pa.types.is_floating(field.type):
        return f"CASE WHEN isfinite({column}) THEN to_json({column}) ELSE to_json({column}::VARCHAR) END"
    return f"to_json({column})"


def bronze_rows(batch: pa.RecordBatch, raw_id: Sequence[str], source_timestamp: str | None) -> pa.Table:
    """`record` (the JSON text of each row), `raw_id` (the key columns joined by `|`, NULL without a key)
    and `source_timestamp` (the named column as a UTC timestamp, NULL when it is not one), as text."""
    pairs = ", ".join(f"{_sql_text(field.name)}, {_json_value(field)}" for field in batch.schema)
    key = (
        "concat_ws('|', " + ", ".join(f"{quote_identifier(name)}::VARCHAR" for name in raw_id) + ")"
        if raw_id
        else "NULL"
    )
    stamp = (
        f"TRY_CAST({quote_identifier(source_timestamp)} AS TIMESTAMPTZ)::VARCHAR"
        if source_timestamp is not None and source_timestamp in batch.schema.names
        else "NULL::VARCHAR"
    )
    with _connection() as connection:
        connection.register("batch", batch)
        return connection.sql(
            f"SELECT json_object({pairs})::VARCHAR AS {RECORD_COLUMN}, {key} AS {RAW_ID_COLUMN}, "
            f"{stamp} AS {SOURCE_TIMESTAMP_COLUMN} FROM batch"
        ).to_arrow_table()


def records_as(documents: Sequence[str], schema: pa.Schema) -> pa.RecordBatch:
    """JSON documents written by `bronze_rows`, typed back to the extraction's `schema`."""
    with _connection() as connection:
        connection.register("empty", schema.empty_table())
        structure = {name: kind for name, kind, *_ in connection.execute("DESCRIBE empty").fetchall()}
        connection.register("documents", pa.table({RECORD_COLUMN: pa.array(documents, pa.string())}))
        typed_record = f"from_json({RECORD_COLUMN}, {_sql_text(json.dumps(structure))})"
        typed = connection.sql(
            f"SELECT unnest({typed_record}, recursive := false) FROM documents"
        ).to_arrow_table()
    columns = [typed.column(field.name).combine_chunks().cast(field.type) for field in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
