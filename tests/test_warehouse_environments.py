"""The same asset code (raw, staged, checks, dbt) runs against a real PostgreSQL, only the environment
switched, and a second run of the whole graph changes nothing (idempotent). The same on the embedded DuckDB
default is `tests/test_cli.py::test_demo_materializes_everything_then_run_lands_only_what_is_new` (the
whole graph through `dataplatform demo`, then a rerun that changes no table)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.csv as pacsv
import pytest
from conftest import TEST_SCALE
from fixtures.postgres_server import platform_pg_options

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY, DEMO_API_URL_VAR
from demo_shop.world import PRODUCTS_API
from platform_assets.definitions import build_definitions
from platform_assets.keys import STAGED_SCHEMA, staged_table
from resources.environment import PlatformSettings, build_warehouse
from resources.warehouses.base import Warehouse

STAGED = [("shop", "orders"), ("shop", "order_items"), ("shop_db", "customers"), ("shop_api", "products")]
MARTS = ("fct_orders", "dim_customers", "fct_customer_lifetime_value", "fct_daily_revenue", "fct_web_funnel")


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_database: str) -> str:
    """PLATFORM_ENV=postgres and the PLATFORM_PG_* variables of a fresh test database."""
    monkeypatch.setenv("PLATFORM_ENV", "postgres")
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path / "data"))
    for name, value in platform_pg_options(postgres_database).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PLATFORM_PG_PASSWORD", "")
    return "postgres"


@pytest.fixture
def materialize(
    environment: str, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PlatformSettings, dg.Definitions, dg.DagsterInstance]]:
    settings = PlatformSettings.from_env()
    generate_demo_world(settings.sources_dir, seed=11, scale=TEST_SCALE)
    with (
        serve_products_api(settings.sources_dir / PRODUCTS_API, DEMO_API_KEY) as api_url,
        dg.instance_for_test() as instance,
    ):
        monkeypatch.setenv(DEMO_API_URL_VAR, api_url)
        yield settings, build_definitions(settings), instance


def _counts(warehouse: Warehouse) -> dict[str, int]:
    tables = [(STAGED_SCHEMA, staged_table(source, entity)) for source, entity in STAGED]
    tables += [("analytics", mart) for mart in MARTS]
    return {
        f"{schema}.{table}": warehouse.query(f"SELECT count(*) FROM {warehouse.table_ref(schema, table)}")[0][
            0
        ]
        for schema, table in tables
    }


@pytest.mark.slow
def test_the_whole_graph_runs_on_postgres_and_a_rerun_changes_nothing(
    environment: str, materialize: tuple[PlatformSettings, dg.Definitions, dg.DagsterInstance]
) -> None:
    settings, definitions, instance = materialize
    job = definitions.resolve_implicit_global_asset_job_def()
    warehouse = build_warehouse(settings)
    assert warehouse.kind == environment

    first = job.execute_in_process(instance=instance, raise_on_error=False)
    assert first.success
    assert all(check.passed for check in first.get_asset_check_evaluations())
    counts = _counts(warehouse)

    orders = sum(
        pacsv.read_csv(f).num_rows for f in (settings.sources_dir / "files/shop/orders").glob("*.csv")
    )
    with sqlite3.connect(settings.sources_dir / "shop.sqlite") as db:
        ((customers,),) = db.execute("SELECT count(*) FROM customers").fetchall()
    assert counts["staged.shop__orders"] == counts["analytics.fct_orders"] == orders
    assert counts["staged.shop_db__customers"] == counts["analytics.dim_customers"] == customers
    fct_orders = warehouse.table_ref("analytics", "fct_orders")
    assert warehouse.query(f"SELECT count(DISTINCT order_id) FROM {fct_orders}") == [(orders,)]

    again = job.execute_in_process(instance=instance, raise_on_error=False)
    assert again.success
    assert _counts(warehouse) == counts
