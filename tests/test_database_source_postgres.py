"""The database connector against a real PostgreSQL server: full and incremental extractions (both read
paths: COPY and server-side cursor), types, watermarks under concurrent writers, the read-only snapshot,
timeouts, quoting, and error messages that help without leaking the password."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import threading
import time
import traceback
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, date, datetime
from datetime import time as clock_time
from decimal import Decimal
from typing import Any

import psycopg2
import pyarrow as pa
import pytest
import sqlalchemy as sa

from resources.databases.config import DatabaseConnection, Incremental, TableExtraction
from resources.databases.errors import (
    DatabaseSourceError,
    DatabaseUnavailableError,
    ExtractionConfigError,
    StatementTimeoutError,
)
from resources.databases.source import DatabaseSource, Extraction
from resources.secrets import MissingSecretError

READ_PATHS = ["copy", "cursor"]
BY_UPDATED_AT = Incremental(mode="timestamp", cursor_column="updated_at", lookback_seconds=0)
"""The strict filter `(cursor, key) > watermark`, which these tests pin (the default re-reads a window)."""


def connect(url: str) -> psycopg2.extensions.connection:
    """A plain psycopg2 connection (no SQLAlchemy) for setting up data and for the concurrent writers."""
    parsed = sa.make_url(url)
    return psycopg2.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
    )


def run_sql(url: str, sql: str) -> None:
    connection = connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    connection = connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


def source_for(url: str, read_path: str = "copy", **connection: Any) -> DatabaseSource:
    return DatabaseSource(DatabaseConnection(url=url, **connection), postgres_copy=read_path == "copy")


def landed(extraction: Extraction) -> pa.Table:
    """What landing would write: every batch, checked against the announced schema."""
    batches = list(extraction)
    assert all(batch.schema == extraction.schema for batch in batches)
    return pa.Table.from_batches(batches, schema=extraction.schema)


def stored(watermark: dict[str, Any] | None) -> dict[str, Any] | None:
    """The watermark as the caller persists it (JSON) and reads it back next run."""
    return json.loads(json.dumps(watermark))


@pytest.fixture(params=READ_PATHS)
def read_path(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def orders_url(postgres_database: str) -> str:
    run_sql(
        postgres_database,
        """
        CREATE TABLE orders (order_id integer PRIMARY KEY, amount numeric(10, 2) NOT NULL, note text,
                             updated_at timestamp NOT NULL);
        INSERT INTO orders
        SELECT g, g * 1.5, CASE WHEN g % 3 = 0 THEN NULL ELSE 'order ' || g END,
               timestamp '2026-01-01 00:00:00.000001' + g * interval '1 minute'
        FROM generate_series(1, 10) g;
        """,
    )
    return postgres_database


def test_full_extraction_lands_every_row_with_the_table_types(orders_url: str, read_path: str) -> None:
    extraction = source_for(orders_url, read_path).extract(
        TableExtraction(table="orders"), primary_key=["order_id"], watermark=None
    )
    table = landed(extraction)
    assert table.schema == pa.schema(
        [
            pa.field("order_id", pa.int64(), nullable=False),
            pa.field("amount", pa.decimal128(10, 2), nullable=False),
            pa.field("note", pa.string()),
            pa.field("updated_at", pa.timestamp("us"), nullable=False),
        ]
    )
    assert table.num_rows == extraction.rows == 10
    assert sorted(table.column("order_id").to_pylist()) == list(range(1, 11))
    assert table.column("note").null_count == 3
    assert extraction.watermark_after is None
    assert 'FROM "orders"' in extraction.query_text


def test_describe_table_reports_columns_and_primary_key(orders_url: str) -> None:
    description = source_for(orders_url).describe_table(TableExtraction(table="orders"))
    assert description.primary_key == ["order_id"]
    assert [(c.name, c.arrow_type, c.nullable) for c in description.columns] == [
        ("order_id", pa.int64(), False),
        ("amount", pa.decimal128(10, 2), False),
        ("note", pa.string(), True),
        ("updated_at", pa.timestamp("us"), False),
    ]


TYPED_TABLE = """
CREATE TABLE typed (
    id integer PRIMARY KEY, small smallint, big bigint, single real, double double precision,
    price numeric(12, 2), unbounded numeric, label text, code varchar(8), flag boolean, day date,
    at_time time, created timestamp, created_tz timestamptz, payload jsonb, tags text[], raw bytea,
    uid uuid, span interval
);
INSERT INTO typed VALUES
    (1, -32768, 9223372036854775807, 1.5, 0.1, 1234567890.12, 'NaN', 'a,b "quoted"' || chr(10) || 'line',
     '', true, '2026-01-02', '12:34:56.123456', '2026-01-02 03:04:05.123456',
     '2026-01-02 05:04:05.654321+02', '{"b": [1, 2], "a": null}', ARRAY['x', 'y,z'], '\\x00ff10',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:00:00'),
    (2, NULL, NULL, 'Infinity', 'NaN', -0.5, 123456789012345678901234567890.123456789, 'NULL', 'NA',
     false, NULL, NULL, NULL, NULL, NULL, ARRAY[]::text[], '\\x', NULL, NULL),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL);
