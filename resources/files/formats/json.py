"""JSON Lines and JSON documents as all-text Arrow batches (values rendered as `json_text` describes).

JSON Lines: the stream is cut into chunks of whole lines, about `batch_bytes` each. Arrow's JSON reader
parses a chunk (fast, multi-threaded) and its columns are cast to text. A chunk Arrow cannot take as is is
parsed again line by line in Python, which reports each malformed line with its number: a line that is not
JSON or not an object, a field holding different kinds of values, nested objects or arrays, duplicate keys,
integers a double cannot hold exactly. Columns Arrow has seen holding strings are declared text for the next
chunks, so that it does not turn date-like strings into timestamps.

JSON documents (a top-level array of records, or an object with the array at `record_path`) are streamed
with ijson's C backend, `batch_rows` records per batch; `_record` is the record's 1-based position in the
array. A truncated or invalid document cannot be skipped past: the whole file fails, whatever the policy.

Records of one file may carry different fields; `schema_union` gives all its batches one schema.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, NoReturn, cast

import ijson
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from resources.files.config import FileFormat
from resources.files.formats.json_text import EXACT_DOUBLE_LIMIT, arrow_column_as_text, records_as_text
from resources.files.formats.schema_union import unify_batches
from resources.files.read_context import ReadContext

_ARROW_TEXT_READY = (
    pa.types.is_string,
    pa.types.is_null,
    pa.types.is_boolean,
    pa.types.is_int64,
    pa.types.is_float64,
)


def read_json_lines(
    stream: BinaryIO, fmt: FileFormat, batch_bytes: int, context: ReadContext
) -> Iterator[pa.RecordBatch]:
    """All-text batches of one JSON Lines file, about one per `batch_bytes` of input, lineage attached."""
    yield from unify_batches(_json_lines_batches(_utf8(stream, fmt.encoding), fmt, batch_bytes, context))


def read_json_document(
    stream: BinaryIO,
    fmt: FileFormat,
    batch_rows: int,
    context: ReadContext,
    reopen: Callable[[], AbstractContextManager[BinaryIO]],
) -> Iterator[pa.RecordBatch]:
    """All-text batches of the records of one JSON document; `reopen` serves only to explain a document in
    which no record was found (empty, no array at `record_path`, ...)."""
    yield from unify_batches(_document_batches(stream, fmt, batch_rows, context, reopen))


def _json_lines_batches(
    stream: BinaryIO, fmt: FileFormat, batch_bytes: int, context: ReadContext
) -> Iterator[pa.RecordBatch]:
    text_columns: set[str] = set()
    try:
        for first_line, line_count, chunk in _line_chunks(stream, batch_bytes):
            parsed = _arrow_chunk(chunk, first_line, line_count, text_columns, context)
            batch, lines = parsed if parsed is not None else _python_chunk(chunk, first_line, context)
            if batch.num_rows:
                yield context.with_lineage(batch, lines)
    except UnicodeDecodeError as exc:
        context.fail_encoding(fmt.encoding, exc)


def _line_chunks(stream: BinaryIO, batch_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    """(number of the first line, number of lines, whole lines) of about `batch_bytes`; a longer line makes
    a longer chunk."""
    first_line, pending = 1, b""
    while block := stream.read(batch_bytes):
        data = pending + block
        cut = data.rfind(b"\n") + 1
        if cut:
            line_count = data.count(b"\n", 0, cut)
            yield first_line, line_count, data[:cut]
            first_line += line_count
        pending = data[cut:]
    if pending:
        yield first_line, 1, pending


def _arrow_chunk(
    chunk: bytes, first_line: int, line_count: int, text_columns: set[str], context: ReadContext
) -> tuple[pa.RecordBatch, np.ndarray] | None:
    """The chunk through Arrow's JSON reader, or None when it needs the Python way."""
    table = _arrow_parse(chunk, text_columns, context)
    if table is None:
        return None
    dates = [column.name for column in table.schema if pa.types.is_timestamp(column.type)]
    if dates:
        text_columns.update(dates)
        reparsed = _arrow_parse(chunk, text_columns, context)
        table = reparsed.select(table.column_names) if reparsed is not None else None
    if table is None or not _text_ready(table):
        return None
    lines = _record_lines(chunk, first_line, line_count, table.num_rows)
    if lines is None:
        return None
    text_columns.update(column.name for column in table.schema if pa.types.is_string(column.type))
    columns = [arrow_column_as_text(column) for column in table.columns]
    return pa.RecordBatch.from_arrays(columns, names=table.column_names), lines


def _arrow_parse(chunk: bytes, text_columns: set[str], context: ReadContext) -> pa.Table | None:
    try:
        table = pajson.read_json(
            pa.py_buffer(chunk),
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema([(name, pa.string()) for name in sorted(text_columns)]),
                unexpected_field_behavior="infer",
            ),
        )
    except pa.ArrowInvalid:
        return None
    try:
        table.validate(full=True)  # Arrow's JSON reader does not check that strings are UTF-8
    except pa.ArrowInvalid as exc:
        context.fail_encoding("utf-8", exc)
    return table


