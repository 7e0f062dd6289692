"""Which landed rows the staging SELECT keeps: each key from its latest extraction, duplicates within one
extraction kept for the contract to report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from platform_assets.catalog_model import Source
from platform_assets.staging_sql import staging_select
from resources.landing import Lineage, write_parquet

ENTITY = Source.model_validate(
    {
        "source": "acme",
        "connection": {"kind": "files", "root": "/deliveries"},
        "entities": {
            "orders": {
                "file": {"format": "csv", "path": "*.csv"},
                "primary_key": ["order_id"],
                "columns": {"order_id": {"type": "integer"}, "status": {"type": "string"}},
            }
        },
    }
).entities["orders"]


def _land(path: Path, day: int, rows: list[tuple[str | None, str]]) -> Path:
    batch = pa.RecordBatch.from_pydict(
        {"order_id": [key for key, _ in rows], "status": [status for _, status in rows]},
        schema=pa.schema([("order_id", pa.string()), ("status", pa.string())]),
    )
    lineage = Lineage(source="acme.orders", extracted_at=datetime(2026, 1, day, tzinfo=UTC), run_id=f"r{day}")
    landed = write_parquet(path, [batch], lineage)
    assert landed is not None
    return landed.path


def _staged(files: list[Path]) -> list[tuple]:
    select = staging_select(ENTITY, files, {"order_id", "status"}, "run")
    return duckdb.sql(f"SELECT order_id, status FROM ({select}) ORDER BY order_id, status").fetchall()


def test_each_key_comes_from_its_latest_extraction_and_duplicates_in_one_stay(tmp_path: Path) -> None:
    first = _land(tmp_path / "a.parquet", 1, [("1", "placed"), ("2", "placed"), ("3", "placed"), (None, "x")])
    first_part_two = _land(tmp_path / "b.parquet", 1, [("5", "placed"), ("5", "copy")])
    second = _land(tmp_path / "c.parquet", 2, [("2", "paid"), ("3", "paid"), (None, "y")])
    third = _land(tmp_path / "d.parquet", 3, [("2", "shipped"), ("4", "new"), ("4", "again")])
    assert _staged([third, first, second, first_part_two]) == [
        (1, "placed"),
        (2, "shipped"),
        (3, "paid"),
        (4, "again"),
        (4, "new"),
        (5, "copy"),
        (5, "placed"),
        (None, "x"),
        (None, "y"),
    ]


def test_one_extraction_keeps_every_row(tmp_path: Path) -> None:
    files = [
        _land(tmp_path / "a.parquet", 1, [("1", "placed"), ("1", "copy")]),
        _land(tmp_path / "b.parquet", 1, [("2", "placed")]),
    ]
    assert _staged(files) == [(1, "copy"), (1, "placed"), (2, "placed")]