"""


@pytest.fixture
def typed_url(postgres_database: str) -> str:
    run_sql(postgres_database, TYPED_TABLE)
    return postgres_database


def test_types_map_to_arrow_and_nulls_stay_distinct_from_empty_strings(
    typed_url: str, read_path: str
) -> None:
    table = landed(
        source_for(typed_url, read_path).extract(
            TableExtraction(table="typed"), primary_key=["id"], watermark=None
        )
    ).sort_by("id")
    assert {field.name: field.type for field in table.schema} == {
        "id": pa.int64(),
        "small": pa.int64(),
        "big": pa.int64(),
        "single": pa.float64(),
        "double": pa.float64(),
        "price": pa.decimal128(12, 2),
        "unbounded": pa.string(),
        "label": pa.string(),
        "code": pa.string(),
        "flag": pa.bool_(),
        "day": pa.date32(),
        "at_time": pa.time64("us"),
        "created": pa.timestamp("us"),
        "created_tz": pa.timestamp("us", tz="UTC"),
        "payload": pa.string(),
        "tags": pa.string(),
        "raw": pa.binary(),
        "uid": pa.string(),
        "span": pa.string(),
    }
    first, second, third = table.to_pylist()
    assert first == {
        "id": 1,
        "small": -32768,
        "big": 9223372036854775807,
        "single": 1.5,
        "double": 0.1,
        "price": Decimal("1234567890.12"),
        "unbounded": "NaN",
        "label": 'a,b "quoted"\nline',
        "code": "",
        "flag": True,
        "day": date(2026, 1, 2),
        "at_time": clock_time(12, 34, 56, 123456),
        "created": datetime(2026, 1, 2, 3, 4, 5, 123456),
        "created_tz": datetime(2026, 1, 2, 3, 4, 5, 654321, tzinfo=UTC),
        "payload": '{"a": null, "b": [1, 2]}',
        "tags": '["x","y,z"]',
        "raw": b"\x00\xff\x10",
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "span": "P1DT2H",
    }
    assert second["single"] == float("inf") and second["double"] != second["double"]  # NaN
    assert second["unbounded"] == "123456789012345678901234567890.123456789"
    assert (second["label"], second["code"], second["tags"], second["raw"]) == ("NULL", "NA", "[]", b"")
    assert all(value is None for name, value in third.items() if name != "id")


def test_both_read_paths_land_identical_tables(typed_url: str) -> None:
    tables = [
        landed(
            source_for(typed_url, path).extract(
                TableExtraction(table="typed"), primary_key=["id"], watermark=None
            )
        )
        for path in READ_PATHS
    ]
    copied, fetched = (table.sort_by("id") for table in tables)
    assert copied.schema == fetched.schema
    assert comparable(copied) == comparable(fetched)


def comparable(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN spelled out (NaN != NaN would fail an equality of equal tables)."""
    return [
        {
            name: "NaN" if isinstance(value, float) and math.isnan(value) else value
            for name, value in row.items()
        }
        for row in table.to_pylist()
    ]


