"""Landing is atomic: a landing that dies half-way leaves no partial file and keeps what was landed before;
landing again under the same run id replaces instead of duplicating."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.landing import LandingZone

SCHEMA = pa.schema([pa.field("id", pa.string())])


def _batches(ids: list[str]) -> Iterator[pa.RecordBatch]:
    yield pa.RecordBatch.from_pydict({"id": ids}, schema=SCHEMA)


def test_lands_batches_into_one_parquet_file_under_the_load_date(tmp_path: Path) -> None:
    landed = LandingZone(root=str(tmp_path)).land(
        "shop", "orders", "2026-01-02", "run-1", SCHEMA, _batches(["1", "2"])
    )
    assert landed.path == tmp_path / "shop" / "orders" / "load_date=2026-01-02" / "run-1.parquet"
    assert landed.rows == 2
    assert landed.bytes == landed.path.stat().st_size
    assert pq.read_table(landed.path).column("id").to_pylist() == ["1", "2"]


def test_a_failed_landing_leaves_no_partial_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    zone = LandingZone(root=str(tmp_path))
    first = zone.land("shop", "orders", "2026-01-02", "run-1", SCHEMA, _batches(["1"]))

    def dies_half_way() -> Iterator[pa.RecordBatch]:
        yield from _batches(["1", "2"])
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        zone.land("shop", "orders", "2026-01-02", "run-1", SCHEMA, dies_half_way())
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["run-1.parquet"]
    assert pq.read_table(first.path).column("id").to_pylist() == ["1"]


def test_landing_again_with_the_same_run_id_replaces_the_file(tmp_path: Path) -> None:
    zone = LandingZone(root=str(tmp_path))
    zone.land("shop", "orders", "2026-01-02", "run-1", SCHEMA, _batches(["1"]))
    again = zone.land("shop", "orders", "2026-01-02", "run-1", SCHEMA, _batches(["1", "2"]))
    assert len(list(again.path.parent.glob("*.parquet"))) == 1
    assert pq.read_table(again.path).num_rows == 2
