"""`retention:` (issue 21): staging runs remove landed files their table already holds, never one staging
still needs; a re-delivered file whose copy retention removed is still handled once (the ledger and the
landed index still know it); a full rebuild after retention is refused unless `rebuild: from_remaining`;
quarantine rows and set-aside files go after `quarantine.days`; bad values fail the catalog, naming where.
Real Dagster materializations on the embedded warehouse (`fixtures/exports_platform.py`)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixtures.exports_platform import ExportsPlatform, step_failure

from platform_assets.catalog.loader import CatalogError, load_catalog
from platform_assets.catalog.retention import Retention
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.quality.quarantine import QUARANTINE_SCHEMA, QUARANTINE_TABLE
from platform_assets.staging.retention import LandedFiles, apply_retention
from resources.environment import build_resources

COLUMNS = {"order_id": {"type": "integer"}, "amount": {"type": "double", "min": 0}}


def _entity(retention: dict[str, object], **columns: object) -> dict[str, object]:
    return {
        "file": {"path": "orders/*.csv", "format": "csv"},
        "columns": {**COLUMNS, **columns},
        "retention": retention,
    }


def _landed_copies(exports: ExportsPlatform) -> list[Path]:
    return sorted(
        path
        for path in (exports.settings.landing_dir / "exports" / "orders").glob("load_date=*/*")
        if not path.name.endswith(".lineage.json")
    )


def _raw_metadata(exports: ExportsPlatform, result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    (event,) = result.asset_materializations_for_node("raw__exports__orders")
    return {name: value.value for name, value in event.metadata.items()}


def test_count_retention_removes_only_staged_files_and_a_redelivery_is_still_handled_once(
    exports: ExportsPlatform,
) -> None:
    entity = _entity({"landed": {"count": 1}})
    exports.deliver("a.csv", ["order_id,amount", "1,10", "2,20"])
    assert exports.materialize(entity).success
    (first_copy,) = _landed_copies(exports)

    exports.deliver("b.csv", ["order_id,amount", "3,30"])
    second = exports.materialize(entity)
    assert second.success
    metadata = exports.staged_metadata(second)
    # a.csv's copy is beyond the newest 1 and its rows were staged by the previous (committed) run: removed;
    # b.csv's copy is what this run stages: kept.
    assert metadata["retention/landed_files_removed"] == 1
    assert metadata["retention/landed_bytes_removed"] > 0
    assert not first_copy.exists() and not Path(f"{first_copy}.lineage.json").exists()
    assert len(_landed_copies(exports)) == 1
    assert exports.staged("order_id, amount") == [(1, 10.0), (2, 20.0), (3, 30.0)]

    # a.csv delivered again with the same bytes (a re-upload): the ledger still knows it, nothing lands.
    os.utime(exports.delivered("a.csv"), ns=(1, 1))
    again = exports.materialize(entity)
    assert again.success
    raw = _raw_metadata(exports, again)
    assert (raw["files_landed"], raw["files_skipped"]) == (0, 2)
    assert exports.staged("order_id, amount") == [(1, 10.0), (2, 20.0), (3, 30.0)]

    # a.csv changed: landed once more, and its new rows are staged once.
    exports.deliver("a.csv", ["order_id,amount", "1,11", "2,21"])
    changed = exports.materialize(entity)
    assert changed.success
    assert _raw_metadata(exports, changed)["files_landed"] == 1
    assert exports.staged("order_id, amount") == [(1, 11.0), (2, 21.0), (3, 30.0)]


def test_a_full_rebuild_after_retention_is_refused_unless_from_remaining(exports: ExportsPlatform) -> None:
    exports.deliver("a.csv", ["order_id,amount", "1,10"])
    assert exports.materialize(_entity({"landed": {"count": 1}})).success
    exports.deliver("b.csv", ["order_id,amount", "2,20"])
    assert exports.materialize(_entity({"landed": {"count": 1}})).success

    # A new declared column changes the staging definition: a full rebuild, which would need a.csv's copy.
    widened = {"note": {"type": "string"}}
    refused = exports.materialize(_entity({"landed": {"count": 1}}, **widened))
    assert not refused.success
    error = step_failure(refused)
    assert "RebuildAfterRetentionError" in error and "retention.landed" in error
    assert "rebuild: from_remaining" in error
    assert exports.staged("order_id, amount") == [(1, 10.0), (2, 20.0)], "nothing was written"

    rebuilt = exports.materialize(_entity({"landed": {"count": 1}, "rebuild": "from_remaining"}, **widened))
    assert rebuilt.success
    metadata = exports.staged_metadata(rebuilt)
    assert metadata["staging/mode"] == "full" and metadata["retention/files_not_rebuilt"] == 1
    assert exports.staged("order_id, amount") == [(2, 20.0)]


def test_days_retention_and_quarantine_retention(exports: ExportsPlatform) -> None:
    entity = {**_entity({"quarantine": {"days": 7}}), "max_bad_fraction": 0.5}
    exports.deliver("a.csv", ["order_id,amount", "1,10", "2,-5"])  # 2 breaks amount >= 0: quarantined
    assert exports.materialize(entity).success
    exports.deliver("b.csv", ["order_id,amount", "3,30"])
    assert exports.materialize(entity).success
    warehouse = build_resources(exports.settings, DBT_PROJECT_DIR)["warehouse"]
    quarantine = warehouse.table_ref(QUARANTINE_SCHEMA, QUARANTINE_TABLE)
    assert warehouse.query(f"SELECT count(*) FROM {quarantine}") == [(1,)]

    landing = build_resources(exports.settings, DBT_PROJECT_DIR)["landing"]
    index = landing.landed_index("exports", "orders")
    b_time = index.summary()[2]  # the newest extraction: b.csv's, staged by the last run
    assert b_time is not None
    arguments = dict(
        landed=LandedFiles(index),
        staged_through=b_time,
        reads_only_new=True,
        warehouse=warehouse,
        asset_key="staged/exports/orders",
        quarantine_table=(QUARANTINE_SCHEMA, QUARANTINE_TABLE),
        quarantine_dir=landing.quarantine_dir("exports", "orders"),
    )
    retention = Retention.model_validate({"landed": {"days": 30}, "quarantine": {"days": 7}})
    # Within the limits: nothing goes.
    kept = apply_retention(retention, now=datetime.now(UTC), **arguments)  # type: ignore[arg-type]
    assert (kept.landed_files, kept.quarantine_rows) == (0, 0)
    # Forty days on: a.csv's copy (staged, not the newest extraction) and the quarantine row go; b.csv's
    # copy, the newest extraction, stays whatever its age.
    later = apply_retention(retention, now=datetime.now(UTC) + timedelta(days=40), **arguments)  # type: ignore[arg-type]
    assert (later.landed_files, later.quarantine_rows) == (1, 1)
    assert len(_landed_copies(exports)) == 1
    assert warehouse.query(f"SELECT count(*) FROM {quarantine}") == [(0,)]
    # A full rebuild is no longer possible, an incremental run still is.
    assert exports.materialize(entity).success


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ("{landed: {days: 0}}", "greater than or equal to 1"),
        ("{landed: {days: 3, count: 10}}", "exactly one of `days`"),
        ("{landed: {}}", "exactly one of `days`"),
        ("{quarantine: {count: 5}}", "count"),
        ("{rebuild: always}", "'refuse' or 'from_remaining'"),
    ],
)
def test_a_bad_retention_fails_the_catalog_naming_where(tmp_path: Path, retention: str, message: str) -> None:
    (tmp_path / "shop.yaml").write_text(
        f"""\
