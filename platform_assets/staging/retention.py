"""Retention: what a staging run removes of what its entity accumulated (`retention:` in the catalog).

Landed files. A landed file is needed by staging until its rows are in the staged table, and again by a
full rebuild. A run removes only files the table's latest materialization already holds (extracted no
later than its `staging/through`: that load committed), never those of the newest extraction (a snapshot
file entity judges deletes by it), and only on an incremental run, which reads files extracted after that
mark, so nothing the run reads is removed and a failed run leaves its retry the files it needs (a
`snapshot` entity's run reads only its latest extraction: the extractions before it may go too). Removed
files keep their row in the landed index, marked removed: the file ledger still knows the delivered file,
so an unchanged re-delivery is skipped, not landed again. A file is marked before it is unlinked: a run
killed in between leaves a file on disk the index calls removed, never a removed file the ledger would
land again. An entity landed in the PostgreSQL bronze layer (`PLATFORM_LANDING=bronze`) loses committed
parts by the same rules instead (`BronzeLandedSet.remove_retained`: their rows and commit rows in one
transaction, counted as removed for the rebuild rule below).

A full rebuild (a catalog edit, a schema change, a replay, a missing table) restages from landed files,
and those retention removed cannot be read: under `rebuild: refuse` (the default) the step fails naming
retention, since rebuilding from the remaining files would silently drop every row only removed files held;
under `rebuild: from_remaining` it rebuilds from them and records how many files it could not read.

Quarantine. Rows of `ops.quarantine` for the asset quarantined more than `quarantine.days` ago are deleted,
whatever their status (held rows older than that are no longer replayed), and so are the entity's
set-aside record files (`_quarantine/<source>/<entity>/*.parquet`) last written before then.

Quality events (`ops/quality_events.jsonl`) keep their global retention: one log shared by every source,
read by byte offset and rotated whole (`sensors/healing/quality_events.py`); a per-source limit would mean
rewriting the shared file on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import dagster as dg

from platform_assets.catalog.retention import Retention
from resources.landing.delivered import sidecar_of
from resources.landing.landed_index import LandedIndex
from resources.warehouses.base import Warehouse

REMOVED_FILES_METADATA = "retention/landed_files_removed"


class RebuildAfterRetentionError(RuntimeError):
    """A full rebuild was needed, but retention removed landed files it would read."""


@dataclass(frozen=True)
class RetentionReport:
    landed_files: int = 0
    landed_bytes: int = 0
    quarantine_rows: int = 0
    quarantine_files: int = 0
    quarantine_bytes: int = 0

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            REMOVED_FILES_METADATA: dg.MetadataValue.int(self.landed_files),
            "retention/landed_bytes_removed": dg.MetadataValue.int(self.landed_bytes),
            "retention/quarantine_rows_removed": dg.MetadataValue.int(self.quarantine_rows),
            "retention/quarantine_files_removed": dg.MetadataValue.int(self.quarantine_files),
            "retention/quarantine_bytes_removed": dg.MetadataValue.int(self.quarantine_bytes),
        }

    def summary(self) -> str:
        return (
            f"retention removed {self.landed_files} landed file(s) ({self.landed_bytes} bytes), "
            f"{self.quarantine_rows} quarantine row(s) and {self.quarantine_files} set-aside record file(s) "
            f"({self.quarantine_bytes} bytes)"
        )


class RetainedLanding(Protocol):
    """What retention removes landed data from: an entity's landed files (`LandedFiles`) or its committed
    bronze parts (`resources/landing/bronze_zone.py: BronzeLandedSet`)."""

    def remove_retained(
        self, *, staged_through: datetime, keep_newest: int | None, older_than: datetime | None, now: datetime
    ) -> tuple[int, int]:
        """Remove what is staged (extracted no later than `staged_through`), not of the newest extraction,
        and beyond the newest `keep_newest` or extracted before `older_than`; how many, and their bytes."""
        ...


@dataclass(frozen=True)
class LandedFiles:
    """An entity's landed files, by its landed index: each removed file is marked in it, then unlinked."""

    index: LandedIndex

    def remove_retained(
        self, *, staged_through: datetime, keep_newest: int | None, older_than: datetime | None, now: datetime
    ) -> tuple[int, int]:
        candidates = self.index.retention_candidates(
            staged_through=staged_through, keep_newest=keep_newest, older_than=older_than
        )
        self.index.retire([file.path for file in candidates], now)
        removed_bytes = 0
        for file in candidates:
            for path in (file.path, sidecar_of(file.path)):
                if path.exists():
                    removed_bytes += path.stat().st_size
                    path.unlink()
        return len(candidates), removed_bytes


