"""Rows deleted at a source leave the staged table (issue 18, item 4): by a key scan of an incremental
PostgreSQL table (`deletes: reconcile`), guarded by `max_delete_fraction`; by a column marking deletion
(`deletes: soft`); by a file delivery that is the whole entity (`file: {snapshot: true}`), through to the
incremental dbt mart `fct_orders`. Real PostgreSQL as the source, real Dagster materializations, the DuckDB
warehouse, a real dbt run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
from conftest import LocalPlatform, demo_platform

from platform_assets.catalog.loader import CATALOG_DIR, CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.staged_assets import build_staged_asset
from platform_assets.keys import STAGED_SCHEMA, staged_key, staged_table
from platform_assets.staging.deletes import DELETED_ROWS_METADATA
from platform_assets.staging.plan import MODE_METADATA
from resources.environment import PlatformSettings, build_resources
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
from sensors.healing.classifier import Category, classify, evidence_from_error

START = datetime(2024, 5, 1, tzinfo=UTC)


def run_sql(url: str, sql: str, parameters: Any = None) -> None:
    with psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql")) as con, con.cursor() as cursor:
        cursor.execute(sql, parameters)
    con.close()


class PostgresSourcePlatform:
    """Raw and staged assets of one entity of the PostgreSQL database `url`, materialized in process."""

    def __init__(self, tmp_path: Path, url: str, entity: str, instance: dg.DagsterInstance) -> None:
        self.settings = PlatformSettings.local(tmp_path / "data")
        self.url = url
        self.entity = entity
        self.instance = instance
        self.warehouse = DuckDBWarehouse(path=str(self.settings.warehouse_path))

    def item(self, declaration: dict[str, Any]) -> CatalogEntity:
        source = Source.model_validate(
            {"source": "crm", "connection": {"kind": "database", "url": self.url}, "entities": declaration}
        )
        return CatalogEntity(source, self.entity, source.entities[self.entity])

    def materialize(self, declaration: dict[str, Any]) -> dg.ExecuteInProcessResult:
        item = self.item(declaration)
        definitions = dg.Definitions(
            assets=[build_raw_asset(item), build_staged_asset(item, self.warehouse.kind)],
            resources=build_resources(self.settings, DBT_PROJECT_DIR),
        )
        job = definitions.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    def staged(self, columns: str = "id") -> list[tuple]:
        table = self.warehouse.table_ref(STAGED_SCHEMA, staged_table("crm", self.entity))
        return self.warehouse.query(f"SELECT {columns} FROM {table} ORDER BY id")

    def staged_metadata(self) -> dict[str, Any]:
        event = self.instance.get_latest_materialization_event(staged_key("crm", self.entity))
        assert event is not None and event.asset_materialization is not None
        return {key: value.value for key, value in event.asset_materialization.metadata.items()}


@pytest.fixture
def platform_on(tmp_path: Path, postgres_database: str) -> Iterator[Any]:
    def make(entity: str) -> PostgresSourcePlatform:
        return PostgresSourcePlatform(tmp_path, postgres_database, entity, instance)

    with dg.instance_for_test() as instance:
        yield make


def test_rows_deleted_at_a_postgres_source_leave_staged_by_a_key_scan_and_a_bad_read_is_escalated(
    platform_on: Any,
) -> None:
    platform: PostgresSourcePlatform = platform_on("customers")
    run_sql(
        platform.url,
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL);"  # noqa: E501
        "INSERT INTO customers SELECT i, 'customer ' || i, %s FROM generate_series(1, 20) AS i",
        [START],
    )
    declaration = {
        "customers": {
            "table": {
                "table": "customers",
                "incremental": {"mode": "timestamp", "cursor_column": "updated_at"},
            },
            "deletes": {"mode": "reconcile", "every_minutes": 0},
            "primary_key": ["id"],
            "columns": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "updated_at": {"type": "timestamp"},
            },
        }
    }
    assert platform.materialize(declaration).success
    assert platform.staged() == [(i,) for i in range(1, 21)]
    assert platform.staged_metadata()[DELETED_ROWS_METADATA] == 0

    # Two rows deleted, one updated: the incremental extraction sees only the update; the key scan the
    # deletions, which leave staged in the same (incremental) load.
    run_sql(
        platform.url,
        "DELETE FROM customers WHERE id IN (3, 7); UPDATE customers SET name = 'renamed', updated_at = %s "
        "WHERE id = 5",
        [START + timedelta(days=1)],
    )
    assert platform.materialize(declaration).success
    remaining = [i for i in range(1, 21) if i not in (3, 7)]
    assert platform.staged() == [(i,) for i in remaining]
    assert platform.staged("name")[remaining.index(5)] == ("renamed",)
    metadata = platform.staged_metadata()
    assert metadata[DELETED_ROWS_METADATA] == 2 and metadata[MODE_METADATA] == "incremental"

    # A rebuild from every landed file (whose first extraction still holds 3 and 7) deletes them again.
    platform.warehouse.query(
        f"DROP TABLE {platform.warehouse.table_ref(STAGED_SCHEMA, staged_table('crm', 'customers'))}"
    )
    assert platform.materialize(declaration).success
    assert platform.staged() == [(i,) for i in remaining]
    assert platform.staged_metadata()[MODE_METADATA] == "full"

    # A scan lacking 10 of the 18 staged keys (a bad read, or a purge) is over the guard: the step fails,
    # classified as a volume anomaly (escalated, never retried), and the staged table keeps its rows.
    run_sql(platform.url, "DELETE FROM customers WHERE id > 10")
    result = platform.materialize(declaration)
    assert not result.success
    (failure,) = [e for e in result.get_step_failure_events() if "staged" in e.step_key]
    error = failure.step_failure_data.error
    assert error is not None
    message = str(error.cause.message if error.cause else error.message)
    assert "DeleteGuardError" in message and "0.5556" in message and "max_delete_fraction 0.1" in message
    diagnosis = classify(evidence_from_error(error, kind="step_failure"))
    assert diagnosis.category is Category.volume_anomaly and diagnosis.rule_id == "delete_guard_exceeded"
    assert platform.staged() == [(i,) for i in remaining]


def test_soft_deleted_rows_leave_the_staged_table_and_come_back_when_undeleted(platform_on: Any) -> None:
    platform: PostgresSourcePlatform = platform_on("accounts")
    run_sql(
        platform.url,
        "CREATE TABLE accounts (id integer PRIMARY KEY, deleted_at timestamptz, updated_at timestamptz NOT NULL);"  # noqa: E501
        "INSERT INTO accounts SELECT i, NULL, %s FROM generate_series(1, 10) AS i",
        [START],
    )
    declaration = {
        "accounts": {
            "table": {
                "table": "accounts",
                "incremental": {"mode": "timestamp", "cursor_column": "updated_at"},
            },
            "deletes": {"mode": "soft", "column": "deleted_at"},
            "primary_key": ["id"],
            "columns": {
                "id": {"type": "integer"},
                "deleted_at": {"type": "timestamp"},
                "updated_at": {"type": "timestamp"},
            },
        }
    }
    assert platform.materialize(declaration).success
    assert len(platform.staged()) == 10

    later = START + timedelta(days=1)
    run_sql(
        platform.url,
        "UPDATE accounts SET deleted_at = %s, updated_at = %s WHERE id IN (2, 9)",
        [later, later],
    )
    assert platform.materialize(declaration).success
    assert platform.staged() == [(i,) for i in range(1, 11) if i not in (2, 9)]
    assert platform.staged_metadata()[DELETED_ROWS_METADATA] == 2

    latest = START + timedelta(days=2)
    run_sql(platform.url, "UPDATE accounts SET deleted_at = NULL, updated_at = %s WHERE id = 9", [latest])
    assert platform.materialize(declaration).success
    assert platform.staged() == [(i,) for i in range(1, 11) if i != 2]
    assert platform.staged_metadata()[MODE_METADATA] == "incremental"


@pytest.fixture
def snapshot_orders_platform(
    tmp_path: Path, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalPlatform]:
    """The demo platform (as `local_platform`) on a copy of the shipped catalog whose orders files are each
    the whole entity (`snapshot: true`)."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for path in CATALOG_DIR.glob("*.yaml"):
        text = path.read_text()
        if path.name == "shop.yaml":
            declared = 'file: {path: "orders/*.csv", format: csv}'
            assert declared in text
            text = text.replace(declared, 'file: {path: "orders/*.csv", format: csv, snapshot: true}')
        (catalog / path.name).write_text(text)
    settings = replace(PlatformSettings.local(tmp_path / "data"), catalog_dir=catalog)
    with demo_platform(settings, monkeypatch) as platform:
        yield platform


