"""CSV deliveries: what landing needs to land one as its bytes (`read_header`, the DuckDB `read_csv` options
staging parses it with, `duckdb_options`), and a stream of all-text Arrow batches (`read_csv`, through
`read_batches`), each row with the line where its record starts.

Every column lands as text (`string`), exactly as delivered: typing is the staging layer's job. An unquoted
empty field is null, a quoted one (`""`) the empty string. A line with no value at all (blank, or only
delimiters) carries nothing to land and is dropped; in a one-column file that includes empty values.

Line numbers are physical: Arrow numbers records (a quoted value spanning lines is one record, so is a blank
line), and a record starts on its number plus the line breaks inside the values before it. Arrow reports
the number of a row with the wrong field count only when it parses serially, hence `use_threads=False`.

Memory: Arrow's streaming reader reads up to 32 blocks ahead in a background thread (not configurable), so
blocks are small (`READ_BLOCK_BYTES`) and their batches are merged into batches of about `batch_bytes`
(downstream, a batch becomes a Parquet row group).
"""

from __future__ import annotations

import csv as pycsv
import functools
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from resources.files.config import FileFormat, MalformedPolicy
from resources.files.read_context import RECORD_COLUMN, ReadContext

MAX_COLUMNS = 10_000
"""Arrow has no switch to read every column as text: types are given per column name. A file with a header
is read with Arrow's generated names (f0, f1, ...), all declared text, and the header row becomes the names;
a header wider than this is refused."""

READ_BLOCK_BYTES = 1 << 20
"""With Arrow's 32-block readahead, 32 MiB of raw input in memory at most."""

_LINE_FEED = ord("\n")
_BLANK_HEADER = "starts with a blank line; the header must be the first line."


@dataclass(frozen=True)
class _InvalidRow:
    record: int
    """Arrow's 1-based record number, the header counted."""
    text: str
    expected: int
    actual: int


