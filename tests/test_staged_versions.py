"""Which version of a key is staged when several extractions landed it: the latest good one. Duplicates
within one extraction stay for the contract to report; a correction that breaks a rule is quarantined and
the version before it stays staged (as an incremental upsert of the good rows leaves it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from platform_assets.catalog.model import Source
from platform_assets.quality.quarantine import StagingSplit
from platform_assets.staging.sql import staging_select
from resources.landing.zone import Lineage, write_parquet
from resources.warehouses.duckdb_file_rows import StagingDatabase

ENTITY = Source.model_validate(
    {
        "source": "acme",
        "connection": {"kind": "files", "root": "/deliveries"},
        "entities": {
            "orders": {
                "file": {"format": "csv", "path": "*.csv"},
                "primary_key": ["order_id"],
                "columns": {
                    "order_id": {"type": "integer"},
                    "status": {"type": "string", "allowed_values": ["placed", "paid", "shipped", "copy"]},
                },
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


def _split(files: list[Path], tmp_path: Path) -> tuple[list[tuple], list[tuple]]:
    """(staged rows, quarantined rows) as (order_id, status), sorted."""
    select = staging_select(ENTITY, files, {"order_id", "status"}, "run")
    split = StagingSplit(
        select,
        ENTITY,
        {},
        StagingDatabase(tmp_path / "scratch.duckdb"),
        ("staged", "orders"),
        spill_dir=tmp_path,
        batch_rows=1000,
    )
    broken = [json.loads(text) for text in split.quarantine_rows("a", "r").read_all()["row_json"].to_pylist()]
    staged = pa.Table.from_batches(list(split.staged_rows())).to_pylist()
    return (
        sorted(((row["order_id"], row["status"]) for row in staged), key=str),
        sorted({(row["order_id"], row["status"]) for row in broken}, key=str),
    )


def test_each_key_comes_from_its_latest_extraction_and_duplicates_in_one_stay(tmp_path: Path) -> None:
    first = _land(tmp_path / "a.parquet", 1, [("1", "placed"), ("2", "placed"), ("3", "placed"), (None, "x")])
    first_part_two = _land(tmp_path / "b.parquet", 1, [("5", "placed"), ("5", "copy")])
    second = _land(tmp_path / "c.parquet", 2, [("2", "paid"), ("3", "paid"), (None, "paid")])
    third = _land(tmp_path / "d.parquet", 3, [("2", "shipped"), ("4", "placed"), ("4", "copy")])
    staged, quarantined = _split([third, first, second, first_part_two], tmp_path)
    assert staged == sorted(
        [(1, "placed"), (2, "shipped"), (3, "paid"), (4, "copy"), (4, "placed"), (5, "copy"), (5, "placed")],
        key=str,
    )
    assert quarantined == sorted([(None, "x"), (None, "paid")], key=str)  # a NULL key supersedes nothing


def test_a_correction_that_breaks_a_rule_is_quarantined_and_the_version_before_it_stays(
    tmp_path: Path,
) -> None:
    first = _land(tmp_path / "a.parquet", 1, [("1", "placed"), ("2", "placed"), ("3", "BROKEN")])
    second = _land(tmp_path / "b.parquet", 2, [("1", "BROKEN"), ("2", "paid"), ("3", "paid")])
    staged, quarantined = _split([first, second], tmp_path)
    assert staged == [(1, "placed"), (2, "paid"), (3, "paid")]
    assert quarantined == [(1, "BROKEN")]  # key 3's broken first version was replaced by a good one


def test_one_extraction_keeps_every_row(tmp_path: Path) -> None:
    files = [
        _land(tmp_path / "a.parquet", 1, [("1", "placed"), ("1", "copy")]),
        _land(tmp_path / "b.parquet", 1, [("2", "placed")]),
    ]
    staged, _ = _split(files, tmp_path)
    assert staged == [(1, "copy"), (1, "placed"), (2, "placed")]
