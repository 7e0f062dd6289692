"""What every format reader shares: the lineage columns and the malformed-record policy of the file it reads.

Every landed row says where it came from (`_file`, `_record`) so that a bad value found three layers later
can be traced to the delivery and the line. A malformed record either stops the file with a message saying
where and what to do, or is set aside in quarantine with its raw text while the rest lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import pyarrow as pa

from resources.files.config import MalformedPolicy

FILE_COLUMN = "_file"
RECORD_COLUMN = "_record"
LINEAGE_FIELDS = (pa.field(FILE_COLUMN, pa.string()), pa.field(RECORD_COLUMN, pa.int64()))
QUARANTINED_TEXT_CHARS = 2000


class MalformedFileError(ValueError):
    """A delivered file (or one of its records) cannot be read as declared: names the file, the line and
    what to do."""


@dataclass(frozen=True)
class MalformedRecord:
    """A record set aside instead of landed, with enough to find and fix it in the delivery."""

    file: str
    line: int | None
    """1-based line where the record starts; None where lines mean nothing (records of a JSON document)."""
    error: str
    text: str
    """The record's raw text, truncated to 2,000 characters."""


@dataclass(frozen=True)
class ReadContext:
    """One file being read: its lineage and what to do with a malformed record."""

    path: str
    """The file's path relative to the store root, as landed in `_file`."""
    described: str
    """Where the file is (full URL or absolute path), for messages."""
    on_malformed: MalformedPolicy
    quarantine: Callable[[MalformedRecord], None]

    def with_lineage(self, batch: pa.RecordBatch, records: np.ndarray) -> pa.RecordBatch:
        """The batch with `_file` and `_record` (one int per row) appended."""
        self.check_names(batch.schema.names)
        lineage = [_repeated(self.path, batch.num_rows), pa.array(records, pa.int64())]
        return pa.RecordBatch.from_arrays(
            [*batch.columns, *lineage], schema=pa.schema([*batch.schema, *LINEAGE_FIELDS])
        )

    def check_names(self, names: list[str]) -> None:
        """Fails the file when a delivered column takes a name the lineage columns need."""
        clash = {FILE_COLUMN, RECORD_COLUMN}.intersection(names)
        if clash:
            self.fail(
                f"has a column named {sorted(clash)[0]!r}, a name the platform keeps for lineage. Rename the "
                f"column in the delivery (or, for CSV, declare `column_names`)."
            )

    def malformed(self, line: int | None, error: str, text: str) -> None:
        """A malformed record: raises under `fail`, quarantines it under `skip`."""
        if self.on_malformed == "fail":
            where = f"line {line}: " if line is not None else ""
            raise MalformedFileError(
                f"{self.described}: {where}{error}. Fix the file and deliver it again, or set `on_malformed: "
                f"skip` on the entity to quarantine such records and land the rest."
            )
        self.quarantine(MalformedRecord(self.path, line, error, text[:QUARANTINED_TEXT_CHARS]))

    def fail(self, reason: str) -> NoReturn:
        """The whole file cannot be read: no record of it should land."""
        raise MalformedFileError(f"{self.described} {reason}")

    def fail_encoding(self, encoding: str, exc: Exception) -> NoReturn:
        """The file's bytes are not text in the declared encoding."""
        self.fail(
            f"is not valid {encoding} text ({exc}). Declare the file's actual `encoding` on the entity (for "
            f"example latin-1 or cp1252), or deliver it as {encoding}."
        )


def _repeated(text: str, count: int) -> pa.Array:
    """`count` times the same string, built from its buffers (30x faster than from a Python list)."""
    encoded = text.encode()
    offsets = np.arange(count + 1, dtype=np.int32) * len(encoded)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(encoded * count))