@dataclass
class _LineTracker:
    """Turns Arrow's record numbers into physical lines, and collects the rows Arrow sets aside."""

    next_record: int = 1
    line_breaks_before: int = 0
    invalid: deque[_InvalidRow] = field(default_factory=deque)

    def set_aside(self, row: pacsv.InvalidRow) -> str:
        """Arrow's `invalid_row_handler`: runs while a block is parsed, before its batch comes out (and
        possibly a block ahead), so rows are only noted here and placed when the batches reach them."""
        self.invalid.append(_InvalidRow(row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    def place(
        self, line_breaks: np.ndarray, *, at_end: bool = False
    ) -> tuple[np.ndarray, list[tuple[int, _InvalidRow]]]:
        """Lines of the next parsed rows (given the line breaks inside each) and of the set-aside rows
        among them; `at_end` also places the set-aside rows after the last parsed one."""
        first, end = self.next_record, self.next_record + len(line_breaks)
        placed: list[_InvalidRow] = []
        while self.invalid and (self.invalid[0].record < end or at_end):
            placed.append(self.invalid.popleft())
            end += 1
        breaks = line_breaks.astype(np.int64)
        invalid_at = np.array([row.record - first for row in placed], dtype=np.int64)
        parsed = np.ones(end - first, dtype=bool)
        if placed:
            parsed[invalid_at] = False
            breaks = np.zeros(end - first, dtype=np.int64)
            breaks[parsed] = line_breaks
            breaks[invalid_at] = [row.text.count("\n") for row in placed]
        lines = np.arange(first, end, dtype=np.int64) + self.line_breaks_before + np.cumsum(breaks) - breaks
        self.next_record, self.line_breaks_before = end, self.line_breaks_before + int(breaks.sum())
        return lines[parsed], [(int(lines[at]), row) for at, row in zip(invalid_at, placed, strict=True)]

    @property
    def next_line(self) -> int:
        return self.next_record + self.line_breaks_before


def read_csv(
    stream: BinaryIO, fmt: FileFormat, batch_bytes: int, context: ReadContext
) -> Iterator[pa.RecordBatch]:
    """All-text batches of about `batch_bytes` of one CSV file, lineage attached. The last block is held
    back until the end of the file, to check that its last record closed its quotes."""
    pending: list[pa.RecordBatch] = []
    pending_bytes = 0
    for batch in _block_batches(stream, fmt, min(batch_bytes, READ_BLOCK_BYTES), context):
        if pending_bytes >= batch_bytes:
            yield pa.concat_batches(pending)
            pending, pending_bytes = [], 0
        pending.append(batch)
        pending_bytes += batch.nbytes
    if pending:
        _check_last_record_closed(pending[-1], context)
        yield pa.concat_batches(pending)


def _check_last_record_closed(batch: pa.RecordBatch, context: ReadContext) -> None:
    """Arrow accepts a quote left open at the end of the file: everything after it becomes one value of
    the last record, which then ends with the file's final line break. A quoted value that really ends
    with a line break in the last record is rare enough to be refused too."""
    last = batch.slice(batch.num_rows - 1).to_pylist()[0]
    line = last.pop(RECORD_COLUMN)
    if any(isinstance(value, str) and value.endswith("\n") for value in last.values()):
        context.fail(
            f"has a quote opened on line {line} or after that is never closed: the rest of the file was "
            f"read as one value. Fix the quoting there, then deliver the file again."
        )


def _block_batches(
    stream: BinaryIO, fmt: FileFormat, block_bytes: int, context: ReadContext
) -> Iterator[pa.RecordBatch]:
    """One batch per parsed block: header and blank lines dropped, malformed rows reported, lineage on."""
    lines = _LineTracker()
    reader = _open(stream, fmt, block_bytes, lines, context)
    if reader is None:
        return
    names = None if fmt.header else reader.schema.names
    blank_header = False
    with reader:
        for batch in _parsed_batches(reader, context, fmt, lines):
            row_lines, invalid_rows = lines.place(_line_breaks_per_row(batch))
            blank = _blank_rows(batch)
            if names is None and (blank_header or blank[0]):
                # Arrow took the blank line's single field as the number of columns: fine for an empty
                # file, hopeless for anything else.
                blank_header = True
                if invalid_rows or not blank.all():
                    context.fail(_BLANK_HEADER)
                continue
            if names is None:
                names = _header_names([column[0].as_py() for column in batch.columns], fmt, context)
                blank[0] = True  # the header is no record to land
            for line, row in invalid_rows:
                context.malformed(line, f"expected {row.expected} fields, found {row.actual}", row.text)
            if blank.any():
                batch, row_lines = batch.filter(pa.array(~blank)), row_lines[~blank]
            if batch.num_rows:
                yield context.with_lineage(pa.RecordBatch.from_arrays(batch.columns, names=names), row_lines)
    for line, row in lines.place(np.zeros(0, dtype=np.int64), at_end=True)[1]:
        if names is None:
            context.fail(_BLANK_HEADER)
        context.malformed(line, f"expected {row.expected} fields, found {row.actual}", row.text)


def _open(
    stream: BinaryIO, fmt: FileFormat, block_bytes: int, lines: _LineTracker, context: ReadContext
) -> pacsv.CSVStreamingReader | None:
    """Arrow's streaming reader with every column as text, or None for an empty file."""
    if not fmt.header and not fmt.column_names:
        context.fail(
            "is declared without a header line (`header: false`) but with no `column_names`; declare them."
        )
    arrow_names = [f"f{i}" for i in range(MAX_COLUMNS)] if fmt.header else list(fmt.column_names or [])
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                use_threads=False,
                block_size=block_bytes,
                encoding=fmt.encoding,
                column_names=None if fmt.header else arrow_names,
                autogenerate_column_names=fmt.header,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=fmt.delimiter,
                quote_char=fmt.quote_char,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=lines.set_aside,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in arrow_names},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return None
        _unreadable(context, fmt, exc, lines)
    except UnicodeDecodeError as exc:
        context.fail_encoding(fmt.encoding, exc)
    if len(reader.schema) > MAX_COLUMNS:
        context.fail(
            f"has more than {MAX_COLUMNS:,} columns, more than the platform reads from one CSV file."
        )
    return reader


def _parsed_batches(
    reader: pacsv.CSVStreamingReader, context: ReadContext, fmt: FileFormat, lines: _LineTracker
) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            _unreadable(context, fmt, exc, lines)
        except UnicodeDecodeError as exc:
            context.fail_encoding(fmt.encoding, exc)
        yield batch


def read_header(stream: BinaryIO, fmt: FileFormat, context: ReadContext) -> list[str] | None:
    """The column names of a CSV file from its first record (or its declared `column_names`), validated;
    None for an empty file (no byte, or blank lines only). Reads only that record (past blank lines, up to
    the next record): what a delivery landed as its bytes is parsed later, by DuckDB, with these names (so
    no dialect or header is guessed from a sample there)."""
    if not fmt.header:
        if not fmt.column_names:
            context.fail(
                "is declared without a header line (`header: false`) but with no `column_names`; declare "
                "them."
            )
        context.check_names(fmt.column_names)
        return list(fmt.column_names)
    text = io.TextIOWrapper(stream, encoding=fmt.encoding, newline="")
    records = pycsv.reader(text, delimiter=fmt.delimiter, quotechar=fmt.quote_char)
    try:
        first = next(records, None)
        if first is not None and not any(first):
            # Blank lines only: an empty file. A record after them: a file without its header first.
            if any(any(record) for record in records):
                context.fail(_BLANK_HEADER)
            first = None
    except UnicodeDecodeError as exc:
        context.fail_encoding(fmt.encoding, exc)
    finally:
        text.detach()
    if first is None:
        return None
    names = _header_names([name or None for name in first], fmt, context)
    context.check_names(names)
    return names


def duckdb_options(
    fmt: FileFormat, names: list[str], on_malformed: MalformedPolicy, codec: str
) -> dict[str, Any]:
    """DuckDB's `read_csv` options for the catalog's: the columns named as landing read them, all text,
    exactly as delivered (a quoted empty value is the empty string, an unquoted one null), nothing guessed
    from a sample; a malformed record fails the scan, or is set aside under `on_malformed: skip`."""
    options: dict[str, Any] = {
        "header": fmt.header,
        "columns": {column: "VARCHAR" for column in names},
        "auto_detect": False,
        "delim": fmt.delimiter,
        "quote": fmt.quote_char,
        "escape": fmt.quote_char,
        "encoding": fmt.encoding,
        "compression": codec,
        "allow_quoted_nulls": False,
    }
    if on_malformed == "skip":
        options["store_rejects"] = True
    return options


def _header_names(header: list[str | None], fmt: FileFormat, context: ReadContext) -> list[str]:
    if fmt.column_names:
        if len(fmt.column_names) != len(header):
            context.fail(
                f"has {len(header)} fields in its header but the entity declares {len(fmt.column_names)} "
                f"`column_names`; declare one name per field."
            )
        return list(fmt.column_names)
    if None in header:
        context.fail(
            f"has an empty name in its header (field {header.index(None) + 1}); name every column in the "
            f"file, or declare `column_names`."
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        context.fail(f"repeats the column(s) {duplicates} in its header; declare distinct `column_names`.")
    return header


def _line_breaks_per_row(batch: pa.RecordBatch) -> np.ndarray:
    """How many line feeds each row's values hold (a quoted value may span lines); vectorized over the
    columns' value buffers, so a file without such values costs one byte scan."""
    breaks = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        _, offsets_buffer, data_buffer = column.buffers()
        offsets = np.frombuffer(
            offsets_buffer, dtype=np.int32, count=len(column) + 1, offset=column.offset * 4
        )
        if data_buffer is None or offsets[-1] == offsets[0]:
            continue
        data = np.frombuffer(
            data_buffer, dtype=np.uint8, count=int(offsets[-1] - offsets[0]), offset=int(offsets[0])
        )
        positions = np.flatnonzero(data == _LINE_FEED) + offsets[0]
        if positions.size:
            rows = np.searchsorted(offsets, positions, side="right") - 1
            breaks += np.bincount(rows, minlength=len(column))
    return breaks


def _blank_rows(batch: pa.RecordBatch) -> np.ndarray:
    if batch.num_columns == 0 or any(column.null_count == 0 for column in batch.columns):
        return np.zeros(batch.num_rows, dtype=bool)
    all_null = functools.reduce(pc.and_, [pc.is_null(column) for column in batch.columns])
    return all_null.to_numpy(zero_copy_only=False)


def _unreadable(context: ReadContext, fmt: FileFormat, exc: pa.ArrowInvalid, lines: _LineTracker) -> NoReturn:
    if "invalid UTF8" in str(exc):
        context.fail_encoding(fmt.encoding, exc)
    context.fail(
        f"cannot be read as CSV after line {lines.next_line - 1} ({exc}). A quote opened and never "
        f"closed makes the rest of the file one value: check the quoting after that line, then deliver the "
        f"file again."
    )
