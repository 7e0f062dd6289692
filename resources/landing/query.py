"""Queries over landed Parquet files, run by an embedded DuckDB whatever the warehouse is.

Staging (typing, de-duplicating the latest extraction per key) is computed here and streamed out as Arrow
batches; the warehouse IO manager then loads the stream into DuckDB, PostgreSQL or BigQuery. DuckDB spills
to `spill_dir` when a sort or window does not fit `memory_limit`, so memory stays bounded by the limit and
the batch size, never by the data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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


WIDE_COLUMNS = 100
"""A delivery of this many columns or more is wide: staged on one thread, within a limit sized by its
width."""
STAGING_MB_PER_COLUMN = 1
"""What staging's DuckDB needs per column of a wide delivery, on top of `STAGING_BASE_MB`: building the
staged table keeps a row group per thread in memory until it is full (122,880 rows), in blocks of 256 KiB
per column, which DuckDB does not spill. Measured on 500 columns (string and integer): 20k rows stage at
384 MB, 100k rows fail at 448 MB and stage at 512 MB (one thread or two); 250k rows fail at 628 MB on two
threads and stage on one."""
STAGING_BASE_MB = 128
STAGING_MEMORY_CEILING_VAR = "STAGING_MEMORY_CEILING_MB"
"""Environment variable: the most staging's DuckDB may take however wide the delivery (default 4096)."""


@dataclass(frozen=True)
class StagingMemory:
    """How the DuckDB that stages a delivery is held: its memory limit and its threads (None: DuckDB's
    default, one per core)."""

    memory_limit: str
    threads: int | None = None


DEFAULT_STAGING_MEMORY = StagingMemory(DEFAULT_MEMORY_LIMIT)


def staging_memory(scale: float, columns: int, environ: Mapping[str, str] | None = None) -> StagingMemory:
    """The one rule for staging's DuckDB memory, by the delivery's width (`columns`, as landed).

    A narrow delivery: the default limit scaled by healing's `batch_scale` (`scaled_memory_limit`), on
    every core; beyond the limit DuckDB spills rows, so its memory stays bounded whatever the row count.
    A wide one (`WIDE_COLUMNS` or more): one thread, within `STAGING_BASE_MB + STAGING_MB_PER_COLUMN *
    columns` (when more than the scaled default), at most `STAGING_MEMORY_CEILING_MB`.

    Why: what DuckDB cannot spill while it builds the staged table grows with columns x threads (a row
    group per thread, a block per column), so a fixed 256 MB failed every delivery of ~400 columns or more
    with an OutOfMemoryException however few its rows (400 x 20k), and a limit sized for one thread still
    failed on two once the rows filled a row group. The width floor is not scaled down by `batch_scale`:
    below it the step cannot succeed at all (a process held to less memory than that needs a lower ceiling
    and a narrower delivery)."""
    scaled = max(64, int(DEFAULT_MEMORY_LIMIT_MB * scale))
    if columns < WIDE_COLUMNS:
        return StagingMemory(f"{scaled}MB")
    env = os.environ if environ is None else environ
    ceiling = int(env.get(STAGING_MEMORY_CEILING_VAR, "4096"))
    wide = STAGING_BASE_MB + STAGING_MB_PER_COLUMN * columns
    return StagingMemory(f"{min(ceiling, max(scaled, wide))}MB", threads=1)


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