def test_timestamp_watermark_keeps_rows_sharing_the_boundary_timestamp(
    postgres_database: str, read_path: str
) -> None:
    """Rows with the watermark's exact timestamp that appear later (inserted, or committed late with a
    larger key) are read by the next run thanks to the tie-breaker; those already landed are not."""
    boundary = "2026-01-01 10:00:00.123456"
    run_sql(
        postgres_database,
        f"""
        CREATE TABLE events (id integer PRIMARY KEY, updated_at timestamp NOT NULL);
        INSERT INTO events VALUES (1, '2026-01-01 09:00:00'), (2, '{boundary}'), (3, '{boundary}');
        """,
    )
    source = source_for(postgres_database, read_path)
    extraction = TableExtraction(table="events", incremental=BY_UPDATED_AT)

    first = source.extract(extraction, primary_key=["id"], watermark=None)
    assert landed(first).column("id").to_pylist() == [1, 2, 3]
    watermark = stored(first.watermark_after)
    assert watermark == {
        "cursor_column": "updated_at",
        "cursor": "2026-01-01T10:00:00.123456",
        "tie_breaker_columns": ["id"],
        "tie_breaker": [3],
    }

    run_sql(postgres_database, f"INSERT INTO events VALUES (4, '{boundary}'), (5, '2026-01-01 11:00:00')")
    second = source.extract(extraction, primary_key=["id"], watermark=watermark)
    assert landed(second).column("id").to_pylist() == [4, 5]
    assert stored(second.watermark_after)["tie_breaker"] == [5]

    third = source.extract(extraction, primary_key=["id"], watermark=stored(second.watermark_after))
    assert landed(third).num_rows == 0
    assert third.watermark_after == second.watermark_after


def test_timestamptz_watermark_round_trips_exactly(postgres_database: str, read_path: str) -> None:
    run_sql(
        postgres_database,
        """
        CREATE TABLE events (id integer PRIMARY KEY, updated_at timestamptz NOT NULL);
        INSERT INTO events VALUES (1, '2026-03-01 12:00:00.000001+01'), (2, '2026-03-01 12:00:00.000002+01');
        """,
    )
    source = source_for(postgres_database, read_path)
    extraction = TableExtraction(table="events", incremental=BY_UPDATED_AT)
    first = source.extract(extraction, primary_key=["id"], watermark=None)
    landed(first)
    assert stored(first.watermark_after)["cursor"] == "2026-03-01T11:00:00.000002+00:00"
    run_sql(postgres_database, "INSERT INTO events VALUES (3, '2026-03-01 11:00:00.000002+00')")
    second = source.extract(extraction, primary_key=["id"], watermark=stored(first.watermark_after))
    assert landed(second).column("id").to_pylist() == [3]


def test_initial_value_starts_the_first_run(orders_url: str) -> None:
    extraction = TableExtraction(
        table="orders",
        incremental=Incremental(
            mode="timestamp", cursor_column="updated_at", initial_value="2026-01-01 00:08:00"
        ),
    )
    first = source_for(orders_url).extract(extraction, primary_key=["order_id"], watermark=None)
    assert landed(first).column("order_id").to_pylist() == [8, 9, 10]


def test_key_mode_reads_only_new_keys(orders_url: str, read_path: str) -> None:
    source = source_for(orders_url, read_path)
    extraction = TableExtraction(
        table="orders",
        columns=["order_id", "amount"],
        incremental=Incremental(mode="key", cursor_column="order_id"),
    )
    first = source.extract(extraction, primary_key=["order_id"], watermark=None)
    assert landed(first).column_names == ["order_id", "amount"]
    assert stored(first.watermark_after) == {"cursor_column": "order_id", "cursor": 10}
    run_sql(orders_url, "INSERT INTO orders VALUES (11, 1, NULL, now()), (12, 2, NULL, now())")
    second = source.extract(extraction, primary_key=["order_id"], watermark=stored(first.watermark_after))
    assert landed(second).column("order_id").to_pylist() == [11, 12]
    assert second.watermark_after == {"cursor_column": "order_id", "cursor": 12}