source: shop
connection: {{kind: files, root: /data}}
retention: {{landed: {{days: 30}}}}
entities:
  orders:
    file: {{path: "orders/*.csv", format: csv}}
    primary_key: [order_id]
    columns: {{order_id: {{type: integer}}}}
    retention: {retention}
"""
    )
    with pytest.raises(CatalogError) as raised:
        load_catalog(tmp_path, {}, {})
    assert "shop.yaml" in str(raised.value) and "retention" in str(raised.value)
    assert message in str(raised.value)


def test_an_entity_takes_the_source_retention_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(
        """\
source: shop
connection: {kind: files, root: /data}
retention: {landed: {days: 30}, quarantine: {days: 90}}
entities:
  orders:
    file: {path: "orders/*.csv", format: csv}
    primary_key: [order_id]
    columns: {order_id: {type: integer}}
    retention: {landed: {count: 100}}
  returns:
    file: {path: "returns/*.csv", format: csv}
    primary_key: [order_id]
    columns: {order_id: {type: integer}}
"""
    )
    items = {item.name: item.entity.retention for item in load_catalog(tmp_path, {}, {})}
    assert items["orders"] == Retention.model_validate({"landed": {"count": 100}, "quarantine": {"days": 90}})
    assert items["returns"] == Retention.model_validate({"landed": {"days": 30}, "quarantine": {"days": 90}})