def rebuild_after_retention(
    retention: Retention | None, removed: int, reason: str, entity: str, table: str
) -> dict[str, dg.MetadataValue]:
    """What a full rebuild (for `reason`) does once retention removed `removed` landed files: nothing when
    none was; fails under `rebuild: refuse`; else the metadata saying what it could not read."""
    if not removed:
        return {}
    if retention is None or retention.rebuild == "refuse":
        raise RebuildAfterRetentionError(
            f"{entity}: {table} must be rebuilt in full ({reason}), but retention (catalog "
            f"`retention.landed`) removed {removed} landed file(s) a rebuild would read; rebuilding from "
            f"the files left would drop the rows only those held. Nothing was written. Either undo the "
            f"change that needs the rebuild, or set `retention: {{rebuild: from_remaining}}` on {entity} "
            f"(or its source) to rebuild from the remaining files and accept that loss."
        )
    return {"retention/files_not_rebuilt": dg.MetadataValue.int(removed)}


def apply_retention(
    retention: Retention | None,
    *,
    landed: RetainedLanding,
    staged_through: datetime | None,
    reads_only_new: bool,
    warehouse: Warehouse,
    asset_key: str,
    quarantine_table: tuple[str, str],
    quarantine_dir: Path,
    now: datetime,
) -> RetentionReport:
    """Remove what `retention` lets go (see the module's docstring); what was removed. `reads_only_new`:
    the run reads no landed file extracted at or before `staged_through` (an incremental run, or a
    snapshot entity's, which reads its latest extraction only), so landed files may go."""
    if retention is None:
        return RetentionReport()
    files, size = 0, 0
    if retention.landed is not None and reads_only_new and staged_through is not None:
        days, count = retention.landed.days, retention.landed.count
        files, size = landed.remove_retained(
            staged_through=staged_through,
            keep_newest=count,
            older_than=now - timedelta(days=days) if days is not None else None,
            now=now,
        )
    rows, quarantine_files, quarantine_bytes = 0, 0, 0
    if retention.quarantine is not None:
        cutoff = now - timedelta(days=retention.quarantine.days)
        rows = _delete_quarantine_rows(warehouse, quarantine_table, asset_key, cutoff)
        quarantine_files, quarantine_bytes = _remove_older_files(quarantine_dir, cutoff)
    return RetentionReport(files, size, rows, quarantine_files, quarantine_bytes)


def _delete_quarantine_rows(
    warehouse: Warehouse, quarantine_table: tuple[str, str], asset_key: str, cutoff: datetime
) -> int:
    """Delete `asset_key`'s rows of the quarantine table (schema, name) quarantined before `cutoff`."""
    if not warehouse.columns(*quarantine_table):
        return 0
    # Literals, not parameters (each warehouse spells them differently); a quoted timestamp text compares
    # with a TIMESTAMP (DuckDB, PostgreSQL) and a DATETIME (BigQuery) column alike.
    key = asset_key.replace("'", "''")
    moment = cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    where = (
        f"WHERE {warehouse.quote('asset_key')} = '{key}' AND {warehouse.quote('quarantined_at')} < '{moment}'"
    )
    table = warehouse.table_ref(*quarantine_table)
    ((count,),) = warehouse.query(f"SELECT count(*) FROM {table} {where}")
    if count:
        warehouse.query(f"DELETE FROM {table} {where}")
    return int(count)


def _remove_older_files(directory: Path, cutoff: datetime) -> tuple[int, int]:
    if not directory.is_dir():
        return 0, 0
    files, size = 0, 0
    for path in directory.glob("*.parquet"):
        stat = path.stat()
        if datetime.fromtimestamp(stat.st_mtime, UTC) < cutoff:
            path.unlink()
            files, size = files + 1, size + stat.st_size
    return files, size