def test_an_order_missing_from_a_snapshot_delivery_leaves_staged_and_the_incremental_fct_orders_mart(
    snapshot_orders_platform: LocalPlatform,
) -> None:
    platform = snapshot_orders_platform
    delivered = sorted(platform.orders_dir.glob("*.csv"))
    header = delivered[0].read_text().splitlines()[0]
    lines = [line for path in delivered for line in path.read_text().splitlines()[1:] if line]
    # An order without items or payments (so that deleting it orphans nothing), delivered with the rest.
    columns = header.split(",")
    extra = dict(zip(columns, lines[0].split(","), strict=True))
    deleted = max(int(line.split(",")[0]) for line in lines) + 1000
    extra.update(order_id=str(deleted), status="cancelled", amount="0.00")
    (platform.orders_dir / "zz_extra.csv").write_text(f"{header}\n{','.join(extra.values())}\n")
    assert platform.materialize_all().success

    def order_ids(table: str) -> set[int]:
        return {order_id for (order_id,) in platform.warehouse.query(f"SELECT order_id FROM {table}")}

    assert deleted in order_ids("staged.shop__orders") and deleted in order_ids("analytics.fct_orders")

    # The next delivery is every order but that one: it was deleted at the source.
    (platform.orders_dir / "zz_whole_entity.csv").write_text("\n".join([header, *lines]) + "\n")
    result = platform.materialize_all()
    assert result.success

    staged = order_ids("staged.shop__orders")
    assert deleted not in staged and len(staged) == len(lines)
    assert order_ids("analytics.fct_orders") == staged
    (event,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == staged_key("shop", "orders")
    ]
    assert event.metadata[DELETED_ROWS_METADATA].value == 1
    assert event.metadata[MODE_METADATA].value == "incremental"
