"""The quality score of a staged table: five dimensions in [0, 100] and their weighted total.

With `rows` the staged rows, `quarantined` the rows set aside (not in the staged table) and `columns` the
declared columns:

- completeness = 100 * (1 - null cells in the declared columns / (rows * columns));
- validity     = 100 * (1 - (rows with a cast error + quarantined) / (rows + quarantined));
- uniqueness   = 100 * (1 - rows whose primary key repeats / rows), repeats = count(*) - count(DISTINCT key);
- timeliness   = 100 while the lag of the latest `_extracted_at` is within `freshness.max_lag_minutes`,
  then falls linearly to 0 at twice that lag; 100 when the entity declares no freshness;
- consistency  = 100 * (1 - orphan rate), the share of foreign-key values not found in the referenced
  table at the last run of the `relationships` check; 100 without `references` or without a result yet.

total = 0.25 completeness + 0.30 validity + 0.20 uniqueness + 0.10 timeliness + 0.15 consistency.

An empty table scores 100 on completeness, validity, uniqueness and consistency (no evidence of a defect),
and on timeliness 0 when a freshness is declared (nothing has arrived), 100 otherwise.

Pure functions: the staged asset computes the score from its profile and records `score.metadata()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import dagster as dg

from platform_assets.catalog.model import Entity
from platform_assets.quality.profile import TableProfile

WEIGHTS: dict[str, float] = {
    "completeness": 0.25,
    "validity": 0.30,
    "uniqueness": 0.20,
    "timeliness": 0.10,
    "consistency": 0.15,
}
SCORE_PREFIX = "quality/"


@dataclass(frozen=True)
class QualityScore:
    completeness: float
    validity: float
    uniqueness: float
    timeliness: float
    consistency: float

    @property
    def total(self) -> float:
        return sum(weight * getattr(self, dimension) for dimension, weight in WEIGHTS.items())

    def metadata(self) -> dict[str, dg.MetadataValue]:
        """`quality/score` and one `quality/<dimension>` per dimension, rounded to 0.01."""
        entries = {f"{SCORE_PREFIX}score": dg.MetadataValue.float(round(self.total, 2))}
        for dimension, value in asdict(self).items():
            entries[SCORE_PREFIX + dimension] = dg.MetadataValue.float(round(value, 2))
        return entries


def _percent_good(bad: float, total: float) -> float:
    if total <= 0:
        return 100.0
    return 100.0 * (1.0 - min(max(bad / total, 0.0), 1.0))


def completeness(null_cells: int, rows: int, columns: int) -> float:
    return _percent_good(null_cells, rows * columns)


def validity(cast_error_rows: int, rows: int, rows_quarantined: int = 0) -> float:
    return _percent_good(cast_error_rows + rows_quarantined, rows + rows_quarantined)


def uniqueness(duplicate_key_rows: int, rows: int) -> float:
    return _percent_good(duplicate_key_rows, rows)


def timeliness(lag_minutes: float | None, max_lag_minutes: float | None) -> float:
    """`lag_minutes` None: nothing has arrived."""
    if max_lag_minutes is None:
        return 100.0
    if lag_minutes is None:
        return 0.0
    if lag_minutes <= max_lag_minutes:
        return 100.0
    return max(0.0, 100.0 * (2 * max_lag_minutes - lag_minutes) / max_lag_minutes)


def consistency(orphan_rate: float | None) -> float:
    if orphan_rate is None:
        return 100.0
    return _percent_good(orphan_rate, 1.0)


def quality_score(
    profile: TableProfile,
    entity: Entity,
    *,
    rows_quarantined: int = 0,
    orphan_rate: float | None = None,
    now: datetime | None = None,
) -> QualityScore:
    """The score of a table from its profile. `rows_quarantined`: rows set aside and NOT in the profiled
    table; `orphan_rate`: from the last `relationships` check (see `relationship_checks.last_orphan_rate`)."""
    lag_minutes = None
    if profile.max_extracted_at is not None:
        lag = (now or datetime.now(UTC)) - profile.max_extracted_at
        lag_minutes = max(lag.total_seconds() / 60, 0.0)
    return QualityScore(
        completeness=completeness(profile.null_cells, profile.rows, len(entity.columns)),
        validity=validity(profile.cast_error_rows, profile.rows, rows_quarantined),
        uniqueness=uniqueness(profile.duplicate_key_rows, profile.rows),
        timeliness=timeliness(lag_minutes, entity.freshness.max_lag_minutes if entity.freshness else None),
        consistency=consistency(orphan_rate),
    )


def quality_metadata(
    profile: TableProfile,
    entity: Entity,
    *,
    rows_quarantined: int = 0,
    orphan_rate: float | None = None,
    now: datetime | None = None,
) -> dict[str, dg.MetadataValue]:
    """Everything the staged asset records about its table's quality: the profile's entries and the
    score's, in one dict for `dg.Output(metadata=...)`."""
    score = quality_score(
        profile, entity, rows_quarantined=rows_quarantined, orphan_rate=orphan_rate, now=now
    )
    return profile.metadata() | score.metadata()
