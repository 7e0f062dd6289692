"""Source files on local disk, read as streams of Arrow record batches.

Columns are read as text, exactly as delivered: typing is the staging layer's job, so a value that does
not parse is kept and reported there instead of failing the landing or being silently turned into NULL.
Memory is bounded by `block_size`, not by the file size.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.csv as pacsv

SOURCE_FILE_COLUMN = "_source_file"
SOURCE_RECORD_COLUMN = "_source_record"
DEFAULT_BLOCK_SIZE = 8 << 20


class SourceFileError(ValueError):
    """A source file cannot be read as declared: names the file and what to change."""


@dataclass(frozen=True)
class CsvFormat:
    delimiter: str = ","
    quote_char: str = '"'
    encoding: str = "utf8"


class SourceFiles(dg.ConfigurableResource):
    """Files under one root directory (the embedded default's stand-in for a bucket)."""

    root: str

    def list(self, pattern: str) -> list[Path]:
        """Files matching a glob relative to the root, sorted so that landing order is deterministic."""
        root = Path(self.root)
        matches = sorted(p for p in root.glob(pattern) if p.is_file())
        if not matches:
            raise SourceFileError(
                f"No source file matches {pattern!r} under {root}. Check the entity's `path` glob in the "
                f"catalog, or generate the demo data with `dataplatform generate`."
            )
        return matches

    def read_csv(
        self, paths: list[Path], csv_format: CsvFormat, block_size: int = DEFAULT_BLOCK_SIZE
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """One schema and a lazy stream of batches over all files, with the file and the 1-based record
        number of each row so that a bad row can be traced back to where it was delivered."""
        header = _csv_header(paths[0], csv_format)
        for path in paths[1:]:
            other = _csv_header(path, csv_format)
            if other != header:
                raise SourceFileError(
                    f"{path} has columns {other} but {paths[0]} has {header}; files of one entity must "
                    f"share a header (split them into separate entities, or fix the delivery)."
                )
        schema = pa.schema(
            [pa.field(name, pa.string()) for name in header]
            + [pa.field(SOURCE_FILE_COLUMN, pa.string()), pa.field(SOURCE_RECORD_COLUMN, pa.int64())]
        )
        return schema, _stream_csv(paths, header, schema, csv_format, block_size)


def _csv_header(path: Path, csv_format: CsvFormat) -> list[str]:
    """The header alone, read with the standard csv module so that a bad row further down the file is
    reported by the streaming reader with its record number, not here."""
    with open(path, encoding=csv_format.encoding, newline="") as handle:
        names = next(csv.reader(handle, delimiter=csv_format.delimiter, quotechar=csv_format.quote_char), [])
    if not names:
        raise SourceFileError(f"{path} is empty: a CSV delivery needs at least a header line.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SourceFileError(f"{path} repeats the column(s) {duplicates} in its header.")
    return names


def _parse_options(csv_format: CsvFormat) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter=csv_format.delimiter, quote_char=csv_format.quote_char)


def _stream_csv(
    paths: list[Path], header: list[str], schema: pa.Schema, csv_format: CsvFormat, block_size: int
) -> Iterator[pa.RecordBatch]:
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=False,
    )
    for path in paths:
        record = 1
        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(encoding=csv_format.encoding, block_size=block_size),
                parse_options=_parse_options(csv_format),
                convert_options=convert,
            )
            with reader:
                for batch in reader:
                    yield pa.RecordBatch.from_arrays(
                        [
                            *batch.columns,
                            pa.array([path.name] * batch.num_rows, pa.string()),
                            pa.array(range(record, record + batch.num_rows), pa.int64()),
                        ],
                        schema=schema,
                    )
                    record += batch.num_rows
        except pa.ArrowInvalid as exc:
            raise SourceFileError(
                f"{path}: malformed CSV after record {record - 1}: {exc}. Fix the file or remove it from the "
                f"delivery; rows already read from it are not landed."
            ) from exc
