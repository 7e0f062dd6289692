"""When a staging run may add to the staged table instead of rebuilding it (`staging_plan`): each rule that
forces a full rebuild, and which files an incremental run reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from platform_assets.staging.plan import FINGERPRINT_METADATA, THROUGH_METADATA, LandedList, plan_staging
from resources.landing.zone import Lineage, write_parquet


def _land(path: Path, day: int) -> Path:
    batch = pa.RecordBatch.from_pydict({"order_id": ["1"]})
    landed = write_parquet(path, [batch], Lineage("acme.orders", datetime(2026, 1, day, tzinfo=UTC), "r"))
    assert landed is not None
    return landed.path


@pytest.fixture
def landed(tmp_path: Path) -> list[Path]:
    return [_land(tmp_path / f"day{day}.parquet", day) for day in (1, 2, 3)]


def _previous(through_day: int, fingerprint: str = "f1") -> dict[str, str]:
    return {
        THROUGH_METADATA: datetime(2026, 1, through_day, tzinfo=UTC).isoformat(),
        FINGERPRINT_METADATA: fingerprint,
    }


def _plan(landed: list[Path], **overrides: object):  # type: ignore[no-untyped-def]
    arguments: dict = dict(
        appends=True, primary_key=["order_id"], previous=_previous(2), table_exists=lambda: True
    )
    return plan_staging(LandedList(landed), **{**arguments, **overrides})


def test_an_incremental_run_reads_the_files_extracted_after_the_last_staged_one(landed: list[Path]) -> None:
    plan = _plan(landed)
    assert plan.incremental and plan.files == [landed[2]] and plan.landed.live() == landed
    assert plan.through == datetime(2026, 1, 3, tzinfo=UTC)
    assert plan.metadata("f1")[THROUGH_METADATA] == "2026-01-03T00:00:00+00:00"
    assert plan.rebuild_reason("f1", schema_changed=False) is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"appends": False}, "snapshot"),
        ({"primary_key": []}, "no primary key"),
        ({"previous": None}, "no earlier staging run"),
        ({"previous": {FINGERPRINT_METADATA: "f1"}}, "no earlier staging run"),
        ({"table_exists": lambda: False}, "missing from the warehouse"),
    ],
)
def test_each_rule_that_forces_a_full_rebuild(landed: list[Path], overrides: dict, reason: str) -> None:
    plan = _plan(landed, **overrides)
    assert not plan.incremental and plan.files == landed
    assert reason in plan.reason


def test_a_file_without_an_extraction_time_forces_a_full_rebuild(landed: list[Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare.parquet"
    pq.write_table(pa.table({"order_id": ["1"]}), bare)
    plan = _plan([*landed, bare])
    assert not plan.incremental and "does not say when it was extracted" in plan.reason


def test_a_changed_definition_or_schema_rebuilds_what_would_have_been_incremental(landed: list[Path]) -> None:
    plan = _plan(landed)
    assert "staging definition" in str(plan.rebuild_reason("f2", schema_changed=False))
    assert "schema differs" in str(plan.rebuild_reason("f1", schema_changed=True))
    rebuilt = plan.rebuild("because")
    assert (rebuilt.incremental, rebuilt.files, rebuilt.reason) == (False, landed, "because")
