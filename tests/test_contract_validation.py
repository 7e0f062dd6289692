"""The schema contract, validated batch by batch: rules that need the whole table (key uniqueness) still
see across batches, and each violation is tied to its row's key, file and record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.keys import STAGED_SCHEMA, staged_table
from platform_assets.quality.contract_validation import MAX_REPORTED_VIOLATIONS, validate_staged_table
from platform_assets.staging.sql import staging_select
from resources.landing.zone import Lineage, write_parquet
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse

SOURCE = Source.model_validate(
    {
        "source": "shop",
        "connection": {"kind": "files", "root": "/deliveries"},
        "entities": {
            "orders": {
                "file": {"format": "csv", "path": "*.csv"},
                "primary_key": ["order_id"],
                "columns": {
                    "order_id": {"type": "integer", "nullable": False},
                    "email": {"type": "string", "unique": True},
                    "status": {"type": "string", "allowed_values": ["paid", "shipped"]},
                    "amount": {"type": "double", "min": 0, "max": 1000},
                },
            }
        },
    }
)
ITEM = CatalogEntity(SOURCE, "orders", SOURCE.entities["orders"])
LINEAGE = Lineage(source="shop.orders", extracted_at=datetime(2026, 1, 2, tzinfo=UTC), run_id="extract-1")


def _stage(tmp_path: Path, rows: dict[str, list[str | None]]) -> DuckDBWarehouse:
    """Land `rows` (all text, as a delivery would be) and stage them the way the staged asset does."""
    count = len(next(iter(rows.values())))
    batch = pa.RecordBatch.from_pydict(
        {
            **{name: pa.array(values, pa.string()) for name, values in rows.items()},
            "_file": pa.array(["orders.csv"] * count),
            "_record": pa.array(range(1, count + 1), pa.int64()),
        }
    )
    landed = write_parquet(tmp_path / "landed.parquet", [batch], LINEAGE)
    assert landed is not None
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    select = staging_select(ITEM.entity, [landed.path], set(landed.schema.names), "run-1")
    with warehouse.connection() as con:
        con.execute(f"CREATE SCHEMA {STAGED_SCHEMA}")
        con.execute(f"CREATE TABLE {STAGED_SCHEMA}.{staged_table('shop', 'orders')} AS {select}")
    return warehouse


def test_clean_table_passes(tmp_path: Path) -> None:
    warehouse = _stage(
        tmp_path,
        {
            "order_id": ["1", "2", "3"],
            "email": ["a@x", "b@x", None],
            "status": ["paid", "shipped", "paid"],
            "amount": ["1.50", "0", "1000"],
        },
    )
    report = validate_staged_table(warehouse, ITEM, batch_rows=2)
    assert report.passed
    assert report.rows_checked == 3


def test_duplicates_are_found_across_batches_and_rows_are_named(tmp_path: Path) -> None:
    warehouse = _stage(
        tmp_path,
        {
            "order_id": ["1", "2", "3", "4", "1", "6"],
            "email": ["a@x", "b@x", "c@x", "b@x", "e@x", "f@x"],
            "status": ["paid", "lost", "paid", "paid", "paid", "paid"],
            "amount": ["1", "2", "3000", "4", "5", "6"],
        },
    )
    report = validate_staged_table(warehouse, ITEM, batch_rows=2)
    assert not report.passed
    assert report.rows_checked == 6
    assert dict(report.counts) == {
        "order_id: unique": 2,
        "email: unique": 2,
        "status: allowed_values": 1,
        "amount: max": 1,
    }
    duplicate_keys = sorted(
        (v.key["order_id"], v.source_record) for v in report.examples if v.column == "order_id"
    )
    assert duplicate_keys == [("1", 1), ("1", 5)]
    (bad_status,) = [v for v in report.examples if v.column == "status"]
    assert (bad_status.key, bad_status.value, bad_status.source_record) == ({"order_id": "2"}, "lost", 2)


def test_reported_rows_are_capped_but_counts_are_complete(tmp_path: Path) -> None:
    rows = 3 * MAX_REPORTED_VIOLATIONS
    warehouse = _stage(
        tmp_path,
        {
            "order_id": [str(i) for i in range(rows)],
            "email": [None] * rows,
            "status": ["paid"] * rows,
            "amount": ["-1"] * rows,
        },
    )
    report = validate_staged_table(warehouse, ITEM, batch_rows=7)
    assert report.counts == {"amount: min": rows}
    assert len(report.examples) == MAX_REPORTED_VIOLATIONS
