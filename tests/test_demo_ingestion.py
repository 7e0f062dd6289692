"""The demo ingests every kind of source (CSV, gzipped JSON Lines and Parquet files; SQLite tables; the
paged REST API with an API key) through real Dagster materializations, and ingests incrementally: a second
run lands nothing, a third lands exactly what changed."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import dagster as dg
from conftest import LocalPlatform

from resources.databases.config import DEFAULT_LOOKBACK_SECONDS

STAGED_TABLES = {
    "orders": "shop__orders",
    "order_items": "shop__order_items",
    "web_events": "shop__web_events",
    "customers": "shop_db__customers",
    "payments": "shop_db__payments",
    "products": "shop_api__products",
}


def _staged_counts(platform: LocalPlatform) -> dict[str, int]:
    return {
        entity: platform.warehouse.query(f"SELECT count(*) FROM staged.{table}")[0][0]
        for entity, table in STAGED_TABLES.items()
    }


def _raw_rows(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    return {
        event.asset_key.path[-1]: event.materialization.metadata["dagster/row_count"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[0] == "raw"
    }


def _in_lookback_window(database: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows of each shop_db table that an incremental run reads again: those stamped within the default
    lookback (300 s) before the table's greatest `updated_at`, the watermark."""
    with sqlite3.connect(database) as db:
        return {
            table: db.execute(
                f"SELECT count(*) FROM {table} WHERE updated_at >= "
                f"(SELECT datetime(max(updated_at), '-{DEFAULT_LOOKBACK_SECONDS:.0f} seconds') FROM {table})"
            ).fetchone()[0]
            for table in tables
        }


def _assert_every_source_staged_all_its_rows(local_platform: LocalPlatform) -> None:
    manifest = json.loads((local_platform.settings.sources_dir / "manifest.json").read_text())
    assert _staged_counts(local_platform) == {
        entity: manifest["row_counts"][entity] for entity in STAGED_TABLES
    }
    ((active, price),) = local_platform.warehouse.query(
        "SELECT count(*) FILTER (WHERE active), sum(unit_price) FROM staged.shop_api__products"
    )
    products = json.loads((local_platform.settings.sources_dir / "api" / "products.json").read_text())
    assert active == sum(p["active"] for p in products)
    assert round(price, 2) == round(sum(p["unit_price"] for p in products), 2)


def test_every_source_stages_all_its_rows_then_a_second_run_lands_nothing_and_a_third_only_what_changed(
    local_platform: LocalPlatform,
) -> None:
    """One test: the later runs need the first, and a first run of every source is the slow part."""
    assert local_platform.materialize_ingestion().success
    _assert_every_source_staged_all_its_rows(local_platform)
    counts = _staged_counts(local_platform)

    sources = local_platform.settings.sources_dir
    looked_back = _in_lookback_window(sources / "shop.sqlite", ("customers", "payments"))
    second = local_platform.materialize_ingestion()
    assert second.success
    assert _raw_rows(second) == {**dict.fromkeys(STAGED_TABLES, 0), **looked_back}, (
        "nothing new: only shop_db's lookback window is read again"
    )
    assert _staged_counts(local_platform) == counts, "re-read rows are upserted by key, not added"

    with sqlite3.connect(sources / "shop.sqlite") as db:
        db.execute(
            "UPDATE customers SET country = 'IE', updated_at = '2030-01-01 00:00:00' WHERE customer_id = 1"
        )
        db.execute(
            "INSERT INTO customers VALUES (99999, 'new@example.com', 'New', 'Customer', 'DE', "
            "'2030-01-01 00:00:00', '2030-01-01 00:00:00')"
        )
    events = sources / "files" / "shop" / "web_events" / "web_events_late.jsonl.gz"
    with gzip.open(events, "wt") as handle:
        handle.write(
            '{"event_id":"ev-900000001","session_id":"sess-900000001","customer_id":1,"event_type":"page_view",'
            '"event_ts":"2030-01-01 00:00:01","url":"/"}\n'
            "{this line is not json}\n"
        )

    third = local_platform.materialize_ingestion()
    assert third.success
    landed = _raw_rows(third)
    assert landed == {
        **dict.fromkeys(STAGED_TABLES, 0),
        **looked_back,
        "customers": 2 + looked_back["customers"],
        "web_events": 1,
    }
    raw_events = next(
        e.materialization.metadata
        for e in third.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["raw", "shop", "web_events"])
    )
    assert raw_events["malformed_records"].value == 1
    assert _staged_counts(local_platform) == {
        **counts,
        "customers": counts["customers"] + 1,
        "web_events": counts["web_events"] + 1,
    }
    ((country,),) = local_platform.warehouse.query(
        "SELECT country FROM staged.shop_db__customers WHERE customer_id = 1"
    )
    assert country == "IE"
