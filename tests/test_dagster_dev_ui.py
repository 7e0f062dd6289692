"""`dagster dev`, started as a user starts it, serves the UI with the lineage raw -> staged -> dbt models,
a materialization launched through the UI's API runs the whole slice to success, and in a real browser the
pages render and the buttons work.

The other tests build `Definitions` in process; this module proves that the workspace file, the code
location loading in its own code server and the webserver fit together. One `dagster dev` from the
repository root serves every test here (each start costs half a minute of a 2-CPU CI machine): it waits for
the code location to load, reads the asset graph through the UI's GraphQL API, launches runs as the UI's
"Materialize selected" does (queued, dequeued by the daemon, steps in subprocesses under the `warehouse`
concurrency pool), walks the UI in Chromium (tests/browser_walk.py) and stops the whole process tree
again (webserver, daemon and code server share one process group).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from browser_walk import browser_walk
from dagster_processes import DagsterServer, dagster_dev

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY
from demo_shop.world import PRODUCTS_API
from sensors.automation.conditions import (
    DBT_AUTOMATION_SENSOR,
    INGESTION_AUTOMATION_SENSOR,
    OPS_AUTOMATION_SENSOR,
)

pytestmark = pytest.mark.slow

DEMO_SCALE = 0.1

RAW_ORDERS = "raw/shop/orders"
STAGED_ORDERS = "staged/shop/orders"
STG_ORDERS = "stg_shop__orders"
MART = "fct_daily_revenue"
RAW_PRODUCTS = "raw/shop_api/products"
ORDERS_CHAIN = [RAW_ORDERS, STAGED_ORDERS, STG_ORDERS, MART]
CUSTOMERS_CHAIN = ["raw/shop_db/customers", "staged/shop_db/customers", "stg_shop_db__customers"]

ASSET_NODES_QUERY = """
query AssetLineage {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name } }
      ... on Error { message }
    }
  }
}
"""

HISTORY_QUERY = """
query History($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 10) {
        runId
        metadataEntries {
          label
          __typename
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
        }
      }
    }
  }
}
"""
"""What the UI's asset page reads to plot numeric metadata over materializations (its Plots tab)."""


@dataclass(frozen=True)
class ServedAsset:
    """One asset node as the UI shows it."""

    deps: frozenset[str]
    group: str
    kinds: frozenset[str]
    checks: frozenset[str]


def _key(asset_key: dict[str, Any]) -> str:
    return "/".join(asset_key["path"])


def _served_assets(dev: DagsterServer) -> dict[str, ServedAsset]:
    nodes = dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    assets = {}
    for node in nodes:
        checks = node["assetChecksOrError"]
        if checks["__typename"] != "AssetChecks":
            dev.fail(f"asset checks of {_key(node['assetKey'])} unavailable: {checks}")
        assets[_key(node["assetKey"])] = ServedAsset(
            deps=frozenset(_key(dep) for dep in node["dependencyKeys"]),
            group=node["groupName"],
            kinds=frozenset(node["kinds"]),
            checks=frozenset(check["name"] for check in checks["checks"]),
        )
    if not assets:
        dev.fail("code location loaded but the UI lists no assets")
    return assets


def _numeric_history(dev: DagsterServer, asset: str) -> list[dict[str, tuple[str, float]]]:
    """Per materialization (newest first): label -> (GraphQL entry type, value) of its numeric entries."""
    found = dev.graphql(HISTORY_QUERY, {"path": asset.split("/")})["assetOrError"]
    if found["__typename"] != "Asset":
        dev.fail(f"{asset} not found: {found}")
    return [
        {
            entry["label"]: (entry["__typename"], entry.get("floatValue", entry.get("intValue")))
            for entry in materialization["metadataEntries"]
            if entry["__typename"] in ("FloatMetadataEntry", "IntMetadataEntry")
        }
        for materialization in found["assetMaterializations"]
    ]


@dataclass(frozen=True)
class BuiltTables:
    """What the UI-launched runs left in the warehouse and the landing zone, read before the browser
    delivers its bad file (which adds two staged orders)."""

    staged_orders: int
    mart_days: int
    mart_orders: int
    landed_product_ids: list[str]


def _built_tables(data_dir: Path) -> BuiltTables:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        ((orders,),) = con.execute("SELECT count(*) FROM staged.shop__orders").fetchall()
        ((days, mart_orders),) = con.execute(
            "SELECT count(*), sum(orders) FROM analytics.fct_daily_revenue"
        ).fetchall()
    landed = pq.read_table(
        sorted((data_dir / "landing" / "shop_api" / "products").glob("load_date=*/*.parquet"))
    )
    return BuiltTables(orders, days, mart_orders, landed.column("product_id").to_pylist())


