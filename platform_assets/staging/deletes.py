"""Rows deleted at the source, removed from the staged table in the same load as the run's rows.

Three ways a deletion is known, each decided over the staging database's table of this run's rows
(`__staging_<table>`, after each key's current version was chosen and before anything is written):

- `deletes: {mode: soft, column: ...}`: a key whose current version is marked (a boolean true, or any
  non-null value such as `deleted_at`) is deleted. The mark is in the landed rows, so a full rebuild
  deletes the same keys again.
- `deletes: {mode: reconcile}`: the raw asset lands a scan of the table's primary keys (`_keys/`, or a
  `keys` part in the bronze layer); a key staged from an extraction no later than the scan and absent
  from it was deleted at the source.
- `file: {snapshot: true}`: each delivery is the whole entity; the files of the latest extraction are the
  scan, and a key staged from an earlier extraction and absent from them was deleted.

Only the latest scan counts (a later one supersedes it), so a rebuild from every landed file deletes what
the chain of incremental runs deleted. Deleting by absence trusts one read of the source: when it would
delete more than `max_delete_fraction` of the rows, the step fails (`DeleteGuardError`, escalated by the
healing layer) and writes nothing; after a bad read the next scan repairs it, after a real purge a human
raises the guard.

A full run drops the deleted rows from what replaces the table. An incremental run cannot: the keys to
delete are in the staged table, not among its rows. It marks them instead as tombstones (`_deleted` true:
a marked row of this run, or a key-only row for a staged key), which the warehouse's upsert deletes by
key in the load's own transaction (`resources/warehouses/load.py`): deletes and inserts commit together,
or neither does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb

from platform_assets.catalog.model import ColumnType, Entity
from platform_assets.staging.plan import THROUGH_METADATA, LandedSet, extraction_time
from platform_assets.staging.schema_registry import strict_cast
from platform_assets.staging.sql import VIOLATIONS_COLUMN
from resources.landing.delivered import landed_relation
from resources.landing.zone import EXTRACTED_AT_COLUMN
from resources.warehouses.base import Warehouse
from resources.warehouses.duckdb_warehouse import qualified_name, quote_identifier
from resources.warehouses.load import TOMBSTONE_COLUMN

DELETED_ROWS_METADATA = "staging/deleted_rows"
"""Keys this run deletes from the staged table (soft-deleted, or absent from the latest scan)."""
DELETED_BY_METADATA = "staging/deleted_by"


class DeleteGuardError(RuntimeError):
    """Deleting the keys absent from the latest scan would remove more of the table than
    `max_delete_fraction` allows: more likely a bad read than a purge, so a human decides."""


@dataclass(frozen=True)
class KeyScan:
    """The files whose keys are every key the source holds, as of `taken_at`."""

    files: list[Path]
    taken_at: datetime


@dataclass(frozen=True)
class Deleted:
    soft: int = 0
    absent: int = 0

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            DELETED_ROWS_METADATA: dg.MetadataValue.int(self.soft + self.absent),
            DELETED_BY_METADATA: dg.MetadataValue.json({"soft": self.soft, "absent": self.absent}),
        }


def latest_key_scan(entity: Entity, landed: LandedSet, key_scans: Callable[[], list[Path]]) -> KeyScan | None:
    """The scan deletions by absence are judged against: the latest landed files of a snapshot file
    entity, the latest of the `key_scans` (Parquet files of a reconciled table's keys, asked only for one);
    None when the entity declares neither or none exists yet."""
    if entity.file is not None and entity.file.snapshot:
        candidates = landed.newest_extraction()
    elif entity.deletes is not None and entity.deletes.mode == "reconcile":
        candidates = key_scans()
    else:
        return None
    times = {path: extraction_time(path) for path in candidates}
    known = [time for time in times.values() if time is not None]
    if not known:
        return None
    latest = max(known)
    return KeyScan([path for path, time in times.items() if time == latest], latest)


def scan_is_new(scan: KeyScan | None, previous: Mapping[str, object] | None) -> bool:
    """Whether an incremental run must apply `scan`: the staged table was last staged from extractions
    older than it (a scan already applied deletes nothing more from rows staged after it)."""
    if scan is None:
        return False
    entry = (previous or {}).get(THROUGH_METADATA)
    through = getattr(entry, "value", entry)
    return through is None or scan.taken_at > datetime.fromisoformat(str(through))


def settle_deletes(
    con: duckdb.DuckDBPyConnection,
    table: str,
    entity: Entity,
    *,
    incremental: bool,
    scan: KeyScan | None,
    staged: str | None = None,
) -> Deleted:
    """Remove (a full run) or mark as tombstones (an incremental one) the rows of `table`, the run's rows in
    the staging database (its good rows: no `_violations`), whose keys are deleted: soft-deleted, or absent
    from `scan`. `staged`: a relation of the staged table's keys and `_extracted_at`, which an incremental
    run judges against the scan too. Raises `DeleteGuardError`, before changing anything, when the scan
    would delete too many."""
    keys = ", ".join(quote_identifier(name) for name in entity.primary_key)
    extracted_at = quote_identifier(EXTRACTED_AT_COLUMN)
    good = f"{quote_identifier(VIOLATIONS_COLUMN)} IS NULL"
    absent = _absent_from(con, table, entity, good, scan, staged) if scan is not None else 0
    marked = _soft_marked(entity)
    ((soft,),) = con.execute(
        f"SELECT count(*) FROM {table} WHERE {good} AND {marked}" if marked else "SELECT 0"
    ).fetchall()
    conditions = [marked] if soft and marked else []
    if absent:
        conditions.append(f"({keys}) IN (SELECT {keys} FROM __absent)")
    if not conditions:
        return Deleted()
    deleted = " OR ".join(f"({condition})" for condition in conditions)
    if not incremental:
        con.execute(f"DELETE FROM {table} WHERE {good} AND ({deleted})")
        return Deleted(soft, absent)
    tombstone = quote_identifier(TOMBSTONE_COLUMN)
    con.execute(f"ALTER TABLE {table} ADD COLUMN {tombstone} BOOLEAN DEFAULT false")
    con.execute(f"UPDATE {table} SET {tombstone} = true WHERE {good} AND ({deleted})")
    if absent:
        assert scan is not None
        con.execute(
            f"INSERT INTO {table} ({keys}, {extracted_at}, {tombstone}) "
            f"SELECT {keys}, ?, true FROM __absent ANTI JOIN (SELECT {keys} FROM {table} WHERE {good}) "
            f"USING ({keys})",
            [scan.taken_at],
        )
    return Deleted(soft, absent)


def _absent_from(
    con: duckdb.DuckDBPyConnection,
    table: str,
    entity: Entity,
    good: str,
    scan: KeyScan,
    staged: str | None,
) -> int:
    """How many current keys (the run's good rows, and the staged keys they do not replace) were staged
    from an extraction no later than `scan` and are absent from it: kept in the temporary table
    `__absent`. Raises `DeleteGuardError` over `max_delete_fraction`. The scanned keys (a database's typed
    columns) are cast as staging casts them, a naive timestamp key in its column's declared zone, or a
    staged key would look absent from the scan."""
    keys = ", ".join(quote_identifier(name) for name in entity.primary_key)
    extracted_at = quote_identifier(EXTRACTED_AT_COLUMN)
    present = ", ".join(
        f"{strict_cast(quote_identifier(name), entity.columns[name].type, entity.text_format(name).typed())} "
        f"AS {quote_identifier(name)}"
        for name in entity.primary_key
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE __present AS SELECT DISTINCT {present} "
        f"FROM {landed_relation(scan.files, naive_timestamps_as_text=True)}"
    )
    current = f"SELECT {keys}, {extracted_at} FROM {table} WHERE {good}"
    if staged is not None:
        current += f" UNION ALL (SELECT * FROM {staged} ANTI JOIN ({current}) USING ({keys}))"
    con.execute(f"CREATE OR REPLACE TEMP TABLE __current AS {current}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE __absent AS SELECT {keys} FROM __current ANTI JOIN __present "
        f"USING ({keys}) WHERE {extracted_at} <= ?",
        [scan.taken_at],
    )
    ((rows, absent),) = con.execute(
        "SELECT (SELECT count(*) FROM __current), count(*) FROM __absent"
    ).fetchall()
    if absent > entity.max_delete_fraction * rows:
        raise DeleteGuardError(
            f"the latest key scan ({scan.taken_at.isoformat()}, {len(scan.files)} file(s)) lacks {absent} of "
            f"{rows} staged key(s): deleting them is a delete fraction of {absent / rows:.4f}, over the "
            f"guard max_delete_fraction {entity.max_delete_fraction}. Nothing was deleted or written. If "
            f"the read was bad, the next scan repairs it; if the source really lost these rows, raise "
            f"max_delete_fraction."
        )
    return int(absent)


def _soft_marked(entity: Entity) -> str | None:
    """The SQL condition of a row marked deleted by `deletes.column` (None: no soft deletes): a boolean
    true, or any non-null value (`deleted_at`)."""
    deletes = entity.deletes
    if deletes is None or deletes.column is None:
        return None
    column = quote_identifier(deletes.column)
    boolean = entity.columns[deletes.column].type == ColumnType.BOOLEAN
    return f"{column} IS TRUE" if boolean else f"{column} IS NOT NULL"


def staged_keys(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    table: tuple[str, str],
    primary_key: list[str],
    *,
    in_warehouse: bool,
    batch_rows: int,
) -> str:
    """A relation on `con` of the staged table's keys and `_extracted_at`: read in place when `con` is the
    DuckDB warehouse's own file, else streamed from the warehouse in Arrow batches into a temporary table
    (DuckDB spills it beyond its memory limit)."""
    columns = [*primary_key, EXTRACTED_AT_COLUMN]
    selected = ", ".join(quote_identifier(name) for name in columns)
    if in_warehouse:
        return f"(SELECT {selected} FROM {qualified_name(*table)})"
    con.register("__staged_stream", warehouse.stream_table(*table, columns=columns, batch_rows=batch_rows))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __staged_keys AS SELECT {selected} FROM __staged_stream")
    finally:
        con.unregister("__staged_stream")
    return "__staged_keys"
