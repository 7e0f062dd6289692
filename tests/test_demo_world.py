"""The demo world generator: determinism, referential integrity, sizes, chunking and the CLI."""

import gzip
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from demo_shop import DemoWorld, generate_demo_world
from demo_shop.cli import main

SCALE = 0.1
SMALL_CHUNK = 300
"""Small enough that orders (1,000 at SCALE) and events (3,000) span several chunk files."""
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    """One chunked world shared by the read-only checks, so integrity is tested across chunk boundaries."""
    return generate_demo_world(tmp_path_factory.mktemp("world"), seed=7, scale=SCALE, chunk_rows=SMALL_CHUNK)


def _manifest(world: DemoWorld) -> dict:
    return json.loads((world.out_dir / "manifest.json").read_text())


def _orders(world: DemoWorld) -> pd.DataFrame:
    """All order chunks, with amounts kept as text so their formatting can be checked too."""
    frames = [pd.read_csv(world.out_dir / path, dtype={"amount": str}) for path in world.files["orders"]]
    return pd.concat(frames, ignore_index=True)


def _items(world: DemoWorld) -> pd.DataFrame:
    return pd.concat(
        [pq.read_table(world.out_dir / path).to_pandas() for path in world.files["order_items"]],
        ignore_index=True,
    )


def _events(world: DemoWorld) -> list[dict]:
    events = []
    for path in world.files["web_events"]:
        with gzip.open(world.out_dir / path, "rt", encoding="utf-8") as lines:
            events += [json.loads(line) for line in lines]
    return events


def _products(world: DemoWorld) -> list[dict]:
    return json.loads((world.out_dir / "api" / "products.json").read_text())


def _query(world: DemoWorld, sql: str) -> pd.DataFrame:
    with sqlite3.connect(world.out_dir / "shop.sqlite") as connection:
        return pd.read_sql_query(sql, connection)


def _file_bytes(world: DemoWorld) -> dict[str, bytes]:
    files = (path for path in world.out_dir.rglob("*") if path.is_file())
    return {path.relative_to(world.out_dir).as_posix(): path.read_bytes() for path in files}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = _file_bytes(generate_demo_world(tmp_path / "a", seed=3, scale=SCALE, chunk_rows=SMALL_CHUNK))
    second = _file_bytes(generate_demo_world(tmp_path / "b", seed=3, scale=SCALE, chunk_rows=SMALL_CHUNK))

    assert first.keys() == second.keys()
    assert len(first) > 6
    assert [name for name in first if first[name] != second[name]] == []


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    first = _file_bytes(generate_demo_world(tmp_path / "a", seed=3, scale=SCALE))
    second = _file_bytes(generate_demo_world(tmp_path / "b", seed=4, scale=SCALE))

    assert first.keys() == second.keys()
    assert [name for name in first if first[name] == second[name]] == []


def test_orders_are_well_formed(world: DemoWorld) -> None:
    orders = _orders(world)

    assert orders.columns.tolist() == [
        "order_id", "customer_id", "order_ts", "status", "currency", "amount", "updated_at",
    ]  # fmt: skip
    assert orders["order_id"].tolist() == list(range(1, len(orders) + 1))
    assert orders["order_ts"].str.fullmatch(TIMESTAMP.pattern).all()
    assert orders["updated_at"].str.fullmatch(TIMESTAMP.pattern).all()
    assert (orders["updated_at"] >= orders["order_ts"]).all()
    assert orders["order_ts"].min() >= "2026-01-01 00:00:00"
    assert orders["order_ts"].max() < "2026-04-02 00:00:00"
    assert orders["amount"].str.fullmatch(r"\d+\.\d\d").all()
    assert set(orders["currency"]) == {"EUR"}
    assert set(orders["status"]) <= {"placed", "paid", "shipped", "delivered", "cancelled", "returned"}
    assert 0.02 < (orders["status"] == "cancelled").mean() < 0.08


def test_orders_reference_existing_customers(world: DemoWorld) -> None:
    customer_ids = set(_query(world, "SELECT customer_id FROM customers")["customer_id"])

    assert set(_orders(world)["customer_id"]) <= customer_ids


def test_order_items_reference_existing_orders_and_products_at_their_price(world: DemoWorld) -> None:
    items = _items(world)
    prices = {product["product_id"]: product["unit_price"] for product in _products(world)}

    assert set(items["order_id"]) == set(_orders(world)["order_id"])
    assert set(items["product_id"]) <= prices.keys()
    assert (items["unit_price"] == items["product_id"].map(prices)).all()
    assert items["quantity"].between(1, 5).all()
    line_numbers = items.groupby("order_id")["line_no"].agg(["min", "max", "count"])
    assert (line_numbers["min"] == 1).all()
    assert (line_numbers["max"] == line_numbers["count"]).all()


def test_order_amount_is_the_sum_of_its_items_to_the_cent(world: DemoWorld) -> None:
    items = _items(world)
    item_cents = (items["quantity"] * items["unit_price"] * 100).round().astype(int)
    summed = item_cents.groupby(items["order_id"]).sum()
    orders = _orders(world).set_index("order_id")
    order_cents = orders["amount"].str.replace(".", "", regex=False).astype(int)

    assert (order_cents == summed.reindex(orders.index)).all()


