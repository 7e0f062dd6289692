"""The PostgreSQL warehouse writer against a real server: COPY loads, upsert, evolution, atomicity (also
when the loading process is killed mid-COPY) and no password in messages."""

from __future__ import annotations

import datetime
import decimal
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa
from fixtures.postgres_server import PostgresCluster
from tombstone_upserts import (
    AFTER,
    BEFORE,
    KEY,
    NEW_TABLE,
    REPEATING,
    UPSERT,
    WRITTEN,
    batches_of_two,
)

from resources.warehouses.io_manager import WarehouseIOManager, load_metadata
from resources.warehouses.load import DuplicateKeyError
from resources.warehouses.postgres_warehouse import (
    LoadConfigError,
    PostgresWarehouse,
    PostgresWarehouseError,
    SchemaChangeError,
)

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "",
    "plain",
    "héllo wörld",
    "日本語テキスト",
    'quo"te',
    "comma,semi;",
    "new\nline",
    "NULL",
    "\\N",
    " ",
]


def generated(rows: int, start: int = 0, version: int = 0) -> pa.Table:
    """`rows` rows of ten mixed columns with nulls, empty strings, unicode, timestamps and decimals."""
    ids = np.arange(start, start + rows, dtype=np.int64)
    every = lambda k: pa.array(ids % k == 0)  # noqa: E731
    texts = pa.array(TEXTS).take(pa.array(ids % len(TEXTS)))
    base = np.datetime64("2024-01-01T00:00:00", "us")
    micros = ids * 1_000_003 + version
    return pa.table(
        {
            "id": pa.array(ids),
            "quantity": pa.array(((ids + version) % 1000).astype(np.int32)),
            "price": pa.array((ids % 100_000 + version) / 100.0).cast(pa.decimal128(12, 2), safe=False),
            "score": pc.if_else(every(7), None, pa.array(ids / 3.0 + version)),
            "name": pc.if_else(every(11), None, texts),
            "active": pc.if_else(every(13), None, pa.array(ids % 2 == 0)),
            "created_at": pa.array(base + micros.astype("timedelta64[us]")),
            "updated_at": pc.if_else(
                every(5), None, pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
            ),
            "day": pa.array((ids % 20_000).astype(np.int32)).cast(pa.date32()),
            "payload": pc.if_else(
                every(3), None, pa.array([b"\x00\xff", b"", b"ab\n"] * 1, pa.binary()).take(pa.array(ids % 3))
            ),
        }
    )


