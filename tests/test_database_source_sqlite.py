"""The database connector on SQLite (a file database, as the demo shop's): declared types, incremental
extraction by text timestamps with a tie-breaker, key mode, custom queries, read-only extraction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest
from test_database_source_postgres import landed, stored

from resources.databases.config import DatabaseConnection, Incremental, TableExtraction
from resources.databases.errors import DatabaseSourceError, ExtractionConfigError
from resources.databases.source import DatabaseSource

BY_UPDATED_AT = Incremental(mode="timestamp", cursor_column="updated_at", lookback_seconds=0)
"""The strict filter `(cursor, key) > watermark`, which these tests pin (the default re-reads a window)."""
CUSTOMERS = TableExtraction(table="customers", incremental=BY_UPDATED_AT)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """Timestamps stored as TEXT like the demo shop (`2026-01-06 22:59:55`), where text order is time
    order."""
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            CREATE TABLE customers (
                customer_id INTEGER PRIMARY KEY, email TEXT NOT NULL, balance REAL, vip BOOLEAN,
                signed_up DATETIME, photo BLOB, updated_at TEXT NOT NULL
            );
            INSERT INTO customers VALUES
                (1, 'a@example.com', 10.5, 1, '2025-12-01 08:00:00', x'00ff', '2026-01-06 22:59:50'),
                (2, 'b@example.com', NULL, 0, NULL, NULL, '2026-01-06 22:59:55'),
                (3, '', 0.0, NULL, '2025-12-03', x'', '2026-01-06 22:59:55');
            """
        )
    connection.close()
    return path


def execute(path: Path, sql: str) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.executescript(sql)
    connection.close()


def source_for(path: Path) -> DatabaseSource:
    return DatabaseSource(DatabaseConnection(url=f"sqlite:///{path}"))


def test_full_extraction_keeps_declared_types_and_stored_text(shop: Path) -> None:
    table = landed(
        source_for(shop).extract(TableExtraction(table="customers"), primary_key=[], watermark=None)
    )
    assert {field.name: field.type for field in table.schema} == {
        "customer_id": pa.int64(),
        "email": pa.string(),
        "balance": pa.float64(),
        "vip": pa.string(),
        "signed_up": pa.string(),
        "photo": pa.binary(),
        "updated_at": pa.string(),
    }
    assert table.to_pylist()[0] == {
        "customer_id": 1,
        "email": "a@example.com",
        "balance": 10.5,
        "vip": "1",
        "signed_up": "2025-12-01 08:00:00",
        "photo": b"\x00\xff",
        "updated_at": "2026-01-06 22:59:50",
    }
    assert table.column("email").to_pylist()[2] == ""
    assert table.column("balance").to_pylist()[1] is None


def test_describe_table_reports_the_primary_key(shop: Path) -> None:
    description = source_for(shop).describe_table(TableExtraction(table="customers"))
    assert description.primary_key == ["customer_id"]
    assert description.schema.field("email").nullable is False


def test_text_timestamps_with_a_tie_breaker_lose_and_repeat_nothing(shop: Path) -> None:
    source = source_for(shop)
    first = source.extract(CUSTOMERS, primary_key=["customer_id"], watermark=None, batch_rows=2)
    assert landed(first).column("customer_id").to_pylist() == [1, 2, 3]
    watermark = stored(first.watermark_after)
    assert watermark == {
        "cursor_column": "updated_at",
        "cursor": "2026-01-06 22:59:55",
        "tie_breaker_columns": ["customer_id"],
        "tie_breaker": [3],
    }
    execute(
        shop,
        """
        INSERT INTO customers (customer_id, email, updated_at)
        VALUES (4, 'd@example.com', '2026-01-06 22:59:55');
        UPDATE customers SET email = 'a2@example.com', updated_at = '2026-01-07 09:00:00'
        WHERE customer_id = 1;
        """,
    )
    second = source.extract(CUSTOMERS, primary_key=["customer_id"], watermark=watermark)
    assert landed(second).column("customer_id").to_pylist() == [4, 1]
    assert stored(second.watermark_after)["cursor"] == "2026-01-07 09:00:00"


def test_lookback_on_text_timestamps_rereads_the_window(shop: Path) -> None:
    incremental = Incremental(mode="timestamp", cursor_column="updated_at", lookback_seconds=3)
    extraction = TableExtraction(table="customers", incremental=incremental)
    watermark = {"cursor_column": "updated_at", "cursor": "2026-01-06 22:59:55", "tie_breaker": [3]}
    rows = landed(source_for(shop).extract(extraction, primary_key=["customer_id"], watermark=watermark))
    assert rows.column("customer_id").to_pylist() == [2, 3]


def test_key_mode_reads_only_new_keys(shop: Path) -> None:
    extraction = TableExtraction(
        table="customers", incremental=Incremental(mode="key", cursor_column="customer_id")
    )
    source = source_for(shop)
    first = source.extract(extraction, primary_key=["customer_id"], watermark=None)
    landed(first)
    assert first.watermark_after == {"cursor_column": "customer_id", "cursor": 3}
    execute(
        shop,
        "INSERT INTO customers (customer_id, email, updated_at) VALUES (7, 'g@example.com', '2020-01-01')",
    )
    second = source.extract(extraction, primary_key=["customer_id"], watermark=stored(first.watermark_after))
    assert landed(second).column("customer_id").to_pylist() == [7]


def test_custom_query_infers_types_and_tracks_the_greatest_cursor(shop: Path) -> None:
    extraction = TableExtraction(
        query="SELECT customer_id, upper(email) AS email, updated_at FROM customers "
        "WHERE :watermark IS NULL OR updated_at > :watermark",
        incremental=BY_UPDATED_AT,
    )
    source = source_for(shop)
    first = source.extract(extraction, primary_key=["customer_id"], watermark=None)
    table = landed(first)
    assert table.schema.field("customer_id").type == pa.int64()
    assert table.column("email").to_pylist() == ["A@EXAMPLE.COM", "B@EXAMPLE.COM", ""]
    assert first.watermark_after == {"cursor_column": "updated_at", "cursor": "2026-01-06 22:59:55"}
    execute(shop, "UPDATE customers SET updated_at = '2026-01-08 00:00:00' WHERE customer_id = 2")
    second = source.extract(extraction, primary_key=["customer_id"], watermark=stored(first.watermark_after))
    assert landed(second).column("customer_id").to_pylist() == [2]


def test_a_write_inside_the_extraction_is_refused(shop: Path) -> None:
    extraction = TableExtraction(query="DELETE FROM customers RETURNING customer_id")
    with pytest.raises(DatabaseSourceError, match="readonly"):
        landed(source_for(shop).extract(extraction, primary_key=[], watermark=None))
    connection = sqlite3.connect(shop)
    assert connection.execute("SELECT count(*) FROM customers").fetchone() == (3,)
    connection.close()


def test_missing_table_lists_the_tables_that_exist(shop: Path) -> None:
    with pytest.raises(
        ExtractionConfigError, match=r"'payments' not found .* Tables and views there: customers\."
    ):
        source_for(shop).extract(TableExtraction(table="payments"), primary_key=[], watermark=None)
