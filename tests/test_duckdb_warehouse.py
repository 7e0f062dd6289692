"""The DuckDB warehouse: atomic table replacement, and patience with another process's write lock
(dbt runs as a subprocess on the same file)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from tombstone_upserts import AFTER, BEFORE, BEFORE_ROWS, KEY, NEW_TABLE, UPSERT, WRITTEN, batches_of_two

from resources.warehouses.duckdb_file_rows import DuckDBFileRows, StagingDatabase
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse, qualified_name, quote_identifier
from resources.warehouses.load import PartitionSlice, WarehouseLoadError

HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process with the database open for writing, as a running dbt build would have it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_identifiers_are_quoted_so_names_never_become_sql() -> None:
    assert quote_identifier('a"; DROP TABLE x; --') == '"a""; DROP TABLE x; --"'
    assert qualified_name("staged", "shop__orders") == '"staged"."shop__orders"'


def test_waits_for_another_process_to_release_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold_lock(path, seconds=1.5)
    assert DuckDBWarehouse(path=str(path), lock_timeout_seconds=60).query("SELECT 42") == [(42,)]
    holder.wait(timeout=30)


def test_gives_up_after_the_lock_timeout_with_duckdbs_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold_lock(path, seconds=10)
    try:
        with pytest.raises(duckdb.IOException, match="lock"):
            DuckDBWarehouse(path=str(path), lock_timeout_seconds=0.5).query("SELECT 1")
    finally:
        holder.kill()
        holder.wait(timeout=30)


def _orders(ids: list[int], amounts: list[float]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"order_id": ids, "amount": amounts})


def _table(warehouse: DuckDBWarehouse) -> list[tuple]:
    return warehouse.query('SELECT * FROM "staged"."orders" ORDER BY order_id')


def test_load_replaces_appends_and_upserts_by_primary_key(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    first = warehouse.load("staged", "orders", [_orders([1, 2], [1.0, 2.0])], mode="replace")
    assert (first.rows, first.columns) == (2, [("order_id", "BIGINT"), ("amount", "DOUBLE")])
    warehouse.load("staged", "orders", [_orders([3], [3.0])], mode="append")
    upserted = warehouse.load(
        "staged", "orders", [_orders([2, 4], [20.0, 4.0])], mode="upsert", primary_key=["order_id"]
    )
    assert upserted.rows == 2 and upserted.bytes > 0
    assert _table(warehouse) == [(1, 1.0), (2, 20.0), (3, 3.0), (4, 4.0)]
    warehouse.load("staged", "orders", [_orders([9], [9.0])], mode="replace")
    assert _table(warehouse) == [(9, 9.0)]


def test_load_adds_new_columns_and_refuses_changed_types(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.load("staged", "orders", [_orders([1], [1.0])], mode="replace")
    evolved = pa.RecordBatch.from_pydict({"order_id": [2], "amount": [2.0], "channel": ["web"]})
    result = warehouse.load("staged", "orders", [evolved], mode="upsert", primary_key=["order_id"])
    assert result.columns[-1] == ("channel", "VARCHAR")
    assert _table(warehouse) == [(1, 1.0, None), (2, 2.0, "web")]
    retyped = pa.RecordBatch.from_pydict({"order_id": [3], "amount": ["three"]})
    with pytest.raises(WarehouseLoadError, match=r'"orders".amount is DOUBLE but the data brings VARCHAR'):
        warehouse.load("staged", "orders", [retyped], mode="append")
    assert len(_table(warehouse)) == 2


def test_a_load_that_fails_mid_stream_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.load("staged", "orders", [_orders([1], [1.0])], mode="replace")

    def dies_half_way() -> Iterator[pa.RecordBatch]:
        yield _orders([1, 2], [10.0, 2.0])
        raise ConnectionError("source went away")

    for mode in ("replace", "append", "upsert"):
        with pytest.raises(ConnectionError):
            warehouse.load("staged", "orders", dies_half_way(), mode=mode, primary_key=["order_id"])
        assert _table(warehouse) == [(1, 1.0)], mode


def test_upsert_with_tombstones_deletes_their_keys_and_counts_only_written_rows(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.load("s", "t", batches_of_two(BEFORE), mode="replace")

    def dies_after_the_tombstones() -> Iterator[pa.RecordBatch]:
        yield next(batches_of_two(UPSERT))
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        warehouse.load("s", "t", dies_after_the_tombstones(), mode="upsert", primary_key=KEY)
    assert warehouse.query("SELECT id, name FROM s.t ORDER BY id") == BEFORE_ROWS
    result = warehouse.load("s", "t", batches_of_two(UPSERT), mode="upsert", primary_key=KEY)
    assert result.rows == WRITTEN and result.columns == [("id", "BIGINT"), ("name", "VARCHAR")]
    assert warehouse.query("SELECT id, name FROM s.t ORDER BY id") == AFTER
    fresh = warehouse.load("s", "fresh", batches_of_two(UPSERT), mode="upsert", primary_key=KEY)
    assert fresh.rows == WRITTEN and [name for name, _ in fresh.columns] == ["id", "name"]
    assert warehouse.query("SELECT id, name FROM s.fresh ORDER BY id") == NEW_TABLE


def test_upsert_without_a_primary_key_is_refused(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    with pytest.raises(WarehouseLoadError, match="needs a primary key"):
        warehouse.load("staged", "orders", [_orders([1], [1.0])], mode="upsert")


def test_replace_partitions_rewrites_only_the_given_partitions(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    day = pa.array(["2026-11-20", "2026-11-20", "2026-11-21"]).cast(pa.date32())
    first = pa.RecordBatch.from_pydict({"day": day, "amount": [1.0, 2.0, 3.0]})
    warehouse.load("staged", "daily", [first], mode="replace")
    rerun = pa.RecordBatch.from_pydict({"day": pa.array(["2026-11-20"]).cast(pa.date32()), "amount": [10.0]})
    warehouse.load(
        "staged",
        "daily",
        [rerun],
        mode="replace_partitions",
        partition=PartitionSlice("day", ("2026-11-20",)),
    )
    rows = warehouse.query("SELECT CAST(day AS VARCHAR), amount FROM staged.daily ORDER BY 1")
    assert rows == [("2026-11-20", 10.0), ("2026-11-21", 3.0)]
    only = warehouse.stream_table("staged", "daily", partition=PartitionSlice("day", ("2026-11-21",)))
    assert only.read_all().column("amount").to_pylist() == [3.0]


def test_replace_partitions_without_a_partition_is_refused(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    batch = pa.RecordBatch.from_pydict({"day": ["2026-11-20"]})
    with pytest.raises(WarehouseLoadError, match="needs partition="):
        warehouse.load("staged", "daily", [batch], mode="replace_partitions")


def test_stream_table_reads_the_chosen_columns_in_batches(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    batch = pa.RecordBatch.from_pydict({"id": list(range(10)), "name": [str(i) for i in range(10)]})
    warehouse.load("staged", "t", [batch], mode="replace")
    reader = warehouse.stream_table("staged", "t", columns=["name"], batch_rows=3)
    batches = list(reader)
    assert reader.schema.names == ["name"]
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]


def _built(database: StagingDatabase, rows: list[tuple[int, float, str | None]]) -> DuckDBFileRows:
    """A staging database as staging leaves it: a table with a rejection column, the good rows selected."""
    with duckdb.connect(str(database.path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS staged")
        con.execute(
            "CREATE TABLE staged.__staging_orders (order_id BIGINT, amount DOUBLE, _violations VARCHAR)"
        )
        con.executemany("INSERT INTO staged.__staging_orders VALUES (?, ?, ?)", rows)
    return DuckDBFileRows(
        database,
        "staged",
        "__staging_orders",
        where="_violations IS NULL",
        exclude=["_violations"],
        batch_rows=2,
    )


def _scratch(path: Path, rows: list[tuple[int, float, str | None]]) -> DuckDBFileRows:
    return _built(StagingDatabase(path), rows)


def test_rows_of_another_duckdb_file_are_copied_natively_and_the_file_deleted(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    first = _scratch(tmp_path / "s1.duckdb", [(1, 1.0, None), (2, -1.0, "amount: min"), (3, 3.0, None)])
    loaded = warehouse.load("staged", "orders", first, mode="replace")
    assert (loaded.rows, loaded.columns) == (2, [("order_id", "BIGINT"), ("amount", "DOUBLE")])
    assert _table(warehouse) == [(1, 1.0), (3, 3.0)]
    assert not first.path.exists()
    second = _scratch(tmp_path / "s2.duckdb", [(3, 30.0, None), (4, 4.0, None)])
    upserted = warehouse.load("staged", "orders", second, mode="upsert", primary_key=["order_id"])
    assert upserted.rows == 2
    assert _table(warehouse) == [(1, 1.0), (3, 30.0), (4, 4.0)]
    refused = _scratch(tmp_path / "s3.duckdb", [(5, 5.0, None)])
    with pytest.raises(WarehouseLoadError, match="primary key column"):
        warehouse.load("staged", "orders", refused, mode="upsert", primary_key=["id"])
    assert not refused.path.exists() and _table(warehouse) == [(1, 1.0), (3, 30.0), (4, 4.0)]


def test_rows_staged_in_the_warehouse_file_are_kept_in_place_or_upserted_then_removed(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    database = warehouse.staging_database(tmp_path / "unused.duckdb")
    assert database.in_warehouse and database.path == tmp_path / "w.duckdb"
    first = _built(database, [(1, 1.0, None), (2, -1.0, "amount: min"), (3, 3.0, None)])
    loaded = warehouse.load("staged", "orders", first, mode="replace")
    assert (loaded.rows, loaded.columns) == (2, [("order_id", "BIGINT"), ("amount", "DOUBLE")])
    assert loaded.bytes is None, "nothing was sent to the warehouse"
    assert _table(warehouse) == [(1, 1.0), (3, 3.0)]
    assert warehouse.tables("staged") == ["orders"], "the staging table became the table: nothing is left"
    second = _built(database, [(3, 30.0, None), (4, 4.0, None), (5, 5.0, "amount: min")])
    upserted = warehouse.load("staged", "orders", second, mode="upsert", primary_key=["order_id"])
    assert (upserted.rows, upserted.bytes) == (2, None)
    assert _table(warehouse) == [(1, 1.0), (3, 30.0), (4, 4.0)]
    assert warehouse.tables("staged") == ["orders"]
    refused = _built(database, [(6, 6.0, None)])
    with pytest.raises(WarehouseLoadError, match="primary key column"):
        warehouse.load("staged", "orders", refused, mode="upsert", primary_key=["id"])
    assert warehouse.tables("staged") == ["orders"] and _table(warehouse) == [(1, 1.0), (3, 30.0), (4, 4.0)]

    other = DuckDBWarehouse(path=str(tmp_path / "other.duckdb"))
    elsewhere = _built(other.staging_database(tmp_path / "unused.duckdb"), [(7, 7.0, None)])
    other_size = (tmp_path / "other.duckdb").stat().st_size
    assert other_size > 0
    copied = warehouse.load("staged", "orders", elsewhere, mode="replace")
    assert copied.rows == 1 and copied.bytes == other_size
    assert _table(warehouse) == [(7, 7.0)], "rows built in another warehouse's file are copied from it"
    assert other.tables("staged") == [], "and removed there"


def test_rows_of_another_duckdb_file_stream_as_arrow_batches_then_the_file_is_deleted(tmp_path: Path) -> None:
    rows = _scratch(tmp_path / "s.duckdb", [(1, 1.0, None), (2, 2.0, "x"), (3, 3.0, None), (4, 4.0, None)])
    batches = list(rows)
    assert [batch.num_rows for batch in batches] == [2, 1]
    assert pa.Table.from_batches(batches).column_names == ["order_id", "amount"]
    assert not rows.path.exists()


def test_no_rows_of_another_duckdb_file_stream_as_one_empty_batch_with_the_columns(tmp_path: Path) -> None:
    """What a run with nothing new hands Postgres and BigQuery: one empty batch, which upserts nothing, not
    a stream of no batch, which every warehouse refuses as "nothing to load"."""
    rows = _scratch(tmp_path / "s.duckdb", [(1, -1.0, "amount: min")])
    batches = list(rows)
    assert [batch.num_rows for batch in batches] == [0]
    assert batches[0].schema.names == ["order_id", "amount"]
    assert not rows.path.exists()