def test_custom_query_binds_the_watermark_and_tracks_the_greatest_cursor(
    orders_url: str, read_path: str
) -> None:
    """The result is typed from PostgreSQL's description of it: `amount * 2` has no declared precision,
    so it lands as exact text."""
    extraction = TableExtraction(
        query="SELECT order_id, amount * 2 AS doubled, updated_at FROM orders "
        "WHERE CAST(:watermark AS timestamp) IS NULL OR updated_at > :watermark;",
        incremental=BY_UPDATED_AT,
    )
    source = source_for(orders_url, read_path)
    first = source.extract(extraction, primary_key=["order_id"], watermark=None)
    table = landed(first)
    assert table.schema == pa.schema(
        [("order_id", pa.int64()), ("doubled", pa.string()), ("updated_at", pa.timestamp("us"))]
    )
    assert table.num_rows == 10
    assert stored(first.watermark_after) == {
        "cursor_column": "updated_at",
        "cursor": "2026-01-01T00:10:00.000001",
    }
    run_sql(orders_url, "UPDATE orders SET updated_at = '2026-02-01', amount = 100 WHERE order_id = 4")
    second = source.extract(extraction, primary_key=["order_id"], watermark=stored(first.watermark_after))
    assert landed(second).to_pylist() == [
        {"order_id": 4, "doubled": "200.00", "updated_at": datetime(2026, 2, 1)}
    ]


def test_lookback_rereads_recent_rows_on_purpose(orders_url: str) -> None:
    """With a lookback, rows within it are landed again: duplicates by primary key are expected and removed
    downstream (latest cursor wins); nothing newer than the watermark is missed."""
    incremental = Incremental(mode="timestamp", cursor_column="updated_at", lookback_seconds=150)
    extraction = TableExtraction(table="orders", incremental=incremental)
    source = source_for(orders_url)
    first = source.extract(extraction, primary_key=["order_id"], watermark=None)
    landed(first)
    second = source.extract(extraction, primary_key=["order_id"], watermark=stored(first.watermark_after))
    assert landed(second).column("order_id").to_pylist() == [8, 9, 10]
    assert second.watermark_after == first.watermark_after


@pytest.fixture
def items_url(postgres_database: str) -> str:
    run_sql(
        postgres_database,
        """
        CREATE TABLE items (id serial PRIMARY KEY, value integer NOT NULL,
                            updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
        CREATE INDEX items_updated_at ON items (updated_at, id);
        INSERT INTO items (value, updated_at) SELECT g, clock_timestamp() - interval '1 hour'
        FROM generate_series(1, 200) g;
        """,
    )
    return postgres_database


def test_late_commit_is_lost_without_lookback_and_recovered_with_it(items_url: str) -> None:
    """Why the lookback exists: a transaction stamps `updated_at` when it writes but becomes visible when
    it commits. An extraction in between sees a later-stamped row, moves the watermark past the late one,
    and `(cursor, key) > watermark` never reads it. Re-reading `lookback_seconds` before the watermark
    recovers it."""
    source = source_for(items_url)
    first = source.extract(
        TableExtraction(table="items", incremental=BY_UPDATED_AT), primary_key=["id"], watermark=None
    )
    landed(first)
    watermark = stored(first.watermark_after)

    late = connect(items_url)
    with late.cursor() as cursor:
        cursor.execute("UPDATE items SET value = -1, updated_at = clock_timestamp() WHERE id = 1")
    run_sql(items_url, "UPDATE items SET value = -2, updated_at = clock_timestamp() WHERE id = 2")
    meanwhile = source.extract(
        TableExtraction(table="items", incremental=BY_UPDATED_AT), primary_key=["id"], watermark=watermark
    )
    assert landed(meanwhile).column("id").to_pylist() == [2]
    late.commit()
    late.close()

    def next_run(**lookback: float) -> list[int]:
        incremental = Incremental(mode="timestamp", cursor_column="updated_at", **lookback)
        extraction = source.extract(
            TableExtraction(table="items", incremental=incremental),
            primary_key=["id"],
            watermark=stored(meanwhile.watermark_after),
        )
        return landed(extraction).column("id").to_pylist()

    assert next_run(lookback_seconds=0) == []
    assert next_run(lookback_seconds=60) == [1, 2]
    assert Incremental(mode="timestamp", cursor_column="updated_at").lookback_seconds == 300
    assert next_run() == [1, 2], "the default lookback (what the shipped catalog uses) recovers it too"
    assert Incremental(mode="key", cursor_column="id").lookback_seconds == 0, "key mode has no lookback"


