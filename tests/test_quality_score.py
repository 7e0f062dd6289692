"""The quality score: each dimension's formula, the weighted total, and the empty table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from platform_assets.catalog.model import Entity
from platform_assets.quality.profile import TableProfile
from platform_assets.quality.score import (
    WEIGHTS,
    QualityScore,
    completeness,
    consistency,
    quality_metadata,
    quality_score,
    timeliness,
    uniqueness,
    validity,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _entity(freshness: float | None = None) -> Entity:
    return Entity.model_validate(
        {
            "file": {"format": "csv", "path": "*.csv"},
            "primary_key": ["id"],
            "columns": {"id": {"type": "integer"}, "name": {"type": "string"}},
            **({"freshness": {"max_lag_minutes": freshness}} if freshness else {}),
        }
    )


def test_weights_add_up_to_one() -> None:
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_dimensions() -> None:
    assert completeness(null_cells=5, rows=10, columns=5) == pytest.approx(90.0)
    assert validity(cast_error_rows=2, rows=18, rows_quarantined=2) == pytest.approx(80.0)
    assert uniqueness(duplicate_key_rows=1, rows=4) == pytest.approx(75.0)
    assert consistency(0.05) == pytest.approx(95.0)
    assert consistency(None) == 100.0


def test_timeliness_decays_linearly_between_the_lag_and_twice_it() -> None:
    assert timeliness(lag_minutes=60, max_lag_minutes=60) == 100.0
    assert timeliness(lag_minutes=90, max_lag_minutes=60) == pytest.approx(50.0)
    assert timeliness(lag_minutes=120, max_lag_minutes=60) == 0.0
    assert timeliness(lag_minutes=1000, max_lag_minutes=60) == 0.0
    assert timeliness(lag_minutes=1000, max_lag_minutes=None) == 100.0
    assert timeliness(lag_minutes=None, max_lag_minutes=60) == 0.0


def test_score_of_a_profile() -> None:
    profile = TableProfile(
        rows=100,
        null_counts={"id": 0, "name": 20},
        duplicate_key_rows=10,
        cast_error_rows=5,
        max_extracted_at=NOW - timedelta(minutes=90),
    )
    score = quality_score(profile, _entity(freshness=60), rows_quarantined=0, orphan_rate=0.2, now=NOW)
    assert score == QualityScore(
        completeness=90.0, validity=95.0, uniqueness=90.0, timeliness=50.0, consistency=80.0
    )
    expected = 0.25 * 90 + 0.30 * 95 + 0.20 * 90 + 0.10 * 50 + 0.15 * 80
    assert score.total == pytest.approx(expected)
    metadata = score.metadata()
    assert metadata["quality/score"] == dg.MetadataValue.float(round(expected, 2))
    assert metadata["quality/timeliness"] == dg.MetadataValue.float(50.0)
    assert set(metadata) == {"quality/score", *(f"quality/{name}" for name in WEIGHTS)}


def test_a_clean_fresh_table_scores_100() -> None:
    profile = TableProfile(rows=3, null_counts={"id": 0, "name": 0}, max_extracted_at=NOW)
    assert quality_score(profile, _entity(freshness=60), now=NOW).total == pytest.approx(100.0)


def test_empty_table() -> None:
    empty = TableProfile(rows=0, null_counts={"id": 0, "name": 0})
    fresh_declared = quality_score(empty, _entity(freshness=60), now=NOW)
    assert (fresh_declared.completeness, fresh_declared.validity, fresh_declared.uniqueness) == (
        100,
        100,
        100,
    )
    assert fresh_declared.timeliness == 0.0
    assert fresh_declared.total == pytest.approx(90.0)
    assert quality_score(empty, _entity(), now=NOW).total == pytest.approx(100.0)


def test_all_rows_quarantined_scores_zero_validity() -> None:
    empty = TableProfile(rows=0, null_counts={"id": 0, "name": 0})
    assert quality_score(empty, _entity(), rows_quarantined=7, now=NOW).validity == 0.0


def test_quality_metadata_has_the_profile_and_the_score() -> None:
    profile = TableProfile(rows=4, null_counts={"id": 0, "name": 1}, max_extracted_at=NOW)
    metadata = quality_metadata(profile, _entity(freshness=60), now=NOW)
    assert metadata["quality/completeness"] == dg.MetadataValue.float(87.5)
    assert metadata["profile/null_rate/name"] == dg.MetadataValue.float(0.25)
    assert "profile" in metadata
