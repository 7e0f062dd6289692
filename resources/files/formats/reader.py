"""Delivered files read record by record, as streams of Arrow record batches: JSON, JSON Lines and Avro.

(CSV and Parquet deliveries are not read here: they land as their bytes, and staging's DuckDB scan parses
them once; see `resources/landing/delivered.py`.)

One entry point for the extraction step: `read_batches` opens a file through the `FileStore` (local or
GCS, decompressed on the fly) and hands it to the reader of its declared format. JSON and JSON Lines land
as text, exactly as delivered; Avro keeps its types. Every batch carries the lineage columns `_file` and
`_record`, and all batches of one file share one schema. Memory is bounded by the batch size, never by the
file size; a JSON file of more than one batch passes through a temporary spill file on local disk (see
`schema_union`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import pyarrow as pa

from resources.files.compression import DAMAGED_DATA_ERRORS, codec_for, damaged_reason, is_damaged_bz2
from resources.files.config import FileFormat, MalformedPolicy
from resources.files.formats.avro import read_avro
from resources.files.formats.json import read_json_document, read_json_lines
from resources.files.read_context import (
    FILE_COLUMN,
    RECORD_COLUMN,
    MalformedFileError,
    MalformedRecord,
    ReadContext,
)
from resources.files.store import FileFingerprint, FileStore

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_ROWS",
    "FILE_COLUMN",
    "RECORD_COLUMN",
    "MalformedFileError",
    "MalformedRecord",
    "read_batches",
]

DEFAULT_BATCH_ROWS = 65_536
"""Records per batch of JSON documents and Avro."""
DEFAULT_BATCH_BYTES = 8 << 20
"""Bytes of input per batch of JSON Lines, read block by block."""


def read_batches(
    store: FileStore,
    file: FileFingerprint,
    fmt: FileFormat,
    *,
    on_malformed: MalformedPolicy,
    quarantine: Callable[[MalformedRecord], None],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[pa.RecordBatch]:
    """The file's records as batches with lineage. A malformed record raises `MalformedFileError` under
    `on_malformed="fail"` and goes to `quarantine` under `"skip"`; a file that cannot be read at all
    (broken JSON document, wrong encoding, damaged compression) always raises. An empty file yields
    nothing."""
    described = store.describe(file)
    context = ReadContext(file.path, described, on_malformed, quarantine)
    with store.open_bytes(file, fmt.compression) as stream:
        try:
            if fmt.format == "jsonl":
                yield from read_json_lines(stream, fmt, batch_bytes, context)
            elif fmt.format == "json":
                reopen = partial(store.open_bytes, file, fmt.compression)
                yield from read_json_document(stream, fmt, batch_rows, context, reopen)
            elif fmt.format == "avro":
                yield from read_avro(stream, batch_rows, context)
            else:
                raise ValueError(
                    f"{fmt.format} deliveries land as their bytes (platform_assets/ingestion/files.py), "
                    f"they are not read record by record"
                )
        except DAMAGED_DATA_ERRORS as exc:
            codec = codec_for(file.path, fmt.compression)
            raise MalformedFileError(f"{described} {damaged_reason(codec, exc)}") from exc
        except OSError as exc:
            if not is_damaged_bz2(exc):
                raise
            raise MalformedFileError(f"{described} {damaged_reason('bz2', exc)}") from exc
