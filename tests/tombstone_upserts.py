"""One upsert with tombstones (rows whose `_deleted` is true delete their key), the same for every
warehouse's tests: what the table holds before and after it, and a batch that repeats a key (refused,
changing nothing)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from resources.warehouses.load import TOMBSTONE_COLUMN

KEY = ["id"]
BEFORE_ROWS = [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]
BEFORE = pa.table({"id": [key for key, _ in BEFORE_ROWS], "name": [name for _, name in BEFORE_ROWS]})
UPSERT = pa.table(
    {
        "id": [2, 4, 3, 6, 9],
        "name": [None, None, "C", "f", None],
        # 2 and 4 deleted, 3 updated, 6 inserted (a null mark is a live row), 9 absent: deletes nothing
        TOMBSTONE_COLUMN: [True, True, False, None, True],
    }
)
WRITTEN = 2
"""Rows written: the tombstones are not."""
AFTER = [(1, "a"), (3, "C"), (5, "e"), (6, "f")]
NEW_TABLE = [(3, "C"), (6, "f")]
"""The same upsert into a table that does not exist yet."""
REPEATING = pa.table(
    {"id": [1, 5, 7, 7], "name": [None, None, "g", "h"], TOMBSTONE_COLUMN: [True, True, False, False]}
)
"""Tombstones for two stored keys beside a repeated new key: refused, and the deletes with it."""


def batches_of_two(table: pa.Table) -> Iterator[pa.RecordBatch]:
    """Small batches, so that tombstones and live rows arrive in different batches."""
    return iter(table.to_batches(max_chunksize=2))
