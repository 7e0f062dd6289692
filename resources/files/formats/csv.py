"""CSV deliveries land as their bytes and are parsed once, by staging's DuckDB scan
(`resources/landing/delivered.py`). What landing needs of one here: its column names from its header or
the catalog, validated (`read_header`, the only part of the file landing parses), and the options of
DuckDB's `read_csv` that staging parses it with (`duckdb_options`).

Every column lands as text, exactly as delivered: typing is the staging layer's job. An unquoted empty
field is null, a quoted one (`""`) the empty string.
"""

from __future__ import annotations

import csv as pycsv
import io
from typing import Any, BinaryIO

from resources.files.config import FileFormat, MalformedPolicy
from resources.files.read_context import ReadContext

_BLANK_HEADER = "starts with a blank line; the header must be the first line."


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
