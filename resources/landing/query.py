"""Queries over landed Parquet files, run by an embedded DuckDB whatever the warehouse is.

Staging (typing, de-duplicating the latest extraction per key) is computed here and streamed out as Arrow
batches; the warehouse IO manager then loads the stream into DuckDB, PostgreSQL or BigQuery. DuckDB spills
to `spill_dir` when a sort or window does not fit `memory_limit`, so memory stays bounded by the limit and
the batch size, never by the data.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from resources.warehouses.duckdb_warehouse import streamed_result

DEFAULT_MEMORY_LIMIT_MB = 256
DEFAULT_MEMORY_LIMIT = f"{DEFAULT_MEMORY_LIMIT_MB}MB"


def scaled_memory_limit(scale: float) -> str:
    """The embedded DuckDB's memory limit scaled by a healing override (`batch_scale`): a step whose
    process is held to less memory than the default assumes (a container or cgroup limit, a small VM) is
    killed at the default and succeeds with a smaller limit, because DuckDB then spills to disk instead."""
    return f"{max(64, int(DEFAULT_MEMORY_LIMIT_MB * scale))}MB"


def stream_query(
    sql: str, *, batch_rows: int, spill_dir: Path, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> pa.RecordBatchReader:
    """The result of `sql` as batches of at most `batch_rows` rows. The in-memory database lives until the
    reader is exhausted or closed."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        ":memory:",
        config={
            "temp_directory": str(spill_dir),
            "memory_limit": memory_limit,
            "preserve_insertion_order": False,
        },
    )
    return streamed_result(con, sql, [], batch_rows)
