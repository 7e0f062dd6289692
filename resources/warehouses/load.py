"""What every warehouse's bulk load takes and reports, whichever warehouse it is.

Loads take a stream of Arrow record batches (memory bounded by the batch, never the table) and one of three
modes: `replace` the table, `append` to it, or `upsert` by primary key. New columns in the stream are added
to the table (nullable); a column whose type changed is refused, never silently cast.

An upsert whose rows carry the boolean column `_deleted` (`TOMBSTONE_COLUMN`) also deletes: every key of
the stream is deleted from the table, and only the rows not marked are inserted, in the same transaction,
so that deletes commit with the rows they come with. The column itself is never stored, and a load's
`rows` counts the rows written, never the tombstones (`tombstones_in`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

LoadMode = Literal["replace", "append", "upsert", "replace_partitions"]
"""`replace_partitions` deletes the rows of the given partitions, then inserts the stream, in one
transaction. Partitions are matched on the column's text form: daily keys on DATE columns, static keys on
text columns."""


TOMBSTONE_COLUMN = "_deleted"
"""A row of an upsert with this column true deletes its key instead of writing the row."""


def tombstones_in(batch: pa.RecordBatch) -> int:
    """How many rows of `batch` are tombstones (`TOMBSTONE_COLUMN` true; null marks a live row, as in the
    warehouses' `IS NOT TRUE`): the rows a load received but did not write."""
    index = batch.schema.get_field_index(TOMBSTONE_COLUMN)
    if index < 0:
        return 0
    return int(pc.sum(batch.column(index).cast(pa.bool_())).as_py() or 0)


class WarehouseLoadError(ValueError):
    """A load that cannot be done as asked: names the table, the column and what to change."""


class DuplicateKeyError(WarehouseLoadError):
    """The rows to upsert repeat a primary key value: which copy is right is unknowable, a human decides."""


def repeated_keys_sql(rows: str, primary_key: Sequence[str], quote: Callable[[str], str]) -> str:
    """The first few primary key values that `rows` (a table) repeats, each with its number of rows: portable
    SQL, identifiers quoted by `quote`."""
    key = ", ".join(quote(name) for name in primary_key)
    return (
        f"SELECT {key}, count(*) FROM {rows} GROUP BY {key} HAVING count(*) > 1 "
        f"ORDER BY count(*) DESC, {key} LIMIT 3"
    )


def repeated_keys_error(
    target: str, primary_key: Sequence[str], repeated: Iterable[Sequence[object]]
) -> DuplicateKeyError:
    """The refusal of an upsert into `target` whose rows repeat key values (`repeated_keys_sql`'s rows)."""
    examples = "; ".join(
        ", ".join(f"{name}={value}" for name, value in zip(primary_key, row, strict=False))
        + f" ({row[-1]} rows)"
        for row in repeated
    )
    return DuplicateKeyError(
        f"upsert of {target} failed, nothing was changed: the rows repeat primary key values ({examples}), "
        f"and an upsert takes one row per key (which copy is right is unknowable). Correct the delivery so "
        f"that each key comes once."
    )


@dataclass(frozen=True)
class PartitionSlice:
    """The partitions a `replace_partitions` load rewrites: rows whose `column` is one of `values`."""

    column: str
    values: tuple[object, ...]


@dataclass(frozen=True)
class TableLayout:
    """Physical layout from the catalog, for warehouses that have one natively (BigQuery partitioning and
    clustering); DuckDB and PostgreSQL ignore it."""

    partition_by: str | None = None
    partition_granularity: Literal["DAY", "HOUR", "MONTH", "YEAR"] = "DAY"
    cluster_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    rows: int
    bytes: int | None
    """What was sent to the warehouse: the Arrow batches' in-memory size, or the size on disk of the DuckDB
    file whose rows were copied; None when staging built the rows in the warehouse's own file, so that
    nothing was sent."""
    seconds: float
    columns: list[tuple[str, str]]
    """(name, warehouse type) of the table after the load."""


class CountedBatches:
    """A single-pass reader over batches that counts what went through it: `rows` (tombstones included),
    `tombstones`, `bytes`; `written` is the rows less the tombstones."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            raise WarehouseLoadError("nothing to load: the stream has no batch (not even an empty one)")
        self.schema = first.schema
        self.rows = 0
        self.tombstones = 0
        self.bytes = 0
        self.failure: BaseException | None = None
        self._batches = chain([first], iterator)

    def _counted(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                self.rows += batch.num_rows
                self.tombstones += tombstones_in(batch)
                self.bytes += batch.nbytes
                yield batch
        except BaseException as failure:
            self.failure = failure
            raise

    @property
    def written(self) -> int:
        return self.rows - self.tombstones

    def reraise_source_failure(self, error: BaseException) -> None:
        """A warehouse client reading the stream wraps the source's exception in its own; raise the source's
        (a lost connection stays a ConnectionError for whoever classifies the failure)."""
        if self.failure is not None and self.failure is not error:
            raise self.failure from error

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._counted())


def check_load_request(
    mode: LoadMode,
    primary_key: list[str] | None,
    partition: PartitionSlice | None,
    names: Sequence[str],
    table: str,
) -> None:
    """Refuse a load whose arguments do not fit its mode, before anything is written; `names` are the
    columns of the data."""
    if mode == "upsert":
        if not primary_key:
            raise WarehouseLoadError(f"upsert into {table} needs a primary key; give primary_key=[...]")
        missing = [name for name in primary_key if name not in names]
        if missing:
            raise WarehouseLoadError(
                f"upsert into {table}: primary key column(s) {missing} are not in the data"
            )
    if TOMBSTONE_COLUMN in names and mode != "upsert":
        raise WarehouseLoadError(
            f"{mode} into {table}: rows marked {TOMBSTONE_COLUMN} delete their keys, which only an "
            f"upsert does"
        )
    if mode == "replace_partitions":
        if partition is None or not partition.values:
            raise WarehouseLoadError(
                f"replace_partitions into {table} needs partition=PartitionSlice(column, values)"
            )
        if partition.column not in names:
            raise WarehouseLoadError(
                f"replace_partitions into {table}: partition column {partition.column!r} is not in the data "
                f"(columns: {list(names)})"
            )
