"""Parquet deliveries as Arrow batches that keep the file's own types.

Read row group by row group (`iter_batches`), so memory is bounded by the file's row group size;
`_record` is the 1-based row index in the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from resources.files.read_context import ReadContext


def read_parquet(stream: BinaryIO, batch_rows: int, context: ReadContext) -> Iterator[pa.RecordBatch]:
    """Batches of at most `batch_rows` rows of one Parquet file, lineage attached."""
    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        context.fail(f"is not a Parquet file ({exc}).")
    rows_read = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        if batch.num_rows:
            yield context.with_lineage(batch, np.arange(rows_read + 1, rows_read + 1 + batch.num_rows))
            rows_read += batch.num_rows
