"""Arrow batches as PostgreSQL's COPY input: the type mapping and the CSV stream fed to `copy_expert`.

CSV, because PostgreSQL parses it fast and Arrow's C++ writer produces it fast. NULL and the empty string
stay apart: every valid value is quoted (`quoting_style="all_valid"`) and a null is an unquoted empty
field, which is exactly what `COPY ... (FORMAT csv, NULL '')` reads as NULL. bytea goes as PostgreSQL's
hex text (`\\x00ff`). The stream writes one batch at a time, when the server asks for more, so memory
stays about one batch's CSV whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from resources.warehouses.load import tombstones_in

_WRITE_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")

WIDENINGS = {
    ("smallint", "integer"),
    ("smallint", "bigint"),
    ("integer", "bigint"),
    ("real", "double precision"),
}
"""(incoming, existing) PostgreSQL types that load without loss into an existing column."""


class UnsupportedArrowTypeError(TypeError):
    """A batch column has an Arrow type this writer has no PostgreSQL type for."""


def postgres_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL type of a column, spelled as `format_type()` spells it (so types compare as text)."""
    types = pa.types
    simple = [
        (types.is_boolean, "boolean"),
        (types.is_int8, "smallint"),
        (types.is_int16, "smallint"),
        (types.is_int32, "integer"),
        (types.is_int64, "bigint"),
        (types.is_uint8, "smallint"),
        (types.is_uint16, "integer"),
        (types.is_uint32, "bigint"),
        (types.is_uint64, "numeric(20,0)"),
        (types.is_float16, "real"),
        (types.is_float32, "real"),
        (types.is_float64, "double precision"),
        (types.is_string, "text"),
        (types.is_large_string, "text"),
        (types.is_binary, "bytea"),
        (types.is_large_binary, "bytea"),
        (types.is_date, "date"),
        (types.is_time, "time without time zone"),
    ]
    for matches, name in simple:
        if matches(arrow_type):
            return name
    if types.is_timestamp(arrow_type):
        return "timestamp with time zone" if arrow_type.tz else "timestamp without time zone"
    if types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    raise UnsupportedArrowTypeError(
        f"no PostgreSQL type for Arrow type {arrow_type}: cast the column to a supported type (integers, "
        f"floats, string, bool, timestamp, date, time, decimal, binary) before loading it."
    )


def loads_into(incoming: str, existing: str) -> bool:
    """Whether values of PostgreSQL type `incoming` load into a column of type `existing` unchanged."""
    return incoming == existing or (incoming, existing) in WIDENINGS


def csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with bytea columns as PostgreSQL hex text; other columns as they are."""
    if not any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in batch.schema):
        return batch
    arrays = [
        _hex(array) if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type) else array
        for array in batch.columns
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _hex(array: pa.Array) -> pa.Array:
    return pa.array(
        [None if value is None else "\\x" + value.hex() for value in array.to_pylist()], pa.string()
    )


class CsvStream:
    """A read-only file over the CSV of `batches` (no header), for psycopg2's `copy_expert`. Counts the
    rows (and the tombstones among them) and bytes it handed out. Every batch must have `schema`."""

    def __init__(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> None:
        self._batches = iter(batches)
        self._schema = schema
        self._pending = memoryview(b"")
        self.rows = 0
        self.tombstones = 0
        self.bytes_sent = 0

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            chunk = self._next_chunk()
            if chunk is None:
                return b""
            self._pending = chunk
        if size is None or size < 0:
            size = len(self._pending)
        data = bytes(self._pending[:size])
        self._pending = self._pending[size:]
        self.bytes_sent += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:  # psycopg2 only calls read(); here for file-likeness
        return self.read(size)

    def _next_chunk(self) -> memoryview | None:
        for batch in self._batches:
            if not batch.schema.equals(self._schema):
                raise ValueError(
                    f"a batch's schema differs from the first batch's: expected {self._schema}, got "
                    f"{batch.schema}. Every batch of one load must have the same columns and types."
                )
            if batch.num_rows == 0:
                continue
            sink = pa.BufferOutputStream()
            pacsv.write_csv(csv_ready(batch), sink, write_options=_WRITE_OPTIONS)
            self.rows += batch.num_rows
            self.tombstones += tombstones_in(batch)
            return memoryview(sink.getvalue())
        return None


def with_first(batches: Iterable[pa.RecordBatch]) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
    """The schema of the stream (of its first batch, or of a reader) and the whole stream again."""
    if isinstance(batches, pa.RecordBatchReader):
        return batches.schema, iter(batches)
    iterator = iter(batches)
    for first in iterator:
        return first.schema, _chained(first, iterator)
    return None, iter(())


def _chained(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest
