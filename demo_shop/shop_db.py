"""The shop's operational SQLite database (customers, payments), built beside the live one and swapped in."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from demo_shop.writers import atomic_target

_SCHEMA = """
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    country TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE payments (
    payment_id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    method TEXT NOT NULL,
    amount REAL NOT NULL,
    status TEXT NOT NULL,
    paid_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
_INDEXES = """
CREATE INDEX customers_updated_at ON customers (updated_at);
CREATE INDEX payments_updated_at ON payments (updated_at);
"""
_BULK_LOAD_PRAGMAS = "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
"""Safe here: a failed load is thrown away whole instead of being rolled back or recovered."""


def _as_sqlite_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """SQLite has no timestamp type; store timestamps in the same text form the files use."""
    return column.cast(pa.string()) if pa.types.is_timestamp(column.type) else column


class ShopDatabase:
    """Insert handle for the database being built."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def insert(self, table_name: str, rows: pa.Table) -> None:
        """Append rows whose column names match the table's; timestamps are stored as their text form."""
        columns = [_as_sqlite_column(column) for column in rows.columns]
        placeholders = ", ".join("?" * len(columns))
        statement = f"INSERT INTO {table_name} ({', '.join(rows.column_names)}) VALUES ({placeholders})"
        self._connection.executemany(statement, zip(*(column.to_pylist() for column in columns), strict=True))


@contextmanager
def shop_database(path: Path) -> Iterator[ShopDatabase]:
    """Build a fresh database at a temporary path and replace ``path`` with it once fully loaded.

    Indexes are created after the bulk insert, which is faster than maintaining them row by row.
    """
    with atomic_target(path) as temporary:
        connection = sqlite3.connect(temporary)
        try:
            connection.executescript(_BULK_LOAD_PRAGMAS + _SCHEMA)
            yield ShopDatabase(connection)
            connection.executescript(_INDEXES)
            connection.commit()
        finally:
            connection.close()
