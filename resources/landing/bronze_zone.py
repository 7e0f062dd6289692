"""The landing zone with record sources (databases, REST APIs) landed in the PostgreSQL bronze layer
(`bronze.py`) instead of Parquet files; delivered files still land as files (`zone.py`).

Extractors and staging keep their one way of working. An extraction writes the same Arrow batches through
the same `InFlight` calls (`write`, `parts`, `discard`, `drop`, `checkpoint`, `commit`); here they go to
bronze parts, checkpoints and commits, and the entity's lock is a PostgreSQL advisory lock, so nothing of
an extraction stays on the machine that ran it. Staging asks the same questions of its landed set
(`staging/plan.py`); here they are answered from `bronze._commits`, and the parts a staging run reads are
exported, once each, to Parquet scratch files of that run (typed back to their Arrow schema, with the
lineage columns), so that everything after planning reads files as before. The next staging run of the
table removes them, as it removes the other scratch of finished runs (`remove_staging_leftovers`): the
bronze table is the copy that must survive, an export is scratch. A key scan (`deletes: reconcile`) is a
`keys` part, committed with its extraction and exported the same way (under `_keys/` of the run's
exports), so that staging on another machine judges deletions by it; retention removes committed parts
instead of landed files, and counts them as removed files are counted.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
from pydantic import Field

from resources.landing.bronze import KEYS, RECORDS, SCHEMA, BronzeError, BronzeLayer, BronzePart, BronzeTarget
from resources.landing.delivered import DeliveredCopy
from resources.landing.landed_index import LandedIndex
from resources.landing.zone import (
    INFLIGHT_DIR,
    KEYS_DIR,
    InFlight,
    LandedFile,
    LandingZone,
    Lineage,
    write_parquet,
)

EXPORT_DIR = "bronze"
"""Under the landing zone's spill directory: Parquet exports of committed bronze parts, for staging."""
EXPORT_BATCH_ROWS = 65_536


class BronzeLandingZone(LandingZone):
    """A landing zone whose record sources land in `bronze.<source>__<entity>` of the database at
    `bronze_url` (SQLAlchemy-style; the password a `${VARIABLE}` reference)."""

    bronze_url: str
    optional_env: list[str] = Field(default_factory=list)
    """Variables of `bronze_url` that may be unset (read as empty): a server that trusts local logins."""

    def layer(self) -> BronzeLayer:
        return BronzeLayer(self.bronze_url, self.optional_env)

    @contextlib.contextmanager
    def bronze_extraction(self, target: BronzeTarget) -> Iterator[InFlight]:
        """Like `extraction`, all in bronze: the entity's lock, its pending parts and its checkpoint, so
        that nothing of an extraction is on the machine that runs it."""
        layer = self.layer()
        with layer.exclusive(target):
            entity_dir = self.entity_dir(target.source, target.entity)
            local = (entity_dir / INFLIGHT_DIR, entity_dir, self.landed_index(target.source, target.entity))
            yield BronzeInFlight(*local, layer, target)

    def bronze_landed(
        self, target: BronzeTarget, run_id: str, only: Iterable[str] | None = None
    ) -> BronzeLandedSet:
        """The entity's committed parts as staging asks about them, exported for the staging run `run_id`;
        `only`: those parts (a snapshot)."""
        return BronzeLandedSet(self.layer(), target, self._exports(target.table) / run_id, only)

    def remove_staging_leftovers(self, table: str, in_progress: Callable[[str], bool]) -> list[Path]:
        """Also the bronze exports of earlier staging runs of `table` that are over: each run exports what
        it stages, so the scratch holds at most the parts of the runs in progress."""
        removed = super().remove_staging_leftovers(table, in_progress)
        for run_dir in sorted(self._exports(table).glob("*")):
            if not in_progress(run_dir.name):
                shutil.rmtree(run_dir, ignore_errors=True)
                removed.append(run_dir)
        return removed

    def _exports(self, table: str) -> Path:
        return self.spill_dir() / EXPORT_DIR / table


def bronze_path(target: BronzeTarget, part: str) -> Path:
    """How a part is named in materialization metadata and logs: `bronze.<table>/<part>`."""
    return Path(f"{SCHEMA}.{target.table}") / part


def _landed(target: BronzeTarget, part: BronzePart) -> LandedFile:
    lineage = Lineage(part.source, part.ingested_at, part.run_id)
    schema = lineage.attach(pa.RecordBatch.from_pylist([], schema=part.schema)).schema
    return LandedFile(bronze_path(target, part.extraction), part.rows, part.json_bytes, schema)