WRITE_SECONDS = 2.0
SLOW_COMMIT_SECONDS = 0.05
RECOMMENDED_LOOKBACK_SECONDS = 1.0
"""Above the longest time between a row's `clock_timestamp()` and its commit in this test's writers
(SLOW_COMMIT_SECONDS plus scheduling), with margin; production advice in `databases/watermark.py`."""


def test_concurrent_writers_lose_nothing_with_the_recommended_lookback(items_url: str) -> None:
    """Two writer threads insert and update rows in short transactions (`updated_at = clock_timestamp()`),
    one in ten holding its transaction open 50 ms after stamping the row, i.e. committing late, while a
    reader runs incremental extractions back to back and stores each watermark as a caller would. After the
    writers stop and one last run, the landed rows, de-duplicated by key with the latest `updated_at`
    winning, equal the source table exactly.

    With lookback 0 this is not guaranteed (late commits, see the test above), so the test uses a lookback
    longer than the writers' longest stamp-to-commit delay, as the docs recommend."""
    landed_rows, runs = extract_while_writing(items_url, lookback_seconds=RECOMMENDED_LOOKBACK_SECONDS)
    assert runs >= 5
    latest: dict[int, dict[str, Any]] = {}
    for row in landed_rows:
        if row["id"] not in latest or row["updated_at"] > latest[row["id"]]["updated_at"]:
            latest[row["id"]] = row
    source_rows = {
        row_id: {"id": row_id, "value": value, "updated_at": updated_at}
        for row_id, value, updated_at in query(items_url, "SELECT id, value, updated_at FROM items")
    }
    assert len(source_rows) > 200
    assert latest == source_rows


def test_concurrent_writers_never_land_a_row_version_twice_without_lookback(items_url: str) -> None:
    landed_rows, runs = extract_while_writing(items_url, lookback_seconds=0)
    assert runs >= 5
    versions = [(row["id"], row["updated_at"]) for row in landed_rows]
    assert len(versions) == len(set(versions))


def extract_while_writing(url: str, lookback_seconds: float) -> tuple[list[dict[str, Any]], int]:
    """Runs the writers for WRITE_SECONDS while extracting incrementally; returns every landed row (all
    runs, the final one after the writers stopped included) and the number of runs."""
    stop = threading.Event()
    failures: list[BaseException] = []
    writers = [
        threading.Thread(target=write_until, args=(url, stop, seed, failures), daemon=True) for seed in (1, 2)
    ]
    for writer in writers:
        writer.start()
    source = source_for(url)
    extraction = TableExtraction(
        table="items",
        incremental=Incremental(
            mode="timestamp", cursor_column="updated_at", lookback_seconds=lookback_seconds
        ),
    )
    rows: list[dict[str, Any]] = []
    watermark = None
    runs = 0
    deadline = time.monotonic() + WRITE_SECONDS
    try:
        while time.monotonic() < deadline:
            watermark = extract_once(source, extraction, watermark, rows)
            runs += 1
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert not failures, failures
    extract_once(source, extraction, watermark, rows)
    return rows, runs + 1


def extract_once(
    source: DatabaseSource,
    extraction: TableExtraction,
    watermark: dict[str, Any] | None,
    rows: list[dict[str, Any]],
) -> dict[str, Any] | None:
    run = source.extract(extraction, primary_key=["id"], watermark=watermark, batch_rows=100)
    rows.extend(landed(run).to_pylist())
    return stored(run.watermark_after)