def test_one_payment_per_non_cancelled_order_for_the_order_amount(world: DemoWorld) -> None:
    orders = _orders(world).set_index("order_id")
    payments = _query(world, "SELECT * FROM payments")

    assert payments["order_id"].is_unique
    assert set(payments["order_id"]) == set(orders.index[orders["status"] != "cancelled"])
    assert payments["payment_id"].tolist() == list(range(1, len(payments) + 1))
    paid_orders = orders.loc[payments["order_id"]]
    assert (payments["amount"].round(2).to_numpy() == paid_orders["amount"].astype(float).to_numpy()).all()
    refunded = paid_orders["status"] == "returned"
    assert payments["status"].tolist() == refunded.map({True: "refunded", False: "succeeded"}).tolist()
    assert set(payments["method"]) <= {"card", "paypal", "bank_transfer", "gift_card"}
    assert (payments["updated_at"] >= payments["paid_at"]).all()


def test_sqlite_tables_are_indexed_on_updated_at(world: DemoWorld) -> None:
    indexes = _query(world, "SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql NOT NULL")

    assert set(indexes["tbl_name"]) == {"customers", "payments"}
    assert indexes["sql"].str.contains("(updated_at)", regex=False).all()
    customers = _query(world, "SELECT * FROM customers")
    assert customers["email"].is_unique
    assert (customers["updated_at"] >= customers["created_at"]).all()
    assert customers["country"].str.fullmatch("[A-Z]{2}").all()


def test_products_api_payload(world: DemoWorld) -> None:
    products = _products(world)

    assert [product["product_id"] for product in products] == list(range(1, len(products) + 1))
    assert all(re.fullmatch(r"SKU-\d{5}", product["sku"]) for product in products)
    assert all(1.0 <= product["unit_price"] <= 500.0 for product in products)
    assert all(round(product["unit_price"], 2) == product["unit_price"] for product in products)
    assert all(isinstance(product["active"], bool) for product in products)
    assert all(TIMESTAMP.fullmatch(product["updated_at"]) for product in products)


def test_web_events_form_a_funnel_of_sessions(world: DemoWorld) -> None:
    events = pd.DataFrame(_events(world))
    customer_ids = set(_query(world, "SELECT customer_id FROM customers")["customer_id"])

    assert events["event_id"].tolist() == [f"ev-{number:09d}" for number in range(1, len(events) + 1)]
    assert events["event_ts"].str.fullmatch(TIMESTAMP.pattern).all()
    assert 0.3 < events["customer_id"].isna().mean() < 0.5
    assert set(events["customer_id"].dropna().astype(int)) <= customer_ids
    assert (events.groupby("session_id")["customer_id"].nunique(dropna=False) == 1).all()
    funnel = events["event_type"].value_counts()
    stages = ["page_view", "product_view", "add_to_cart", "checkout", "purchase"]
    assert funnel[stages].is_monotonic_decreasing
    assert events["url"].str.startswith("/").all()


def test_row_counts_match_manifest_and_files(world: DemoWorld) -> None:
    manifest = _manifest(world)

    assert manifest["seed"] == 7
    assert manifest["scale"] == SCALE
    assert manifest["row_counts"] == world.row_counts
    assert manifest["files"] == world.files
    assert world.row_counts == {
        "products": len(_products(world)),
        "customers": len(_query(world, "SELECT 1 FROM customers")),
        "orders": len(_orders(world)),
        "order_items": len(_items(world)),
        "payments": len(_query(world, "SELECT 1 FROM payments")),
        "web_events": len(_events(world)),
    }


def test_sizes_follow_the_scale(tmp_path: Path) -> None:
    full = generate_demo_world(tmp_path / "full", seed=1, scale=1.0).row_counts
    tiny = generate_demo_world(tmp_path / "tiny", seed=1, scale=0.00001).row_counts

    assert {entity: full[entity] for entity in ("customers", "products", "orders", "web_events")} == {
        "customers": 1_000,
        "products": 200,
        "orders": 10_000,
        "web_events": 30_000,
    }
    assert 2.3 < full["order_items"] / full["orders"] < 2.7
    assert 0.93 < full["payments"] / full["orders"] < 0.97
    assert {entity: tiny[entity] for entity in ("customers", "products", "orders", "web_events")} == {
        "customers": 1,
        "products": 1,
        "orders": 1,
        "web_events": 1,
    }


def test_small_chunks_split_files_and_regeneration_prunes_stale_chunks(tmp_path: Path) -> None:
    big = generate_demo_world(tmp_path, seed=5, scale=SCALE, chunk_rows=SMALL_CHUNK)
    orders_dir = tmp_path / "files" / "shop" / "orders"
    assert sorted(path.name for path in orders_dir.iterdir()) == [
        "orders_00001.csv", "orders_00002.csv", "orders_00003.csv", "orders_00004.csv",
    ]  # fmt: skip
    assert len(big.files["web_events"]) == 10

    small = generate_demo_world(tmp_path, seed=5, scale=SCALE / 2, chunk_rows=SMALL_CHUNK)

    on_disk = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()}
    assert on_disk == {path for paths in small.files.values() for path in paths} | {"manifest.json"}
    assert len(small.files["orders"]) == 2
    assert len(small.files["web_events"]) == 5


@pytest.mark.parametrize(("kwargs", "message"), [({"scale": 0}, "scale"), ({"chunk_rows": 0}, "chunk_rows")])
def test_invalid_arguments_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_demo_world(tmp_path, **kwargs)


def test_cli_prints_one_line_per_entity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--seed", "9", "--scale", "0.01"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [
        "products", "customers", "orders", "order_items", "payments", "web_events",
    ]  # fmt: skip
    assert lines[3].split()[1:3] == ["100", "rows"]
    assert (tmp_path / "manifest.json").exists()


def test_cli_rejects_zero_scale_naming_the_flag(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo_shop", "--out", str(tmp_path), "--scale", "0"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    )

    assert result.returncode != 0
    assert "--scale" in result.stderr
    assert not (tmp_path / "manifest.json").exists()