def _text_ready(table: pa.Table) -> bool:
    """Only flat columns Arrow renders exactly like the Python way does."""
    for column in table.columns:
        if not any(is_kind(column.type) for is_kind in _ARROW_TEXT_READY):
            return False
        if pa.types.is_float64(column.type):  # integers beyond int64 come as doubles: the Python way is exact
            largest = pc.max(pc.abs(column)).as_py()
            if largest is not None and largest >= EXACT_DOUBLE_LIMIT:
                return False
    return True


def _record_lines(chunk: bytes, first_line: int, line_count: int, rows: int) -> np.ndarray | None:
    """Line numbers of the chunk's records (Arrow skips blank lines), or None if they do not add up."""
    if line_count == rows:
        return np.arange(first_line, first_line + rows, dtype=np.int64)
    numbers = [first_line + at for at, line in enumerate(chunk.split(b"\n")) if line.strip()]
    return np.array(numbers, dtype=np.int64) if len(numbers) == rows else None


def _python_chunk(chunk: bytes, first_line: int, context: ReadContext) -> tuple[pa.RecordBatch, np.ndarray]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for at, raw in enumerate(chunk.split(b"\n")):
        if not raw.strip():
            continue
        line = first_line + at
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            context.malformed(
                line, f"not valid JSON ({exc.msg}, column {exc.colno})", raw.decode("utf-8", "replace")
            )
            continue
        if not isinstance(value, dict):
            context.malformed(
                line, f"a JSON {_kind(value)} where a record (an object) was expected", raw.decode()
            )
            continue
        records.append(value)
        lines.append(line)
    return records_as_text(records), np.array(lines, dtype=np.int64)


def _document_batches(
    stream: BinaryIO,
    fmt: FileFormat,
    batch_rows: int,
    context: ReadContext,
    reopen: Callable[[], AbstractContextManager[BinaryIO]],
) -> Iterator[pa.RecordBatch]:
    records: list[dict[str, Any]] = []
    positions: list[int] = []
    position = 0
    prefix = f"{fmt.record_path}.item" if fmt.record_path else "item"
    try:
        for position, item in enumerate(
            ijson.items(_document_text(stream, fmt), prefix, use_float=True), start=1
        ):
            if not isinstance(item, dict):
                context.malformed(
                    None, f"record {position} is a JSON {_kind(item)}, not an object", json.dumps(item)
                )
                continue
            records.append(item)
            positions.append(position)
            if len(records) == batch_rows:
                yield context.with_lineage(records_as_text(records), np.array(positions, dtype=np.int64))
                records, positions = [], []
    except ijson.JSONError as exc:
        if position:
            _broken_document(context, exc)
    except UnicodeDecodeError as exc:
        context.fail_encoding(fmt.encoding, exc)
    if records:
        yield context.with_lineage(records_as_text(records), np.array(positions, dtype=np.int64))
    if not position:
        with reopen() as again:
            _explain_no_records(again, fmt, context)


def _explain_no_records(stream: BinaryIO, fmt: FileFormat, context: ReadContext) -> None:
    """Nothing to say for an empty file or an empty array of records; a file error for anything else."""
    target = fmt.record_path or ""
    where = f"at `record_path` {fmt.record_path!r}" if fmt.record_path else "at the top level"
    hint = (
        "fix `record_path`"
        if fmt.record_path
        else "declare `record_path`, the dotted path to the array of records"
    )
    started = False
    try:
        for prefix, event, value in ijson.parse(_document_text(stream, fmt)):
            started = True
            if prefix == target:
                if event == "start_array":
                    return
                found = "an object" if event == "start_map" else f"a {event} ({value!r})"
                context.fail(f"holds {found} {where}, not an array of records; {hint}.")
    except ijson.JSONError as exc:
        if not started:
            return
        _broken_document(context, exc)
    except UnicodeDecodeError as exc:
        context.fail_encoding(fmt.encoding, exc)
    context.fail(f"has no array {where}; {hint}.")


def _document_text(stream: BinaryIO, fmt: FileFormat) -> BinaryIO:
    """The document as UTF-8 without byte-order mark (ijson refuses one)."""
    is_utf8 = codecs.lookup(fmt.encoding).name == "utf-8"
    return _utf8(stream, "utf-8-sig" if is_utf8 else fmt.encoding)


def _utf8(stream: BinaryIO, encoding: str) -> BinaryIO:
    if codecs.lookup(encoding).name == "utf-8":
        return stream
    return cast(BinaryIO, pa.transcoding_input_stream(pa.PythonFile(stream, mode="r"), encoding, "utf-8"))


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if value is not None else "null"
    )


def _broken_document(context: ReadContext, exc: ijson.JSONError) -> NoReturn:
    reason = str(exc).splitlines()[0]
    context.fail(
        f"is not a complete, valid JSON document ({reason}); a broken document cannot be read past, so "
        f"none of its records lands. Fix the file or deliver it again."
    )
