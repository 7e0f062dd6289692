"""Landing is atomic and resumable: parts are written in flight and only committed files are visible; a
part that dies half-way leaves nothing; a checkpoint survives for the next attempt; two runs cannot land the
same entity at once; every landed row carries its lineage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.landing.zone import LandingBusyError, LandingZone, Lineage, QuarantineFile, write_parquet

LINEAGE = Lineage(
    source="shop.orders", extracted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), run_id="run-1"
)


def _batches(ids: list[str]) -> Iterator[pa.RecordBatch]:
    yield pa.RecordBatch.from_pydict({"id": ids})


def test_parts_become_visible_only_when_committed_with_lineage_columns(tmp_path: Path) -> None:
    zone = LandingZone(root=str(tmp_path))
    with zone.extraction("shop", "orders") as inflight:
        inflight.write("run-1-a.parquet", _batches(["1", "2"]), LINEAGE)
        assert zone.committed_files("shop", "orders") == []
        (landed,) = inflight.commit("2026-01-02")
    assert landed.path == tmp_path / "shop" / "orders" / "load_date=2026-01-02" / "run-1-a.parquet"
    assert landed.rows == 2 and landed.bytes == landed.path.stat().st_size
    assert zone.committed_files("shop", "orders") == [landed.path]
    table = pq.read_table(landed.path)
    assert table.column_names == ["id", "_source", "_extracted_at", "_run_id"]
    assert table.column("_source").to_pylist() == ["shop.orders"] * 2
    assert table.column("_extracted_at").to_pylist()[0] == LINEAGE.extracted_at
    assert zone.find_committed("shop", "orders", "run-1-a.parquet") == landed.path


def test_a_part_that_dies_half_way_leaves_nothing_and_the_checkpoint_survives(tmp_path: Path) -> None:
    zone = LandingZone(root=str(tmp_path))

    def dies_half_way() -> Iterator[pa.RecordBatch]:
        yield from _batches(["1", "2"])
        raise ConnectionError("source went away")

    with zone.extraction("shop", "orders") as inflight:
        inflight.write("part-1.parquet", _batches(["1"]), LINEAGE)
        inflight.save_checkpoint({"after_page": 1})
        with pytest.raises(ConnectionError):
            inflight.write("part-2.parquet", dies_half_way(), LINEAGE)
        assert [p.name for p in inflight.parts()] == ["part-1.parquet"]
        assert sorted(p.name for p in inflight.directory.iterdir()) == [
            ".lock",
            "checkpoint.json",
            "part-1.parquet",
        ]
    with zone.extraction("shop", "orders") as retry:
        assert retry.checkpoint() == {"after_page": 1}
        retry.write("part-2.parquet", _batches(["2"]), LINEAGE)
        committed = retry.commit("2026-01-02")
        assert retry.checkpoint() is None
    assert [f.path.name for f in committed] == ["part-1.parquet", "part-2.parquet"]


def test_an_empty_stream_lands_no_file(tmp_path: Path) -> None:
    with LandingZone(root=str(tmp_path)).extraction("shop", "orders") as inflight:
        assert inflight.write("empty.parquet", iter([]), LINEAGE) is None
        assert inflight.commit("2026-01-02") == []


def test_two_extractions_of_one_entity_cannot_run_at_once(tmp_path: Path) -> None:
    zone = LandingZone(root=str(tmp_path))
    busy = pytest.raises(LandingBusyError, match="Another run is landing")
    with zone.extraction("shop", "orders"), busy, zone.extraction("shop", "orders"):
        pass
    with zone.extraction("shop", "customers"):
        pass


def test_quarantine_streams_set_aside_records_and_keeps_examples(tmp_path: Path) -> None:
    quarantine = QuarantineFile(tmp_path / "q" / "run-1.parquet", LINEAGE)
    for line in range(1, 2501):
        quarantine.add({"file": "a.csv", "line": line, "error": "3 fields, expected 4", "text": "x,y,z"})
    quarantine.close()
    table = pq.read_table(quarantine.path)
    assert quarantine.count == table.num_rows == 2500
    assert table.column("line").to_pylist()[-1] == 2500
    assert len(quarantine.examples) == QuarantineFile.EXAMPLES


def test_small_batches_land_as_few_row_groups_in_order(tmp_path: Path) -> None:
    """An API's pages (7 records each) are gathered into row groups, not one row group a page: 25,004 rows
    used to land as 3,572 row groups and a 4 MB footer."""
    pages = (pa.record_batch({"id": list(range(n * 7, n * 7 + 7))}) for n in range(3572))
    lineage = Lineage("src.pages", datetime(2026, 1, 1, tzinfo=UTC), "run")
    landed = write_parquet(tmp_path / "pages.parquet", pages, lineage, row_group_rows=10_000)
    assert landed is not None and landed.rows == 25_004
    metadata = pq.read_metadata(tmp_path / "pages.parquet")
    assert metadata.num_row_groups == 3
    assert pq.read_table(tmp_path / "pages.parquet").column("id").to_pylist() == list(range(25_004))
