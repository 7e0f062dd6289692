"""Schema drift through real Dagster materializations on DuckDB and PostgreSQL: a second delivery whose
columns differ from the first is evolved, quarantined or refused as the entity's policy says, and every
staged materialization records its schema version and the diff."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from fixtures.postgres_server import platform_pg_options

from platform_assets.catalog_loader import CatalogEntity
from platform_assets.catalog_model import Source
from platform_assets.dbt_models import DBT_PROJECT_DIR
from platform_assets.keys import STAGED_SCHEMA, staged_table
from platform_assets.raw_assets import build_raw_asset
from platform_assets.staged_assets import build_contract_checks, build_staged_asset
from resources.environment import PG_PASSWORD_VAR, PlatformEnvironment, PlatformSettings, build_resources
from resources.warehouse import Warehouse


@dataclass
class DriftPlatform:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance

    def deliver(self, name: str, text: str) -> None:
        (self.root / "orders").mkdir(parents=True, exist_ok=True)
        (self.root / "orders" / name).write_text(text)

    def materialize(self, on_drift: str, compatibility: str = "backward") -> dg.ExecuteInProcessResult:
        source = Source.model_validate(
            {
                "source": "drift",
                "connection": {"kind": "files", "root": str(self.root)},
                "entities": {
                    "orders": {
                        "file": {"format": "csv", "path": "orders/*.csv"},
                        "primary_key": ["order_id"],
                        "schema_evolution": {"compatibility": compatibility, "on_drift": on_drift},
                        "columns": {
                            "order_id": {"type": "integer"},
                            "amount": {"type": "integer"},
                            "note": {"type": "string"},
                        },
                    }
                },
            }
        )
        item = CatalogEntity(source, "orders", source.entities["orders"])
        definitions = dg.Definitions(
            assets=[build_raw_asset(item), build_staged_asset(item, "test")],
            asset_checks=build_contract_checks(item),
            resources=build_resources(self.settings, DBT_PROJECT_DIR),
        )
        job = definitions.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    @property
    def warehouse(self) -> Warehouse:
        return build_resources(self.settings, DBT_PROJECT_DIR)["warehouse"]

    def staged_columns(self) -> dict[str, str]:
        return dict(self.warehouse.columns(STAGED_SCHEMA, staged_table("drift", "orders")))

    def staged_metadata(self, result: dg.ExecuteInProcessResult) -> dict[str, object]:
        (event,) = result.asset_materializations_for_node("staged__drift__orders")
        return {name: value.value for name, value in event.metadata.items()}


@pytest.fixture(params=["duckdb", "postgres"])
def drift(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DriftPlatform]:
    settings = PlatformSettings.local(tmp_path / "data")
    if request.param == "postgres":
        monkeypatch.setenv(PG_PASSWORD_VAR, "")
        options = platform_pg_options(request.getfixturevalue("postgres_database"))
        settings = PlatformSettings(PlatformEnvironment.POSTGRES, tmp_path / "data", options)
    with dg.instance_for_test() as instance:
        yield DriftPlatform(tmp_path / "deliveries", settings, instance)


FIRST = "order_id,amount,note\n1,10,a\n2,20,b\n"


def test_evolve_adds_a_new_column_and_widens_integer_to_double(drift: DriftPlatform) -> None:
    drift.deliver("1.csv", FIRST)
    first = drift.materialize("evolve")
    assert first.success
    assert drift.staged_metadata(first)["schema/version"] == 1

    drift.deliver("2.csv", "order_id,amount,note,channel\n3,30.5,c,web\n")
    second = drift.materialize("evolve")
    assert second.success
    metadata = drift.staged_metadata(second)
    assert metadata["schema/version"] == 2
    assert "channel" in metadata["schema/diff"]["added"]
    assert "amount" in metadata["schema/diff"]["type_changed"]
    columns = drift.staged_columns()
    assert "channel" in columns
    assert columns["amount"].upper() in {"DOUBLE", "DOUBLE PRECISION"}
    assert all(check.passed for check in second.get_asset_check_evaluations())


def test_fail_refuses_an_integer_column_turning_into_strings_and_keeps_the_table(
    drift: DriftPlatform,
) -> None:
    drift.deliver("1.csv", FIRST)
    assert drift.materialize("fail").success
    drift.deliver("2.csv", "order_id,amount,note\n3,many,c\n4,lots,d\n")
    second = drift.materialize("fail")
    assert not second.success
    failure = next(e for e in second.all_events if e.event_type_value == "STEP_FAILURE")
    assert "schema drifted" in str(failure.event_specific_data)
    assert "amount" in str(failure.event_specific_data)
    table = drift.warehouse.table_ref(STAGED_SCHEMA, staged_table("drift", "orders"))
    assert drift.warehouse.query(f"SELECT count(*) FROM {table}") == [(2,)]


def test_a_later_file_without_a_nullable_column_stages_its_rows_with_null(drift: DriftPlatform) -> None:
    drift.deliver("1.csv", FIRST)
    assert drift.materialize("fail").success
    drift.deliver("2.csv", "order_id,amount\n3,30\n")
    second = drift.materialize("fail")
    assert second.success
    table = drift.warehouse.table_ref(STAGED_SCHEMA, staged_table("drift", "orders"))
    rows = drift.warehouse.query(f"SELECT order_id, note FROM {table} ORDER BY order_id")
    assert [tuple(row) for row in rows] == [(1, "a"), (2, "b"), (3, None)]
