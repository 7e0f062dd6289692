"""PostgreSQL's fast read path: `COPY (SELECT ...) TO STDOUT` as CSV, parsed by Arrow while it streams.

Why: the server formats CSV faster than a cursor ships rows, and Arrow's C++ parser reads it far faster
than the driver builds Python objects: 4-5x the cursor path's rows/s (bench/db_extract_memory.py).

How: psycopg2's `copy_expert` runs in a helper thread, inside the extraction's transaction (same
snapshot), and hands chunks of about 4 MiB to a queue of two. The consumer cuts each chunk after its last
complete row and parses those rows with `pyarrow.csv.read_csv` in its own thread (no Arrow background
reader calling back into Python). The full queue is the back-pressure: when landing is slower than the
server, the copy waits, so memory stays a few chunks whatever the table size; a row longer than a chunk
only makes that chunk longer.

Correctness: in PostgreSQL's CSV, NULL is an unquoted empty field and the empty string a quoted one (`""`);
the parser is told exactly that, and nothing else is NULL ('NULL', 'NA'... stay text). Quotes only ever
delimit or double inside quoted fields, so a newline ends a row exactly when the quotes before it pair up.
Every column gets its type from the plan, never inferred; bytea arrives as `\\x` hex and is decoded. A
failed copy (timeout, lost connection) is raised before the last partial row is parsed, so a stream cut
short never passes for a complete one.

The copy is one statement: `statement_timeout` bounds the whole extraction here (each FETCH on the cursor
path), so a first full load of a big table may need a larger `statement_timeout_seconds`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from resources.databases.column_types import ColumnType

CHUNK_BYTES = 4 << 20
QUEUED_CHUNKS = 2
COPY_READ_BYTES = 1 << 16
QUEUE_POLL_SECONDS = 0.1


class _Abandoned(Exception):
    """The consumer stopped reading: the copy must stop too."""


class _ChunkSink:
    """The file `copy_expert` writes into (helper thread): gathers the stream into chunks for the queue."""

    def __init__(self, chunks: queue.Queue[bytes | None], abandoned: threading.Event) -> None:
        self._chunks = chunks
        self._abandoned = abandoned
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self.put(bytes(self._buffer))
            self._buffer.clear()

    def put(self, item: bytes | None) -> None:
        while not self._abandoned.is_set():
            try:
                self._chunks.put(item, timeout=QUEUE_POLL_SECONDS)
                return
            except queue.Full:
                continue
        raise _Abandoned


def copy_batches(
    dbapi_connection: Any, select_sql: str, columns: Sequence[ColumnType], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of exactly `batch_rows` rows (the last one fewer) of `select_sql`'s result, whose
    columns are `columns` in order. Driver errors of the copy are raised as they are (psycopg2's)."""
    return _rebatched(_parsed(dbapi_connection, select_sql, columns), batch_rows)


def _parsed(
    dbapi_connection: Any, select_sql: str, columns: Sequence[ColumnType]
) -> Iterator[pa.RecordBatch]:
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_CHUNKS)
    abandoned = threading.Event()
    failures: list[BaseException] = []

    def produce() -> None:
        """Runs the copy; a failure is recorded before the end marker, so the consumer always sees it."""
        sink = _ChunkSink(chunks, abandoned)
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.copy_expert(f"COPY ({select_sql}) TO STDOUT WITH (FORMAT csv)", sink, COPY_READ_BYTES)
            sink.flush()
        except BaseException as error:  # handed over to the consumer, which raises it
            failures.append(error)
        finally:
            with contextlib.suppress(_Abandoned):
                sink.put(None)

    def received() -> Iterator[bytes]:
        """The chunks, then the copy's failure if it failed (before any incomplete last row is parsed)."""
        while (chunk := chunks.get()) is not None:
            yield chunk
        if failures:
            raise failures[0]

    producer = threading.Thread(target=produce, name="postgres-copy", daemon=True)
    producer.start()
    parser = _CsvParser(columns)
    finished = False
    try:
        for rows in _whole_rows(received()):
            yield from parser.batches(rows)
        finished = True
    finally:
        if not finished:
            abandoned.set()
            if producer.is_alive():
                dbapi_connection.cancel()
        producer.join()


def _whole_rows(chunks: Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """The stream re-cut so that every piece ends at the end of a row."""
    pending: list[bytes] = []
    pending_quotes = 0
    for chunk in chunks:
        end = _end_of_last_row(chunk, pending_quotes)
        if end == 0:
            pending.append(chunk)
            pending_quotes += chunk.count(b'"')
            continue
        yield b"".join([*pending, chunk[:end]]) if pending else memoryview(chunk)[:end]
        pending = [chunk[end:]] if end < len(chunk) else []
        pending_quotes = pending[0].count(b'"') if pending else 0
    if pending:
        yield b"".join(pending)


def _end_of_last_row(chunk: bytes, quotes_before: int) -> int:
    """Offset just after the last newline of `chunk` that is outside quotes (0 if none), given the number
    of quotes since the start of the current row in the chunks before it."""
    quotes = quotes_before + chunk.count(b'"')
    end = len(chunk)
    while (newline := chunk.rfind(b"\n", 0, end)) >= 0:
        quotes -= chunk.count(b'"', newline, end)
        if quotes % 2 == 0:
            return newline + 1
        end = newline
    return 0


class _CsvParser:
    """PostgreSQL's CSV, typed by the plan: NULL only for unquoted empty fields, `t`/`f` booleans."""

    def __init__(self, columns: Sequence[ColumnType]) -> None:
        self._columns = columns
        self._schema = pa.schema([column.field for column in columns])
        self._names = [f"c{index}" for index in range(len(columns))]
        self._parse_options = pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
        self._convert_options = pacsv.ConvertOptions(
            column_types={
                name: pa.string() if pa.types.is_binary(column.arrow_type) else column.arrow_type
                for name, column in zip(self._names, columns, strict=True)
            },
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        )

    def batches(self, rows: bytes | memoryview) -> Iterator[pa.RecordBatch]:
        """Whole rows as record batches; one block, so a row of any length parses."""
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(rows)),
            read_options=pacsv.ReadOptions(
                column_names=self._names, block_size=len(rows) + 1, use_threads=False
            ),
            parse_options=self._parse_options,
            convert_options=self._convert_options,
        )
        for block in table.to_batches():
            arrays = [
                _bytea(array) if pa.types.is_binary(column.arrow_type) else array
                for array, column in zip(block.columns, self._columns, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=self._schema)


def _bytea(hex_text: pa.Array) -> pa.Array:
    """PostgreSQL's hex output (`\\x00ff`) as bytes."""
    return pa.array(
        [None if value is None else bytes.fromhex(value[2:]) for value in hex_text.to_pylist()], pa.binary()
    )


def _rebatched(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Chunks hold a varying number of rows; landing wants batches of `rows` (one Parquet row group
    each). Slices are zero-copy; only the batches spanning two chunks are concatenated."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            taken = batch.slice(offset, rows - pending_rows)
            offset += taken.num_rows
            pending.append(taken)
            pending_rows += taken.num_rows
            if pending_rows == rows:
                yield _concatenated(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield _concatenated(pending)


def _concatenated(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)
