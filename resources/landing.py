"""The landing zone: raw, bytes-faithful Parquet copies of what sources delivered.

A landed file is written under a temporary name in its final directory and renamed when complete, so a
reader never sees half a file and a crash leaves only a temporary file that the next attempt replaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class LandedFile:
    path: Path
    rows: int
    bytes: int


class LandingZone(dg.ConfigurableResource):
    """Landed Parquet under `<root>/<source>/<entity>/load_date=<YYYY-MM-DD>/`."""

    root: str

    def land(
        self,
        source: str,
        entity: str,
        load_date: str,
        file_stem: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
    ) -> LandedFile:
        """Stream batches into one Parquet file; the same `file_stem` (a run id) overwrites, so a retried
        step lands once, not twice."""
        directory = Path(self.root) / source / entity / f"load_date={load_date}"
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{file_stem}.parquet"
        temporary = directory / f".{file_stem}.parquet.tmp"
        rows = 0
        try:
            with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        return LandedFile(path=final, rows=rows, bytes=final.stat().st_size)