def write_until(url: str, stop: threading.Event, seed: int, failures: list[BaseException]) -> None:
    rng = random.Random(seed)
    connection = connect(url)
    try:
        while not stop.is_set():
            with connection, connection.cursor() as cursor:
                if rng.random() < 0.4:
                    cursor.execute("INSERT INTO items (value) VALUES (%s)", (rng.randrange(1000),))
                else:
                    cursor.execute(
                        "UPDATE items SET value = %s, updated_at = clock_timestamp() "
                        "WHERE id = (SELECT floor(random() * max(id))::int + 1 FROM items)",
                        (rng.randrange(1000),),
                    )
                if rng.random() < 0.1:
                    time.sleep(SLOW_COMMIT_SECONDS)
    except BaseException as error:
        failures.append(error)
    finally:
        connection.close()


def test_extraction_runs_in_a_read_only_repeatable_read_snapshot(orders_url: str, read_path: str) -> None:
    settings = landed(
        source_for(orders_url, read_path, statement_timeout_seconds=12.5).extract(
            TableExtraction(
                query="SELECT current_setting('transaction_isolation') AS isolation, "
                "current_setting('transaction_read_only') AS read_only, "
                "current_setting('statement_timeout') AS timeout"
            ),
            primary_key=[],
            watermark=None,
        )
    ).to_pylist()
    assert settings == [{"isolation": "repeatable read", "read_only": "on", "timeout": "12500ms"}]


def test_a_write_inside_the_extraction_is_refused(orders_url: str, read_path: str) -> None:
    run_sql(orders_url, "CREATE SEQUENCE counter")
    source = source_for(orders_url, read_path)
    with pytest.raises(DatabaseSourceError, match="read-only transaction") as raised:
        landed(
            source.extract(
                TableExtraction(query="SELECT nextval('counter') AS n"), primary_key=[], watermark=None
            )
        )
    assert raised.value.sqlstate == "25006"
    assert query(orders_url, "SELECT last_value, is_called FROM counter") == [(1, False)]