def batches(table: pa.Table, rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    return iter(table.to_batches(max_chunksize=rows))


def checksum(warehouse: PostgresWarehouse, table: str = "s.t") -> tuple:
    return warehouse.query(f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t")[0]


@pytest.fixture
def warehouse(postgres_database: str) -> PostgresWarehouse:
    return PostgresWarehouse(url=postgres_database)


def test_million_rows_round_trip(warehouse: PostgresWarehouse) -> None:
    table = generated(1_000_000)
    started = time.monotonic()
    result = warehouse.load("s", "t", batches(table), mode="replace", primary_key=["id"])
    print(f"1M rows loaded in {time.monotonic() - started:.1f}s ({result.bytes / 1e6:.0f} MB CSV)")
    assert result.rows == 1_000_000
    assert dict(result.columns) == {
        "id": "bigint",
        "quantity": "integer",
        "price": "numeric(12,2)",
        "score": "double precision",
        "name": "text",
        "active": "boolean",
        "created_at": "timestamp without time zone",
        "updated_at": "timestamp with time zone",
        "day": "date",
        "payload": "bytea",
    }
    empty, null = warehouse.query(
        "SELECT count(*) FILTER (WHERE name = ''), count(*) - count(name) FROM s.t"
    )[0]
    assert empty == pc.sum(pc.equal(table["name"], "")).as_py() > 0
    assert null == table["name"].null_count > 0
    back = warehouse.read_arrow("SELECT * FROM s.t ORDER BY id")
    assert back.schema == table.schema
    assert back.equals(table)


def test_other_arrow_types_and_a_null_only_row(warehouse: PostgresWarehouse) -> None:
    big = decimal.Decimal("12345678901234567890.0123456789")
    table = pa.table(
        {
            "i8": pa.array([-128, None], pa.int8()),
            "u32": pa.array([2**32 - 1, None], pa.uint32()),
            "u64": pa.array([2**64 - 1, None], pa.uint64()),
            "f32": pa.array([1.5, None], pa.float32()),
            "ls": pa.array(["", None], pa.large_string()),
            "lb": pa.array([b'\x00\n"', None], pa.large_binary()),
            "tm": pa.array([3_723_000_001, None], pa.time64("us")),
            "dec": pa.array([big, None], pa.decimal128(38, 10)),
        }
    )
    result = warehouse.load("weird schema", 'a "table"', batches(table), mode="append")
    assert [type_name for _, type_name in result.columns] == [
        "smallint",
        "bigint",
        "numeric(20,0)",
        "real",
        "text",
        "bytea",
        "time without time zone",
        "numeric(38,10)",
    ]
    rows = warehouse.query('SELECT * FROM "weird schema"."a ""table""" ORDER BY i8 NULLS LAST')
    first = tuple(bytes(value) if isinstance(value, memoryview) else value for value in rows[0])
    assert first == (-128, 2**32 - 1, 2**64 - 1, 1.5, "", b'\x00\n"', datetime.time(1, 2, 3, 1), big)
    assert rows[1] == (None,) * 8
    one_column = pa.table({"only": pa.array([None, "", "x"])})  # the NULL row is an empty CSV line
    warehouse.load("s", "one", batches(one_column), mode="replace")
    assert warehouse.query('SELECT "only" FROM s.one ORDER BY "only" NULLS FIRST') == [(None,), ("",), ("x",)]


def test_read_arrow_keeps_null_rows_of_a_single_column(warehouse: PostgresWarehouse) -> None:
    one_column = pa.table({"only": pa.array([None, "", "x"])})
    warehouse.load("s", "one", batches(one_column), mode="replace")
    assert warehouse.read_arrow("SELECT * FROM s.one").equals(one_column)


def test_upsert_updates_changed_rows_and_inserts_new(warehouse: PostgresWarehouse) -> None:
    warehouse.load("s", "t", batches(generated(1000)), mode="upsert", primary_key=["id"])
    changed = generated(150, start=900, version=1)  # 100 existing rows changed, 50 new
    result = warehouse.load("s", "t", batches(changed, 40), mode="upsert", primary_key=["id"])
    assert result.rows == 150
    expected = pa.concat_tables([generated(900), changed])
    assert warehouse.read_arrow("SELECT * FROM s.t ORDER BY id").equals(expected)
    assert warehouse.query("SELECT count(*) FROM s.t")[0][0] == 1050


def test_upsert_of_rows_that_repeat_a_key_names_them_and_changes_nothing(
    warehouse: PostgresWarehouse,
) -> None:
    warehouse.load("s", "t", batches(generated(10)), mode="upsert", primary_key=["id"])
    before = checksum(warehouse)
    repeated = pa.concat_tables([generated(3, start=8, version=1), generated(2, start=9, version=2)])
    with pytest.raises(DuplicateKeyError) as raised:
        warehouse.load("s", "t", batches(repeated), mode="upsert", primary_key=["id"])
    assert "repeat primary key values (id=9 (2 rows); id=10 (2 rows))" in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert checksum(warehouse) == before
    with pytest.raises(PostgresWarehouseError) as replaced:  # a whole-table load: the index build refuses
        warehouse.load("s", "t", batches(repeated), mode="replace", primary_key=["id"])
    assert replaced.value.sqlstate == "23505" and "is duplicated" in str(replaced.value)
    assert checksum(warehouse) == before


def test_upsert_with_tombstones_deletes_their_keys_in_its_transaction(warehouse: PostgresWarehouse) -> None:
    """Through the IO manager (its metadata): the tombstoned keys are deleted, the other rows upserted, the
    `_deleted` column never stored nor counted. A failure after the delete (a repeated key) undoes it."""
    warehouse.load("s", "t", batches_of_two(BEFORE), mode="upsert", primary_key=KEY)

    @dg.asset(key=["s", "t"], metadata=load_metadata(mode="upsert", primary_key=KEY))
    def upserted() -> pa.Table:
        return UPSERT

    result = dg.materialize([upserted], resources={"io_manager": WarehouseIOManager(warehouse=warehouse)})
    (materialization,) = result.asset_materializations_for_node("s__t")
    metadata = materialization.metadata
    assert metadata["rows_written"].value == WRITTEN
    assert [column.name for column in metadata["dagster/column_schema"].value.columns] == ["id", "name"]
    assert warehouse.query("SELECT id, name FROM s.t ORDER BY id") == AFTER

    before = checksum(warehouse)
    with pytest.raises(DuplicateKeyError, match=r"id=7 \(2 rows\)"):
        warehouse.load("s", "t", batches_of_two(REPEATING), mode="upsert", primary_key=KEY)
    assert checksum(warehouse) == before

    fresh = warehouse.load("s", "fresh", batches_of_two(UPSERT), mode="upsert", primary_key=KEY)
    assert fresh.rows == WRITTEN and fresh.columns == [("id", "bigint"), ("name", "text")]
    assert warehouse.query("SELECT id, name FROM s.fresh ORDER BY id") == NEW_TABLE


def test_new_column_is_added_and_old_rows_are_null(warehouse: PostgresWarehouse) -> None:
    warehouse.load("s", "t", batches(generated(10)), mode="upsert", primary_key=["id"])
    extra = generated(5, start=10).append_column("note", pa.array(["a", "", None, "d", "e"]))
    result = warehouse.load("s", "t", batches(extra), mode="upsert", primary_key=["id"])
    assert result.columns[-1] == ("note", "text")
    notes = warehouse.query("SELECT id, note FROM s.t ORDER BY id")
    assert notes == [(i, None) for i in range(10)] + [(10, "a"), (11, ""), (12, None), (13, "d"), (14, "e")]


def test_type_change_is_refused_clearly(warehouse: PostgresWarehouse) -> None:
    warehouse.load("s", "t", batches(generated(10)), mode="append")
    before = checksum(warehouse)
    changed = generated(5, start=10)
    changed = changed.set_column(1, "quantity", pc.cast(changed["quantity"], pa.string()))
    with pytest.raises(SchemaChangeError) as raised:
        warehouse.load("s", "t", batches(changed), mode="append")
    message = str(raised.value)
    assert 'column "quantity" is integer in the table but text in the batches' in message
    assert "ALTER TABLE" in message and "mode='replace'" in message
    assert checksum(warehouse) == before
    with pytest.raises(LoadConfigError, match=r"no primary key or unique index on exactly these columns"):
        warehouse.load("s", "t", batches(generated(5, start=10)), mode="upsert", primary_key=["id"])
    assert checksum(warehouse) == before


def test_replace_is_atomic(warehouse: PostgresWarehouse) -> None:
    warehouse.load("s", "t", batches(generated(1000)), mode="replace", primary_key=["id"])
    before = checksum(warehouse)
    seen_during_load = []

    def watched(table: pa.Table, fail: bool) -> Iterator[pa.RecordBatch]:
        for number, batch in enumerate(batches(table, 500)):
            if number == 2:
                seen_during_load.append(checksum(warehouse))
                if fail:
                    raise RuntimeError("source broke mid-load")
            yield batch

    with pytest.raises(RuntimeError, match="source broke"):
        warehouse.load("s", "t", watched(generated(3000, version=1), fail=True), mode="replace")
    assert checksum(warehouse) == before
    warehouse.load(
        "s", "t", watched(generated(3000, version=2), fail=False), mode="replace", primary_key=["id"]
    )
    assert seen_during_load == [before, before]
    assert checksum(warehouse)[0] == 3000
    assert warehouse.query("SELECT tablename FROM pg_tables WHERE schemaname = 's'") == [("t",)]
    assert warehouse.query("SELECT indexname FROM pg_indexes WHERE schemaname = 's'") == [("t_pkey",)]


KILLED_LOAD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pyarrow as pa
    from resources.warehouses.postgres_warehouse import PostgresWarehouse

    def endless():
        for number in range(100_000):
            ids = np.arange(number * 50_000, (number + 1) * 50_000, dtype=np.int64)
            yield pa.record_batch({"id": ids, "quantity": (ids % 7).astype(np.int32) + 100})

    PostgresWarehouse(url=sys.argv[1]).load("s", "t", endless(), mode=sys.argv[2], primary_key=["id"])
    """
)


@pytest.mark.parametrize("mode", ["upsert", "replace"])
def test_killing_the_loader_mid_copy_leaves_the_previous_table(
    warehouse: PostgresWarehouse, postgres_database: str, mode: str
) -> None:
    previous = generated(10_000).select(["id", "quantity"])
    warehouse.load("s", "t", batches(previous), mode="replace", primary_key=["id"])
    before = checksum(warehouse)
    loader = subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD, postgres_database, mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
    )
    try:
        copied = wait_for(
            lambda: warehouse.query(
                "SELECT max(p.tuples_processed) FROM pg_stat_progress_copy p JOIN pg_stat_activity a "
                "USING (pid) WHERE a.datname = current_database() AND p.command = 'COPY FROM'"
            )[0][0],
            until=lambda processed: processed is not None and processed > 200_000,
            what="the loader's COPY",
            process=loader,
        )
    finally:
        loader.send_signal(signal.SIGKILL)
        loader.wait()
    assert copied > 200_000
    wait_for(
        lambda: warehouse.query(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )[0][0],
        until=lambda backends: backends == 0,
        what="the killed loader's backend to end",
    )
    assert checksum(warehouse) == before
    assert warehouse.query("SELECT tablename FROM pg_tables WHERE schemaname = 's'") == [("t",)]


def wait_for(
    probe: Callable[[], Any],
    until: Callable[[Any], bool],
    what: str,
    process: subprocess.Popen | None = None,
    seconds: float = 30.0,
) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if until(value):
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(
                f"loader exited ({process.returncode}) before {what}: {process.stderr.read().decode()}"
            )
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_password_is_never_in_errors(
    postgres_server: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_server.create_login_role("loader", "right-Secret-42")
    url = sa.make_url(postgres_server.url())
    warehouse = PostgresWarehouse(
        url=f"postgresql+psycopg2://loader:${{PGW_PASSWORD}}@{url.host}:{url.port}/postgres"
    )
    monkeypatch.setenv("PGW_PASSWORD", "wrong-Secret-17")
    with pytest.raises(PostgresWarehouseError) as raised:
        warehouse.load("s", "t", batches(generated(3)), mode="append")
    message = str(raised.value)
    assert "wrong-Secret-17" not in message and "right-Secret-42" not in message
    assert "loader:***@" in message and "${PGW_PASSWORD}" in message
    assert 'password authentication failed for user "loader"' in message
    cause: BaseException | None = raised.value
    while cause is not None:  # the driver's error it is raised from quotes no password either
        assert "Secret" not in str(cause) and "Secret" not in repr(cause)
        cause = cause.__cause__
    assert "wrong-Secret-17" not in warehouse.display_url()
    monkeypatch.setenv("PGW_PASSWORD", "right-Secret-42")
    postgres_server.execute("postgres", "GRANT CREATE ON DATABASE postgres TO loader")
    assert warehouse.load("s", "t", batches(generated(3)), mode="append").rows == 3


def test_replace_of_a_table_that_views_read_refills_it_in_place(warehouse: PostgresWarehouse) -> None:
    warehouse.load("staged", "orders", [pa.RecordBatch.from_pydict({"id": [1, 2]})], mode="replace")
    warehouse.query("CREATE SCHEMA analytics")
    warehouse.query("CREATE VIEW analytics.stg_orders AS SELECT id FROM staged.orders")
    batch = pa.RecordBatch.from_pydict({"id": [3, 4, 5], "note": ["a", "b", "c"]})
    result = warehouse.load("staged", "orders", [batch], mode="replace")
    assert result.rows == 3
    assert warehouse.query("SELECT id FROM analytics.stg_orders ORDER BY id") == [(3,), (4,), (5,)]
    assert [name for name, _ in warehouse.columns("staged", "orders")] == ["id", "note"]


def test_replace_in_place_changes_column_types_under_views(
    warehouse: PostgresWarehouse, postgres_server: PostgresCluster
) -> None:
    """A widened column (schema evolution) of a table that views read: the views, and the views reading
    them, are dropped and recreated around ALTER COLUMN TYPE with their options, owner, comments and
    grants, in the load's transaction."""
    suffix = os.urandom(4).hex()
    reader, owner = f"reader_{suffix}", f"owner_{suffix}"
    postgres_server.execute("postgres", f'CREATE ROLE "{reader}" NOLOGIN; CREATE ROLE "{owner}" NOLOGIN')
    warehouse.load(
        "staged", "orders", [pa.RecordBatch.from_pydict({"id": [1], "day": [datetime.date(2024, 1, 1)]})],
        mode="replace", primary_key=["id"],
    )  # fmt: skip
    warehouse.query("CREATE SCHEMA analytics")
    warehouse.query(
        "CREATE VIEW analytics.stg_orders WITH (security_barrier=true) AS "
        "SELECT id, day, id * 10 AS tenfold FROM staged.orders"
    )
    warehouse.query(
        "CREATE VIEW analytics.daily AS SELECT day, count(*) AS n FROM analytics.stg_orders GROUP BY day"
    )
    warehouse.query("COMMENT ON VIEW analytics.stg_orders IS 'orders, staged'")
    warehouse.query("COMMENT ON COLUMN analytics.stg_orders.tenfold IS 'id times ten'")
    warehouse.query(f'GRANT SELECT ON analytics.stg_orders, analytics.daily TO "{reader}"')
    warehouse.query(f'ALTER VIEW analytics.daily OWNER TO "{owner}"')
    warehouse.query(f'GRANT SELECT ON analytics.stg_orders TO "{owner}"')  # a view reads as its owner
    widened = pa.RecordBatch.from_pydict(
        {"id": [1.5, 2.0], "day": [datetime.datetime(2024, 1, 1, 10), datetime.datetime(2024, 1, 2)]}
    )
    warehouse.load("staged", "orders", [widened], mode="replace", primary_key=["id"])

    assert warehouse.columns("staged", "orders") == [
        ("id", "double precision"),
        ("day", "timestamp without time zone"),
    ]
    assert warehouse.query("SELECT id, tenfold FROM analytics.stg_orders ORDER BY id") == [
        (1.5, 15.0),
        (2.0, 20.0),
    ]
    assert warehouse.query("SELECT n FROM analytics.daily ORDER BY day") == [(1,), (1,)]
    assert warehouse.query(
        "SELECT c.reloptions, obj_description(c.oid, 'pg_class'), col_description(c.oid, 3) FROM pg_class c "
        "WHERE c.oid = 'analytics.stg_orders'::regclass"
    ) == [(["security_barrier=true"], "orders, staged", "id times ten")]
    assert warehouse.query(
        "SELECT has_table_privilege(%s, 'analytics.stg_orders', 'SELECT'), "
        "has_table_privilege(%s, 'analytics.daily', 'SELECT'), "
        "pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'analytics.daily'::regclass",
        [reader, reader],
    ) == [(True, True, owner)]
    assert warehouse.query(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'staged.orders'::regclass AND contype = 'p'"
    ) == [(1,)]


def test_replace_in_place_that_a_view_cannot_follow_changes_nothing(warehouse: PostgresWarehouse) -> None:
    warehouse.load("staged", "orders", [pa.RecordBatch.from_pydict({"id": [1, 3]})], mode="replace")
    warehouse.query("CREATE SCHEMA analytics")
    warehouse.query("CREATE VIEW analytics.odd AS SELECT id, id & 1 AS odd FROM staged.orders")
    with pytest.raises(PostgresWarehouseError, match=r"nothing was changed.*operator does not exist"):
        warehouse.load("staged", "orders", [pa.RecordBatch.from_pydict({"id": [1.5]})], mode="replace")
    assert warehouse.columns("staged", "orders") == [("id", "bigint")]
    assert warehouse.query("SELECT id, odd FROM analytics.odd ORDER BY id") == [(1, 1), (3, 1)]


def test_replace_in_place_refuses_type_changes_under_a_materialized_view(
    warehouse: PostgresWarehouse,
) -> None:
    warehouse.load("staged", "orders", [pa.RecordBatch.from_pydict({"id": [1, 3]})], mode="replace")
    warehouse.query("CREATE SCHEMA analytics")
    warehouse.query("CREATE MATERIALIZED VIEW analytics.ids AS SELECT id FROM staged.orders")
    with pytest.raises(SchemaChangeError, match=r"analytics\.ids read.* materialized view"):
        warehouse.load("staged", "orders", [pa.RecordBatch.from_pydict({"id": ["a"]})], mode="replace")
    assert warehouse.query("SELECT id FROM staged.orders ORDER BY id") == [(1,), (3,)]
    same_types = pa.RecordBatch.from_pydict({"id": [5], "note": ["n"]})
    assert warehouse.load("staged", "orders", [same_types], mode="replace").rows == 1


def binary_encodable(rows: int, start: int = 0, version: int = 0) -> pa.Table:
    """`generated` without its decimal column: every column has a binary COPY encoding, plus the
    narrower and wider types the encoder converts (int8, unsigned, float32, zoned and second/millisecond
    timestamps, large strings)."""
    table = generated(rows, start, version).drop_columns(["price"])
    ids = table["id"].combine_chunks()
    odd = pc.equal(pc.bit_wise_and(ids, 1), 1)
    return (
        table.append_column(
            "tiny", pc.if_else(odd, None, pc.cast(pc.subtract(pc.bit_wise_and(ids, 127), 64), pa.int8()))
        )
        .append_column("u16", pc.cast(pc.bit_wise_and(ids, 65535), pa.uint16()))
        .append_column("u32", pc.cast(pc.bit_wise_and(ids, 2**32 - 1), pa.uint32()))
        .append_column("f32", pc.cast(pc.divide(pc.cast(ids, pa.float64()), 8.0), pa.float32()))
        .append_column("berlin", pc.cast(pc.multiply(ids, 1_000), pa.timestamp("ms", tz="Europe/Berlin")))
        .append_column("secs", pc.cast(ids, pa.timestamp("s")))
        .append_column("big_text", pc.cast(table["name"], pa.large_string()))
    )


def test_binary_copy_round_trips_every_encodable_type(warehouse: PostgresWarehouse) -> None:
    """Tables whose columns all have a binary encoding go as binary COPY; what comes back equals what a
    CSV load of the same rows gives (the append into a table with a wider column is sent as CSV)."""
    from resources.warehouses.postgres_load import CopyStream

    table = binary_encodable(20_000)
    assert CopyStream(iter(()), table.schema).use_binary(
        [(f.name, t) for f, (_, t) in zip(table.schema, warehouse_types(table.schema), strict=True)]
    )
    warehouse.load("s", "t", batches(table, 7_000), mode="replace", primary_key=["id"])
    # The same rows as CSV: into an existing table whose `tiny` is wider (integer) than int8's smallint.
    wide = pa.schema([f.with_type(pa.int32()) if f.name == "tiny" else f for f in table.schema])
    warehouse.load("s", "csv", batches(table.cast(wide).slice(0, 1)), mode="replace")
    warehouse.load("s", "csv", batches(table.slice(1)), mode="append")
    assert dict(warehouse.columns("s", "csv"))["tiny"] == "integer"
    assert checksum(warehouse, "s.t") == checksum(warehouse, "s.csv")
    back = warehouse.read_arrow("SELECT id, name, created_at, updated_at, berlin, secs FROM s.t ORDER BY id")
    assert back["name"].equals(table["name"])
    assert back["created_at"].equals(table["created_at"])
    assert back["updated_at"].equals(table["updated_at"])
    assert back["berlin"].cast(pa.int64()).equals(table["berlin"].cast(pa.timestamp("us")).cast(pa.int64()))
    assert back["secs"].cast(pa.int64()).equals(table["secs"].cast(pa.timestamp("us")).cast(pa.int64()))
    empty, null = warehouse.query(
        "SELECT count(*) FILTER (WHERE name = ''), count(*) - count(name) FROM s.t"
    )[0]
    assert empty == pc.sum(pc.equal(table["name"], "")).as_py() > 0
    assert null == table["name"].null_count > 0


def warehouse_types(schema: pa.Schema) -> list[tuple[str, str]]:
    from resources.warehouses.postgres_load import postgres_type

    return [(field.name, postgres_type(field.type)) for field in schema]


@pytest.mark.parametrize("mode", ["replace", "upsert", "append"])
def test_a_failure_mid_binary_copy_changes_nothing(warehouse: PostgresWarehouse, mode: str) -> None:
    """The binary stream is encoded in a thread of its own: a source failing after some batches were
    sent still fails the load, leaves the table as it was and stops the encoder."""
    import threading

    warehouse.load("s", "t", batches(binary_encodable(1000)), mode="replace", primary_key=["id"])
    before = checksum(warehouse)
    closed = []

    def failing() -> Iterator[pa.RecordBatch]:
        try:
            for number, batch in enumerate(batches(binary_encodable(5000, start=100_000, version=1), 500)):
                if number == 4:
                    raise RuntimeError("source broke mid-load")
                yield batch
        finally:
            closed.append(threading.current_thread().name)

    with pytest.raises(RuntimeError, match="source broke"):
        warehouse.load("s", "t", failing(), mode=mode, primary_key=["id"])
    assert checksum(warehouse) == before
    assert closed
    assert not [t for t in threading.enumerate() if t.name == "csv-stream"]
    # A batch with another schema is refused the same way (psycopg2 reports what `read` raised).
    table = binary_encodable(1000, start=10_000)
    odd = iter([*batches(table, 500), table.drop_columns(["name"]).to_batches()[0]])
    with pytest.raises(PostgresWarehouseError, match="schema differs"):
        warehouse.load("s", "t", odd, mode=mode, primary_key=["id"])
    assert checksum(warehouse) == before


def test_a_server_error_mid_binary_copy_stops_the_encoder(warehouse: PostgresWarehouse) -> None:
    """The COPY failing on the server (a value its column refuses) ends the load with the server's error
    and stops the stream's encoder instead of leaving it blocked."""
    import threading

    table = pa.table({"id": pa.array(range(300_000), pa.int64()), "name": pa.array(["a"] * 300_000)})
    warehouse.load("s", "t", batches(table.slice(0, 10)), mode="replace")
    warehouse.query("ALTER TABLE s.t ADD CONSTRAINT small CHECK (id < 1000)")
    with pytest.raises(PostgresWarehouseError, match="small"):
        warehouse.load("s", "t", batches(table.slice(10), 1000), mode="append")
    assert warehouse.query("SELECT count(*) FROM s.t") == [(10,)]
    assert not [t for t in threading.enumerate() if t.name == "csv-stream"]


def test_two_first_loads_into_one_new_schema_both_succeed(warehouse: PostgresWarehouse) -> None:
    """Two writers at once (Celery workers, or a pool of two) whose tables are the first of a schema: the
    second waits for the first to commit the schema instead of failing on `CREATE SCHEMA IF NOT EXISTS`.
    The first load is held inside its transaction, after creating the schema, until the second has started."""
    first_in_transaction, release = threading.Event(), threading.Event()

    def held_batches() -> Iterator[pa.RecordBatch]:
        yield from batches(generated(10))
        first_in_transaction.set()
        release.wait(timeout=30)

    errors: list[BaseException] = []

    def load(table: str, rows: Iterator[pa.RecordBatch]) -> None:
        try:
            warehouse.load("fresh", table, rows, mode="replace", primary_key=["id"])
        except BaseException as error:  # reported by the test thread below
            errors.append(error)

    first = threading.Thread(target=load, args=("a", held_batches()))
    first.start()
    assert first_in_transaction.wait(timeout=30)
    second = threading.Thread(target=load, args=("b", batches(generated(10))))
    second.start()
    time.sleep(1.0)  # the second load reaches the schema while the first still holds it uncommitted
    release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not errors, errors
    assert warehouse.query("SELECT (SELECT count(*) FROM fresh.a), (SELECT count(*) FROM fresh.b)") == [
        (10, 10)
    ]
