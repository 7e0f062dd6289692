"""The embedded default warehouse: one DuckDB file.

DuckDB admits one writing process at a time. Steps of one run (and dbt, which runs as a subprocess) take
turns on the file; a step that finds it locked waits up to `lock_timeout_seconds` instead of failing on
the first conflict. Tables are replaced with one `CREATE OR REPLACE ... AS SELECT`, which DuckDB commits
atomically: a failed load leaves the previous table as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa

LOCK_RETRY_INTERVAL_SECONDS = 0.2


def quote_identifier(name: str) -> str:
    """A DuckDB identifier, quoted so that no configured name is ever read as SQL."""
    return '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


class DuckDBWarehouse(dg.ConfigurableResource):
    """A DuckDB database file; staged tables live in one schema per layer."""

    path: str
    lock_timeout_seconds: float = 60.0

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(LOCK_RETRY_INTERVAL_SECONDS)
        try:
            yield con
        finally:
            con.close()

    def replace_table(self, schema: str, table: str, select_sql: str) -> int:
        """Atomically replace `schema.table` with the result of `select_sql`; returns its row count."""
        target = qualified_name(schema, table)
        with self.connection() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
            con.execute(f"CREATE OR REPLACE TABLE {target} AS {select_sql}")
            (rows,) = con.execute(f"SELECT count(*) FROM {target}").fetchone()
        return int(rows)

    def stream(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Result batches of at most `batch_rows` rows; the connection stays open while they are read."""
        with self.connection() as con:
            reader = con.sql(sql).to_arrow_reader(batch_rows)
            yield from reader

    def query(self, sql: str, parameters: list[object] | None = None) -> list[tuple]:
        with self.connection() as con:
            return con.execute(sql, parameters).fetchall()

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, type) of each column, in table order."""
        with self.connection() as con:
            return con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [schema, table],
            ).fetchall()