def test_statement_timeout_fires_with_a_clear_error(orders_url: str, read_path: str) -> None:
    source = source_for(orders_url, read_path, statement_timeout_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(StatementTimeoutError, match=r"statement_timeout_seconds=0\.2") as raised:
        landed(
            source.extract(
                TableExtraction(query="SELECT pg_sleep(5) AS slept"), primary_key=[], watermark=None
            )
        )
    assert time.monotonic() - started < 3
    assert raised.value.sqlstate == "57014"
    assert isinstance(raised.value.__cause__, Exception)


def test_identifiers_are_quoted_exactly(postgres_database: str, read_path: str) -> None:
    run_sql(
        postgres_database,
        """
        CREATE SCHEMA "Sales Dept";
        CREATE TABLE "Sales Dept"."Order Items" ("ID" integer PRIMARY KEY, "order" text, "select" integer,
                                                 "Updated At" timestamp NOT NULL);
        INSERT INTO "Sales Dept"."Order Items" VALUES (1, 'a', 10, '2026-01-01'), (2, 'b', 20, '2026-01-02');
        """,
    )
    extraction = TableExtraction.model_validate(
        {
            "schema": "Sales Dept",
            "table": "Order Items",
            "columns": ["ID", "order", "Updated At"],
            "incremental": {"mode": "timestamp", "cursor_column": "Updated At"},
        }
    )
    source = source_for(postgres_database, read_path)
    first = source.extract(extraction, primary_key=["ID"], watermark=None)
    assert landed(first).to_pylist() == [
        {"ID": 1, "order": "a", "Updated At": datetime(2026, 1, 1)},
        {"ID": 2, "order": "b", "Updated At": datetime(2026, 1, 2)},
    ]
    assert stored(first.watermark_after)["tie_breaker_columns"] == ["ID"]
    assert source.describe_table(extraction).primary_key == ["ID"]


def test_missing_table_lists_the_tables_that_exist(orders_url: str) -> None:
    with pytest.raises(ExtractionConfigError) as raised:
        source_for(orders_url).extract(
            TableExtraction(table="ordrs"), primary_key=["order_id"], watermark=None
        )
    message = str(raised.value)
    assert "'ordrs' not found in the default schema (public)" in message
    assert "Tables and views there: orders." in message


def test_missing_schema_lists_the_schemas(orders_url: str) -> None:
    with pytest.raises(ExtractionConfigError, match=r"Schemas there: .*public"):
        source_for(orders_url).describe_table(
            TableExtraction.model_validate({"table": "orders", "schema": "shop"})
        )


def test_missing_column_names_the_column_the_table_and_the_existing_columns(orders_url: str) -> None:
    extraction = TableExtraction(
        table="orders", incremental=Incremental(mode="timestamp", cursor_column="Updated_At")
    )
    with pytest.raises(ExtractionConfigError) as raised:
        source_for(orders_url).extract(extraction, primary_key=["order_id"], watermark=None)
    assert str(raised.value) == (
        "Column(s) 'Updated_At' not found in table 'orders' (names are case-sensitive). "
        "Its columns: amount, note, order_id, updated_at."
    )


def test_a_watermark_recorded_for_another_cursor_is_refused(orders_url: str) -> None:
    extraction = TableExtraction(table="orders", incremental=BY_UPDATED_AT)
    with pytest.raises(ExtractionConfigError, match="reset the entity's watermark"):
        source_for(orders_url).extract(
            extraction,
            primary_key=["order_id"],
            watermark={"cursor_column": "created_at", "cursor": "2026-01-01"},
        )


PASSWORD = "Corr3ct-horse-battery"
WRONG_PASSWORD = "Wr0ng-staple-9731"


def test_authentication_failure_never_shows_the_password(
    postgres_server: Any, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_server.create_login_role("etl_reader", PASSWORD)
    database = postgres_database.rsplit("/", 1)[1]
    monkeypatch.setenv("ETL_PASSWORD", WRONG_PASSWORD)
    url = f"postgresql+psycopg2://etl_reader:${{ETL_PASSWORD}}@127.0.0.1:{postgres_server.port}/{database}"
    with pytest.raises(DatabaseUnavailableError) as raised:
        source_for(url).describe_table(TableExtraction(table="anything"))
    message = str(raised.value)
    assert "password authentication failed" in message
    assert f"etl_reader:***@127.0.0.1:{postgres_server.port}/{database}" in message
    assert "${ETL_PASSWORD}" in message
    everything = "".join(traceback.format_exception(raised.value))
    assert raised.value.__cause__ is not None
    assert WRONG_PASSWORD not in everything and PASSWORD not in everything

    monkeypatch.setenv("ETL_PASSWORD", PASSWORD)
    run_sql(postgres_database, "CREATE TABLE anything (id integer)")
    assert source_for(url).describe_table(TableExtraction(table="anything")).columns[0].name == "id"


def test_connection_refused_names_the_redacted_url(postgres_server: Any) -> None:
    closed_port = postgres_server.port + 1 if postgres_server.port < 65535 else postgres_server.port - 1
    url = f"postgresql+psycopg2://etl:{WRONG_PASSWORD}@127.0.0.1:{closed_port}/shop"
    with pytest.raises(DatabaseUnavailableError) as raised:
        source_for(url).extract(TableExtraction(table="orders"), primary_key=[], watermark=None)
    message = str(raised.value)
    assert f"Cannot connect to postgresql+psycopg2://etl:***@127.0.0.1:{closed_port}/shop" in message
    assert "refused" in message
    assert WRONG_PASSWORD not in "".join(traceback.format_exception(raised.value))


def test_an_unset_secret_is_named_when_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETL_PASSWORD", raising=False)
    source = source_for("postgresql+psycopg2://etl:${ETL_PASSWORD}@127.0.0.1/shop")
    with pytest.raises(
        MissingSecretError, match=r"ETL_PASSWORD not set \(needed by the database connection url\)"
    ):
        source.describe_table(TableExtraction(table="orders"))


def test_cloud_sql_needs_a_driver_the_connector_supports() -> None:
    """What can be checked without a Cloud SQL instance: the driver choice and its installation."""
    psycopg2_url = f"postgresql+psycopg2://etl:{WRONG_PASSWORD}@/shop"
    with pytest.raises(ExtractionConfigError, match="pg8000 or psycopg") as raised:
        source_for(psycopg2_url, cloud_sql_instance="project:region:instance").describe_table(
            TableExtraction(table="orders")
        )
    assert WRONG_PASSWORD not in str(raised.value)
    if importlib.util.find_spec("pg8000") is None:
        with pytest.raises(DatabaseSourceError, match="install the pg8000 driver package"):
            source_for(
                "postgresql+pg8000://etl@/shop", cloud_sql_instance="project:region:instance"
            ).describe_table(TableExtraction(table="orders"))


@pytest.fixture
def wide_url(postgres_database: str) -> str:
    run_sql(
        postgres_database,
        """
        CREATE TABLE wide AS
        SELECT g AS id, repeat(md5(g::text), 8) AS padding,
               timestamp '2026-01-01' + g * interval '1 second' AS at
        FROM generate_series(1, 200000) g;
        """,
    )
    return postgres_database


def test_memory_is_bounded_by_the_batch_not_the_table(wide_url: str, read_path: str) -> None:
    """200,000 rows of ~280 bytes (55 MB as Arrow) stream in batches of exactly 5,000 rows; what is held at
    any moment (Arrow buffers plus Python objects: driver rows, CSV chunks) is a batch and, on the COPY
    path, a few 4 MiB chunks (about 17 MB measured), whatever the table size."""
    extraction = source_for(wide_url, read_path).extract(
        TableExtraction(table="wide"), primary_key=[], watermark=None, batch_rows=5_000
    )
    batches = iter(extraction)
    first = next(batches)  # the first conversion imports what it needs: not part of the steady state
    sizes, arrow_peak, table_bytes = [first.num_rows], 0, first.nbytes
    del first
    arrow_baseline = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        for batch in batches:
            sizes.append(batch.num_rows)
            table_bytes += batch.nbytes
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_baseline)
            del batch
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sizes == [5_000] * 40
    assert table_bytes > 55_000_000
    assert arrow_peak + python_peak < table_bytes / 2


def test_an_extraction_is_a_single_pass_and_its_watermark_needs_the_whole_pass(orders_url: str) -> None:
    extraction = source_for(orders_url).extract(
        TableExtraction(table="orders", incremental=BY_UPDATED_AT),
        primary_key=["order_id"],
        watermark=None,
        batch_rows=3,
    )
    batches: Iterator[pa.RecordBatch] = iter(extraction)
    next(batches)
    with pytest.raises(RuntimeError, match="once every batch was read"):
        _ = extraction.watermark_after
    batches.close()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="iterated only once"):
        list(extraction)


def test_abandoning_an_extraction_stops_the_copy_and_releases_the_connection(
    postgres_database: str, read_path: str
) -> None:
    """A landing that fails half-way closes the batches: the server stops streaming (no backend of ours is
    left), the copy thread ends, and no watermark can be read from the partial pass."""
    extraction = source_for(postgres_database, read_path).extract(
        TableExtraction(query="SELECT g, md5(g::text) AS digest FROM generate_series(1, 3000000) g"),
        primary_key=[],
        watermark=None,
        batch_rows=1_000,
    )
    ours = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dataplatform-extract'"
    batches: Iterator[pa.RecordBatch] = iter(extraction)
    assert next(batches).num_rows == 1_000
    assert query(postgres_database, ours) == [(1,)]
    batches.close()  # type: ignore[attr-defined]
    assert not [thread for thread in threading.enumerate() if thread.name == "postgres-copy"]
    deadline = time.monotonic() + 5
    while query(postgres_database, ours) != [(0,)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert query(postgres_database, ours) == [(0,)]
    with pytest.raises(RuntimeError, match="abandoned"):
        _ = extraction.watermark_after