class BronzeInFlight(InFlight):
    """One extraction's parts and checkpoint, pending in bronze until `commit`. Every method of `InFlight`
    is answered from bronze: the local in-flight directory it is constructed with is never touched."""

    def __init__(
        self, directory: Path, entity_dir: Path, index: LandedIndex, layer: BronzeLayer, target: BronzeTarget
    ) -> None:
        super().__init__(directory, entity_dir, index)
        self.layer = layer
        self.target = target

    def checkpoint(self) -> dict[str, Any] | None:
        return self.layer.checkpoint(self.target)

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        self.layer.save_checkpoint(self.target, dict(state))

    def parts(self) -> list[Path]:
        return [bronze_path(self.target, part.extraction) for part in self.layer.pending(self.target)]

    def discard(self) -> None:
        self.layer.discard(self.target)

    def drop(self, name: str) -> None:
        self.layer.discard(self.target, [name])

    def write(self, name: str, batches: Iterable[pa.RecordBatch], lineage: Lineage) -> LandedFile | None:
        return self._write_part(name, batches, lineage, RECORDS)

    def write_key_scan(
        self, name: str, batches: Iterable[pa.RecordBatch], lineage: Lineage
    ) -> LandedFile | None:
        """A pending `keys` part, committed with the extraction's records (replacing the earlier scans)."""
        return self._write_part(name, batches, lineage, KEYS)

    def _write_part(
        self, name: str, batches: Iterable[pa.RecordBatch], lineage: Lineage, kind: str
    ) -> LandedFile | None:
        part = self.layer.write_part(
            self.target,
            name,
            batches,
            source=lineage.source,
            ingested_at=lineage.extracted_at,
            run_id=lineage.run_id,
            kind=kind,
        )
        return None if part is None else _landed(self.target, part)

    def copy(self, name: str, raw: BinaryIO, described: DeliveredCopy, *, compress: bool) -> str:
        raise BronzeError(
            f"{self.target.source}.{self.target.entity}: delivered files land as files, not in the bronze "
            f"layer; only database and REST sources land in bronze (resources/landing/bronze_zone.py)."
        )

    def commit(self, load_date: str) -> list[LandedFile]:
        """Make every pending part visible at once and forget the checkpoint (`load_date` is implied:
        bronze partitions by the day each part was ingested); the records parts committed (a key scan is
        not a landed file, as it is not among the files of the file landing zone)."""
        committed = self.layer.commit(self.target)
        return [_landed(self.target, part) for part in committed if part.kind == RECORDS]


class BronzeLandedSet:
    """An entity's committed bronze parts, answering staging's questions (`staging/plan.py: LandedSet`)
    from `bronze._commits`; the parts it returns are exported to Parquet under `export_dir` first."""

    def __init__(
        self, layer: BronzeLayer, target: BronzeTarget, export_dir: Path, only: Iterable[str] | None = None
    ) -> None:
        self.layer = layer
        self.target = target
        self.export_dir = export_dir
        self.only = None if only is None else set(only)
        self.parts = [
            part for part in layer.committed(target) if self.only is None or part.extraction in self.only
        ]

    def live(self) -> list[Path]:
        return self._exported(self.parts)

    def extracted_after(self, moment: datetime) -> list[Path]:
        return self._exported([part for part in self.parts if part.ingested_at > moment])

    def summary(self) -> tuple[int, bool, datetime | None]:
        return len(self.parts), False, max((part.ingested_at for part in self.parts), default=None)

    def newest_extraction(self) -> list[Path]:
        _, _, newest = self.summary()
        return self._exported([part for part in self.parts if part.ingested_at == newest])

    def delivered_before(self, delivered: Iterable[str], excluding: Iterable[Path]) -> set[str]:
        """No delivered file lands in bronze."""
        return set()

    def removed_count(self) -> int:
        """Parts retention removed, which a full rebuild cannot read; none for a snapshot's own parts."""
        return 0 if self.only is not None else self.layer.removed_count(self.target)

    def key_scans(self, after: datetime | None = None) -> list[Path]:
        """The entity's committed key scan (`deletes: reconcile`; the latest only), exported; `after`: only
        if taken after that moment (a scan an incremental run has applied before is not exported again)."""
        scans = self.layer.committed(self.target, KEYS)
        fresh = [part for part in scans if after is None or part.ingested_at > after]
        return self._exported(fresh, self.export_dir / KEYS_DIR)

    def remove_retained(
        self, *, staged_through: datetime, keep_newest: int | None, older_than: datetime | None, now: datetime
    ) -> tuple[int, int]:
        """Delete the committed parts retention lets go (`BronzeLayer.remove_parts`); how many, and their
        JSON bytes. (`now` is when the landed index marks removed files; bronze deletes the parts' rows.)"""
        removed = self.layer.remove_parts(
            self.target, staged_through=staged_through, keep_newest=keep_newest, older_than=older_than
        )
        return len(removed), sum(part.json_bytes for part in removed)

    def spot_check(self) -> list[Path]:
        """Committed parts cannot go missing from under their commit rows: nothing to check on disk."""
        return []

    def _exported(self, parts: list[BronzePart], directory: Path | None = None) -> list[Path]:
        return [self._export(part, directory or self.export_dir) for part in parts]

    def _export(self, part: BronzePart, directory: Path) -> Path:
        """The part as a Parquet file with the lineage columns under `directory` (written through a
        temporary file, so a killed export leaves no half file to reuse)."""
        name = part.extraction if part.extraction.endswith(".parquet") else f"{part.extraction}.parquet"
        path = directory / name
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            lineage = Lineage(part.source, part.ingested_at, part.run_id)
            write_parquet(path, self.layer.read(self.target, part, EXPORT_BATCH_ROWS), lineage)
        return path
