"""Which landed files a staging run reads, and whether it rebuilds the staged table or adds to it.

An `append` entity (file deliveries, incremental tables, APIs) lands one set of files per extraction, and
they accumulate. Rebuilding the staged table from all of them costs in proportion to everything ever
landed; a run after a 10% change should cost 10%. So a staging run reads only the files extracted after the
newest extraction the previous run staged (`staging/through`), and upserts their good rows by primary key.

That is only equivalent to a rebuild while nothing else changed. The run rebuilds in full when:
- the entity has no primary key (nothing to upsert on), or loads `snapshot`s (each one is the whole entity);
- no previous staging run recorded where it got to, or a landed file's extraction time is unknown;
- the staging definition changed (the entity's columns, types, rules, checks, or how its text is read:
  `null_values`, separators, date formats; `staging/fingerprint`),
  e.g. after a schema evolution or a catalog edit, since rows staged earlier might now be staged otherwise;
- the staged table is gone from the warehouse;
- the new files change the schema: the last staged version merged with their schema is a new version (see
  `staged_assets`). Only a change counts: a column widened or added by an earlier evolution is in the last
  version already, so the runs after an evolution are incremental again.

Planning reads no landed file: an append entity's files come from its landed index
(`resources/landing/landed_index.py`: extraction times recorded once, at commit), so a run after 100,000
landed files opens only the files it stages. A rebuild reads every file the index still holds; files that
retention removed cannot be read again (`platform_assets/staging/retention.py` decides what a rebuild does
then).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from platform_assets.catalog.model import Entity
from platform_assets.staging.schema_registry import FILE_COLUMN
from resources.landing.delivered import constant_value
from resources.landing.zone import EXTRACTED_AT_COLUMN

THROUGH_METADATA = "staging/through"
"""The newest extraction time (ISO 8601) among the landed files the table holds after this run."""
FINGERPRINT_METADATA = "staging/fingerprint"
"""What the staged rows were computed by: the staged entity (columns, types, rules) and its checks."""
MODE_METADATA = "staging/mode"
REASON_METADATA = "staging/reason"


class LandedSet(Protocol):
    """An entity's landed files, as staging asks about them (`LandedIndex`, or `LandedList` for the files of
    one snapshot extraction)."""

    def live(self) -> list[Path]: ...
    def extracted_after(self, moment: datetime) -> list[Path]: ...
    def summary(self) -> tuple[int, bool, datetime | None]: ...
    def newest_extraction(self) -> list[Path]: ...
    def delivered_before(self, delivered: Iterable[str], excluding: Iterable[Path]) -> set[str]: ...
    def removed_count(self) -> int: ...


@dataclass(frozen=True)
class LandedList:
    """A few landed files, known by their paths: each question reads each file's lineage."""

    paths: list[Path]

    def live(self) -> list[Path]:
        return list(self.paths)

    def extracted_after(self, moment: datetime) -> list[Path]:
        return [path for path in self.paths if (time := extraction_time(path)) is not None and time > moment]

    def summary(self) -> tuple[int, bool, datetime | None]:
        times = [extraction_time(path) for path in self.paths]
        known = [time for time in times if time is not None]
        return len(times), len(known) < len(times), max(known, default=None)

    def newest_extraction(self) -> list[Path]:
        times = {path: extraction_time(path) for path in self.paths}
        newest = max((time for time in times.values() if time is not None), default=None)
        return [path for path, time in times.items() if newest is not None and time == newest]

    def delivered_before(self, delivered: Iterable[str], excluding: Iterable[Path]) -> set[str]:
        others = set(self.paths) - set(excluding)
        return set(delivered) & {constant_value(path, FILE_COLUMN) for path in others}

    def removed_count(self) -> int:
        return 0