@dataclass(frozen=True)
class ServedPlatform:
    assets: dict[str, ServedAsset]
    run_status: str
    data_dir: Path
    built: BuiltTables
    rerun_statuses: list[str]
    staged_history: list[dict[str, tuple[str, float]]]
    browser_failure: str | None
    """Why the browser walk stopped (`BrowserWalk.failure`), None when every stage passed."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> ServedPlatform:
    """The asset graph as `dagster dev` serves it, the outcome of materializing it through the UI's API,
    and how the browser walk went, all on one server. The server is stopped before the assertions run, so
    a failing assertion never leaves it behind; a failed browser stage is recorded, not raised, so that the
    API tests still report on their own."""
    tmp = tmp_path_factory.mktemp("dagster_dev")
    data_dir = tmp / "platform_data"
    generate_demo_world(data_dir / "sources", seed=3, scale=DEMO_SCALE)
    # The API key comes from the repository's .env file, which `dagster dev` loads like a user's would.
    with (
        serve_products_api(data_dir / "sources" / PRODUCTS_API, DEMO_API_KEY) as api_url,
        dagster_dev(tmp, data_dir, api_url) as dev,
    ):
        dev.wait_until_loaded()
        # Not under test here: left on, automation stages the products a minute after the first run, and
        # that run then queues ahead of the browser's and writes the warehouse while the test reads it.
        dev.stop_sensors([INGESTION_AUTOMATION_SENSOR, DBT_AUTOMATION_SENSOR, OPS_AUTOMATION_SENSOR])
        assets = _served_assets(dev)
        with browser_walk(tmp / "chromium-profile", dev) as walk:
            # The browser's first two stages run while the API's runs are in progress: each run spends
            # seconds starting its worker process, which would otherwise be time spent waiting.
            # The orders chain, the customers chain its dbt relationships test needs, and the REST source.
            first_run = dev.launch([*ORDERS_CHAIN, *CUSTOMERS_CHAIN, RAW_PRODUCTS])
            walk.lineage()
            status = dev.wait_for_run(first_run)
            # One more run of the staged table alone (with its checks): two points on each plot.
            rerun = dev.launch([STAGED_ORDERS])
            walk.materialize_from_asset_page()  # raw/shop_db/payments: not in the warehouse pool
            reruns = [dev.wait_for_run(rerun)]
            history = _numeric_history(dev, STAGED_ORDERS)
            dev.wait_until_idle()
            built = _built_tables(data_dir)
            walk.failed_check(data_dir / "sources" / "files" / "shop" / "orders")
    return ServedPlatform(assets, status, data_dir, built, reruns, history, walk.failure)


def test_ui_shows_lineage_raw_to_staged_to_dbt(served: ServedPlatform) -> None:
    assert {RAW_ORDERS, STAGED_ORDERS, STG_ORDERS, MART} <= served.assets.keys()
    assert RAW_ORDERS in served.assets[STAGED_ORDERS].deps
    assert STAGED_ORDERS in served.assets[STG_ORDERS].deps
    assert STG_ORDERS in served.assets[MART].deps


def test_ui_shows_groups_and_kinds(served: ServedPlatform) -> None:
    assert served.assets[RAW_ORDERS].group == "raw_shop"
    assert served.assets[STAGED_ORDERS].group == "staged_shop"
    assert "duckdb" in served.assets[STAGED_ORDERS].kinds
    assert served.assets[STG_ORDERS].group == "dbt_staging"
    assert served.assets[MART].group == "dbt_marts"
    assert {"dbt", "duckdb"} <= served.assets[STG_ORDERS].kinds
    assert {"dbt", "duckdb"} <= served.assets[MART].kinds


def test_ui_shows_schema_contract_on_staged_asset(served: ServedPlatform) -> None:
    assert "schema_contract" in served.assets[STAGED_ORDERS].checks


def test_materializing_from_the_ui_builds_the_mart_and_reads_the_api(served: ServedPlatform) -> None:
    assert served.run_status == "SUCCESS"
    built = served.built
    assert built.staged_orders == 1000
    assert built.mart_days > 30 and built.mart_orders == built.staged_orders
    products = json.loads((served.data_dir / "sources" / PRODUCTS_API).read_text())
    assert sorted(built.landed_product_ids) == sorted(str(p["product_id"]) for p in products)


def test_quality_score_and_profile_history_is_plottable_in_the_ui(served: ServedPlatform) -> None:
    """The UI plots a numeric metadata entry across an asset's materializations: the quality score, its
    dimensions and the profile (what the anomaly checks compare) are numeric entries on every one."""
    assert served.rerun_statuses == ["SUCCESS"]
    assert len(served.staged_history) == 2
    for entries in served.staged_history:
        assert entries["quality/score"][0] == "FloatMetadataEntry"
        assert 0 <= entries["quality/score"][1] <= 100
        for dimension in ("completeness", "validity", "uniqueness", "timeliness", "consistency"):
            assert entries[f"quality/{dimension}"][0] == "FloatMetadataEntry"
        assert entries["profile/null_rate/customer_id"][0] == "FloatMetadataEntry"
        assert entries["dagster/row_count"] == ("IntMetadataEntry", 1000)
    # The rerun found no new delivery: incremental, it wrote nothing (newest first).
    assert [entries["rows_written"][1] for entries in served.staged_history] == [0, 1000]


def test_browser_walks_lineage_materializes_and_shows_a_failed_check(served: ServedPlatform) -> None:
    """The pages render and the buttons work (stages in tests/browser_walk.py; screenshots of each in
    tests/artifacts/browser/)."""
    assert served.browser_failure is None, served.browser_failure
