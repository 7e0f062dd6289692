"""Arrow batches as PostgreSQL's COPY input: the type mapping and the CSV stream fed to `copy_expert`.

CSV, because PostgreSQL parses it fast and Arrow's C++ writer produces it fast. NULL and the empty string
stay apart: Arrow quotes every string value (`quoting_style="needed"` quotes strings and binary always,
never numbers, booleans or timestamps, which cannot be empty) and writes a null as an unquoted empty
field, which is exactly what `COPY ... (FORMAT csv, NULL '')` reads as NULL. bytea goes as PostgreSQL's
hex text (`\\x00ff`). Time-zone-aware timestamps go as their UTC wall time without the zone: the
warehouse's sessions run in UTC (`SET TIME ZONE 'UTC'`), and Arrow formats a zoned timestamp ~25x slower
than a naive one (1M rows of one such column: 1.27 s against 0.05 s, more than all other 16 columns of a
staged table together). Quoting only strings saves a further ~25% of the writer's time and 8% of the bytes.

The stream encodes in a thread of its own, up to `PREFETCH_CHUNKS` batches ahead of the server, so that
reading the batches (DuckDB) and writing their CSV (Arrow, which releases the GIL) overlap with the
server parsing the previous chunk, instead of the two taking turns; memory stays a few batches' CSV
whatever the number of rows.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from resources.warehouses import postgres_binary
from resources.warehouses.load import tombstones_in

_WRITE_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")
PREFETCH_CHUNKS = 2
"""Encoded batches waiting for the server: enough to keep it busy while the next one is encoded."""
STOP_POLL_SECONDS = 0.1

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
    """The batch with bytea columns as PostgreSQL hex text and zoned timestamps as naive UTC (read in the
    session's UTC zone); other columns as they are."""
    if not any(_needs_conversion(field.type) for field in batch.schema):
        return batch
    arrays = [_converted(array) if _needs_conversion(array.type) else array for array in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _needs_conversion(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or (pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None)
    )


def _converted(array: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(array.type):
        return array.cast(pa.timestamp(array.type.unit))  # the same instants, as UTC wall time
    return _hex(array)


def _hex(array: pa.Array) -> pa.Array:
    return pa.array(
        [None if value is None else "\\x" + value.hex() for value in array.to_pylist()], pa.string()
    )


class CopyStream:
    """A read-only file over `batches` as COPY input, for psycopg2's `copy_expert`: CSV (no header), or
    PostgreSQL's binary format once `use_binary` chose it (`copy_options` says which to COPY with).
    Counts the rows (and the tombstones among them) and bytes it handed out. Every batch must have
    `schema`.

    The batches are read and encoded by a producer thread, at most `prefetch` chunks ahead; an error
    there (a batch with another schema, a failing source) is raised by `read`, so the COPY fails and the
    load's transaction rolls back. `close` stops the producer (and closes the batches' iterator, e.g. the
    staging file's reader) when the COPY ends early; call it whatever the outcome."""

    def __init__(
        self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, *, prefetch: int = PREFETCH_CHUNKS
    ) -> None:
        self._batches = iter(batches)
        self._schema = schema
        self._pending = memoryview(b"")
        self._chunks: queue.Queue[memoryview | BaseException | None] = queue.Queue(max(prefetch, 1))
        self._stop = threading.Event()
        self._producer: threading.Thread | None = None
        self._done = False
        self.binary = False
        self.rows = 0
        self.tombstones = 0
        self.bytes_sent = 0

    def use_binary(self, target_types: list[tuple[str, str]]) -> bool:
        """Send binary COPY input if every column has an encoding and the target's column types (name,
        type) are exactly the batches' own (binary input is not widened); before the first `read`.
        Returns whether it will."""
        own = [(field.name, postgres_type(field.type)) for field in self._schema]
        self.binary = (
            self._producer is None
            and postgres_binary.binary_copy_types(self._schema)
            and all(dict(target_types).get(name) == type_name for name, type_name in own)
        )
        return self.binary

    @property
    def copy_options(self) -> str:
        """The options of `COPY ... FROM STDIN WITH (...)` that read this stream."""
        return "FORMAT binary" if self.binary else "FORMAT csv, NULL ''"

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            if self._done:
                return b""
            if self._producer is None:
                self._producer = threading.Thread(target=self._produce, name="csv-stream", daemon=True)
                self._producer.start()
            chunk = self._chunks.get()
            if chunk is None:
                self._done = True
                return b""
            if isinstance(chunk, BaseException):
                self._done = True
                raise chunk
            self._pending = chunk
        if size is None or size < 0:
            size = len(self._pending)
        data = bytes(self._pending[:size])
        self._pending = self._pending[size:]
        self.bytes_sent += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:  # psycopg2 only calls read(); here for file-likeness
        return self.read(size)

    def close(self) -> None:
        """Stop the producer and wait for it (it closes the batches' iterator when stopped early)."""
        self._stop.set()
        self._done = True
        producer = self._producer
        if producer is None:
            _close_iterator(self._batches)
            return
        while producer.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting for room
                self._chunks.get(timeout=STOP_POLL_SECONDS)

    def _produce(self) -> None:
        try:
            if self.binary and not self._put(memoryview(postgres_binary.HEADER)):
                return
            for batch in self._batches:
                if self._stop.is_set():
                    break
                chunk = self._encoded(batch)
                if chunk is not None and not self._put(chunk):
                    break
            else:
                if self.binary:
                    self._put(memoryview(postgres_binary.TRAILER))
                self._put(None)
                return
        except BaseException as error:  # handed to the reader, which raises it in the COPY
            self._put(error)
        _close_iterator(self._batches)

    def _put(self, item: memoryview | BaseException | None) -> bool:
        """Queue `item` unless the stream is being closed; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=STOP_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _encoded(self, batch: pa.RecordBatch) -> memoryview | None:
        if not batch.schema.equals(self._schema):
            raise ValueError(
                f"a batch's schema differs from the first batch's: expected {self._schema}, got "
                f"{batch.schema}. Every batch of one load must have the same columns and types."
            )
        if batch.num_rows == 0:
            return None
        if self.binary:
            chunk = postgres_binary.encode_batch(batch)
        else:
            sink = pa.BufferOutputStream()
            pacsv.write_csv(csv_ready(batch), sink, write_options=_WRITE_OPTIONS)
            chunk = memoryview(sink.getvalue())
        self.rows += batch.num_rows
        self.tombstones += tombstones_in(batch)
        return chunk


def _close_iterator(iterator: Iterator[pa.RecordBatch]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        # A reader that cannot be closed from here is left to the garbage collector.
        with contextlib.suppress(Exception):
            close()


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