@dataclass(frozen=True)
class StagingPlan:
    files: list[Path]
    """The landed files this run stages."""
    incremental: bool
    """True: upsert these files' rows into the staged table; False: replace the table with them."""
    through: datetime | None
    """The newest extraction time the table holds after this run; None when a file's is unknown."""
    reason: str
    """Why the run is incremental or full, for the log and the materialization."""
    landed: LandedSet
    """Every landed file of the entity, which a rebuild reads."""
    previous_fingerprint: object = None
    """The staging definition the table's rows were staged by (incremental plans)."""

    def rebuild_reason(self, fingerprint: str, *, schema_changed: bool) -> str | None:
        """Why this incremental plan must rebuild after all, or None: the new files' schema differs from
        the last staged version (`schema_changed`: merged with it, they give a new version; not whether it
        differs from the declaration, which an evolved entity's always does), or the staging definition
        does (`fingerprint`, of the entity as it will be staged and its checks)."""
        if schema_changed:
            return "the new files' schema differs from the last staged version"
        if self.previous_fingerprint != fingerprint:
            return "the staging definition (columns, types, rules or checks) changed since the last run"
        return None

    def rebuild(self, reason: str) -> StagingPlan:
        """The full plan over every landed file, for `reason`."""
        return StagingPlan(self.landed.live(), False, self.through, reason, self.landed)

    def metadata(self, fingerprint: str) -> dict[str, str]:
        recorded = {
            MODE_METADATA: "incremental" if self.incremental else "full",
            REASON_METADATA: self.reason,
            FINGERPRINT_METADATA: fingerprint,
        }
        if self.through is not None:
            recorded[THROUGH_METADATA] = self.through.isoformat()
        return recorded


def staging_fingerprint(entity: Entity, check_names: list[str]) -> str:
    """A digest of everything that decides how a landed row is staged."""
    # Retention decides what is kept beside the table, not how a row is staged: editing it rebuilds nothing.
    staged = entity.model_dump(mode="json", exclude={"retention"})
    definition = {"entity": staged, "checks": sorted(check_names)}
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def plan_staging(
    landed: LandedSet,
    *,
    appends: bool,
    primary_key: list[str],
    previous: Mapping[str, object] | None,
    table_exists: Callable[[], bool],
) -> StagingPlan:
    """The plan of a run over `landed` (the entity's landed files); `previous` is the metadata of the
    staged table's latest materialization (None: never staged). An incremental plan still has to pass
    `StagingPlan.rebuild_reason` once the schema of its files is known."""
    count, unknown, newest = landed.summary()
    through = None if unknown else newest

    def full(reason: str) -> StagingPlan:
        return StagingPlan(landed.live(), False, through, reason, landed)

    staged_through = staged_through_of(previous)
    if not appends:
        return full("each extraction is a snapshot of the whole entity")
    if not primary_key:
        return full("the entity declares no primary key to upsert on")
    if staged_through is None:
        return full("no earlier staging run recorded which extractions it staged")
    if unknown:
        return full("a landed file does not say when it was extracted")
    if not table_exists():  # asked last: it opens the warehouse
        return full("the staged table is missing from the warehouse")
    new = landed.extracted_after(staged_through)
    return StagingPlan(
        new,
        True,
        max(through, staged_through) if through is not None else staged_through,
        f"{len(new)} of {count} landed file(s) were extracted after {staged_through.isoformat()}",
        landed,
        _value((previous or {}).get(FINGERPRINT_METADATA)),
    )


def staged_through_of(previous: Mapping[str, object] | None) -> datetime | None:
    """The newest extraction the staged table holds, as its latest materialization recorded it."""
    if previous is None or THROUGH_METADATA not in previous:
        return None
    return datetime.fromisoformat(str(_value(previous[THROUGH_METADATA])))


def extraction_time(path: Path) -> datetime | None:
    """The one `_extracted_at` of a landed file, from its Parquet statistics; None if they do not say."""
    only = constant_value(path, EXTRACTED_AT_COLUMN)
    return only if isinstance(only, datetime) else None


def _value(entry: object) -> object:
    """A metadata entry's value, whether read back as a MetadataValue or given plain."""
    return getattr(entry, "value", entry)
