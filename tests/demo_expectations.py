"""What the demo world's tables must hold after a whole-graph run, read straight from the demo's source
files, database and API data (never through the platform), and the row counts of the warehouse's tables,
each checked for a repeated key: shared by the whole-graph tests on BigQuery and on Celery workers."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from resources.warehouses.base import Warehouse

STAGED_KEYS = {
    "shop__orders": ("order_id",),
    "shop__order_items": ("order_id", "line_no"),
    "shop__web_events": ("event_id",),
    "shop_db__customers": ("customer_id",),
    "shop_db__payments": ("payment_id",),
    "shop_api__products": ("product_id",),
}
"""Each staged table's primary key (the catalog's), written out: a key repeated is a duplicated row."""
MART_KEYS = {
    "fct_orders": ("order_id",),
    "dim_customers": ("customer_id",),
    "fct_customer_lifetime_value": ("customer_id",),
    "fct_daily_revenue": ("order_date",),
    "fct_web_funnel": ("session_date",),
}
DATABASE_TABLES = ("customers", "payments")
"""The shop_db tables: an incremental run reads again the rows in the lookback window before the
watermark (and upserts them); files and the API land nothing new."""


def source_orders(sources: Path) -> pd.DataFrame:
    """Every order delivered, its latest version only (a later file may repeat an order, changed)."""
    files = sorted((sources / "files" / "shop" / "orders").glob("*.csv"))
    orders = pd.concat([pacsv.read_csv(path).to_pandas() for path in files], ignore_index=True)
    return orders.drop_duplicates("order_id", keep="last")


def source_web_events(sources: Path) -> pd.DataFrame:
    files = sorted((sources / "files" / "shop" / "web_events").glob("*.jsonl.gz"))
    return pd.concat(
        [pd.read_json(path, lines=True, compression="gzip") for path in files], ignore_index=True
    )


def expected_staged(sources: Path) -> dict[str, int]:
    """Rows of each staged table, straight from the demo's source files, database and API data."""
    items = (sources / "files" / "shop" / "order_items").glob("*.parquet")
    with sqlite3.connect(sources / "shop.sqlite") as db:
        rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in DATABASE_TABLES}
    return {
        "shop__orders": len(source_orders(sources)),
        "shop__order_items": sum(pq.read_metadata(path).num_rows for path in items),
        "shop__web_events": source_web_events(sources)["event_id"].nunique(),
        "shop_db__customers": rows["customers"],
        "shop_db__payments": rows["payments"],
        "shop_api__products": len(json.loads((sources / "api" / "products.json").read_text())),
    }


def expected_marts(sources: Path) -> dict[str, int]:
    """Rows of each mart by what it is a row of: an order, a customer, a day with orders, a day on which
    sessions started."""
    orders = source_orders(sources)
    events = source_web_events(sources)
    with sqlite3.connect(sources / "shop.sqlite") as db:
        ((customers,),) = db.execute("SELECT count(*) FROM customers").fetchall()
    return {
        "fct_orders": len(orders),
        "dim_customers": customers,
        "fct_customer_lifetime_value": customers,
        "fct_daily_revenue": pd.to_datetime(orders["order_ts"]).dt.date.nunique(),
        "fct_web_funnel": pd.to_datetime(events.groupby("session_id")["event_ts"].min()).dt.date.nunique(),
    }


def key_counts(warehouse: Warehouse, schema: str, keys: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Rows of each table, after asserting that none repeats its key."""
    counts = {}
    for table, key in keys.items():
        columns = ", ".join(warehouse.quote(column) for column in key)
        ref = warehouse.table_ref(schema, table)
        ((rows, distinct),) = warehouse.query(
            f"SELECT (SELECT count(*) FROM {ref}), "
            f"(SELECT count(*) FROM (SELECT {columns} FROM {ref} GROUP BY {columns}) AS grouped)"
        )
        assert rows == distinct, f"{ref}: {rows - distinct} row(s) repeat the key {key}"
        counts[table] = rows
    return counts


def deliver_orders(orders_dir: Path, name: str, first_id: int, count: int) -> list[int]:
    """A new orders export (same columns as the shop's) with order ids no earlier file used; written under a
    temporary name and renamed, as a delivery tool should, so the sensor never lists half a file. The amounts
    are 0: no order_items arrive with them, and the dbt test `assert_fct_orders_amount_matches_items`
    (amount = sum of its lines) rightly fails a delivery run whose orders disagree with their lines."""
    ids = list(range(first_id, first_id + count))
    partial = orders_dir / f".{name}.part"
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "customer_id", "order_ts", "status", "currency", "amount", "updated_at"])
        for offset, order_id in enumerate(ids):
            ts = f"2026-01-{10 + offset:02d} 12:00:00"
            writer.writerow([order_id, 1 + offset, ts, "placed", "EUR", "0.00", ts])
    partial.rename(orders_dir / name)
    return ids
