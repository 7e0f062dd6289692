"""One schema for every batch of a file whose records do not all carry the same fields (JSON).

The caller writes one Parquet file per source file, so all batches of a file need one schema: the union of
their columns in first-seen order (lineage columns last), a column a batch lacks being null. A field may
first appear in the file's last record, so that union is only known at the end. Batches are therefore
spilled to a temporary Arrow IPC file (on local disk, under TMPDIR) and replayed once the union is known:
memory stays bounded by one batch, at the cost of writing and reading the batches once more. A file that
fits in one batch is passed through untouched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from resources.files.read_context import LINEAGE_FIELDS

_LINEAGE_NAMES = {lineage.name for lineage in LINEAGE_FIELDS}


def unify_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The same batches, all with the union schema."""
    stream = iter(batches)
    first, second = next(stream, None), next(stream, None)
    if second is None:
        if first is not None:
            yield first
        return
    with tempfile.TemporaryDirectory(prefix="platform-batches-") as spill_dir:
        spill = _Spill(Path(spill_dir))
        try:
            for batch in chain([first, second], stream):
                spill.write(batch)
        finally:
            spill.close()
        yield from spill.replay()


class _Spill:
    """Batches in segment files: each batch is written conformed to the union so far, and a new segment
    starts whenever the union grows."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fields: dict[str, pa.Field] = {}
        self.schema = pa.schema(LINEAGE_FIELDS)
        self.segments: list[Path] = []
        self.writer: ipc.RecordBatchStreamWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        new = [
            column
            for column in batch.schema
            if column.name not in self.fields and column.name not in _LINEAGE_NAMES
        ]
        if self.writer is None or new:
            self.close()
            self.fields.update((column.name, column) for column in new)
            self.schema = pa.schema([*self.fields.values(), *LINEAGE_FIELDS])
            self.segments.append(self.directory / f"segment-{len(self.segments)}.arrows")
            self.writer = ipc.new_stream(str(self.segments[-1]), self.schema)
        self.writer.write_batch(_conform(batch, self.schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def replay(self) -> Iterator[pa.RecordBatch]:
        """The spilled batches in order, each with the final union schema."""
        for segment in self.segments:
            with pa.OSFile(str(segment)) as source, ipc.open_stream(source) as reader:
                for batch in reader:
                    yield _conform(batch, self.schema)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with exactly the schema's columns, in its order; a missing one is all null."""
    if batch.schema.equals(schema):
        return batch
    columns = [
        batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows, column.type)
        for name, column in zip(schema.names, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
