"""What the platform needs from a warehouse, whichever it is (DuckDB, PostgreSQL, BigQuery).

Asset code and the warehouse IO manager talk to this abstract resource only; the environment switch
(`resources/environment.py`) decides which implementation is behind the `warehouse` resource. A table is
named by `(schema, table)`: a DuckDB or PostgreSQL schema, a BigQuery dataset. It is a base class rather
than a `Protocol` so that Dagster can nest it in the IO manager as a resource.

Each engine repeats the signatures of `load`, `stream_table` and the rest word for word, on purpose: a
reader of one engine sees the whole contract it fulfils without opening this file (`duplicates` lists
these as twins; they are the protocol, not copy-paste).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pyarrow as pa

from resources.warehouses.duckdb_file_rows import StagingDatabase
from resources.warehouses.load import LoadMode, LoadResult, PartitionSlice, TableLayout


class Warehouse(dg.ConfigurableResource):
    kind: ClassVar[str]
    """The Dagster kind shown on every table asset (`duckdb`, `postgres`, `bigquery`)."""

    @abstractmethod
    def load(
        self,
        schema: str,
        table: str,
        batches: Iterable[pa.RecordBatch],
        *,
        mode: LoadMode,
        primary_key: list[str] | None = None,
        partition: PartitionSlice | None = None,
        layout: TableLayout | None = None,
    ) -> LoadResult:
        """Load the batches atomically: a failure anywhere leaves the table as it was."""

    def staging_database(self, scratch: Path) -> StagingDatabase:
        """Where staging builds a run's rows before `load` takes them: the scratch DuckDB file `scratch`,
        unless the warehouse can keep them where they are built (DuckDB)."""
        return StagingDatabase(scratch)

    @abstractmethod
    def stream_table(
        self,
        schema: str,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        partition: PartitionSlice | None = None,
        batch_rows: int = 100_000,
    ) -> pa.RecordBatchReader:
        """The table's rows (all columns, or `columns` in that order; only `partition`'s rows if given) in
        batches of at most `batch_rows`; the connection lives until the reader is exhausted."""

    @abstractmethod
    def query(self, sql: str, parameters: Sequence[object] | None = None) -> list[tuple]:
        """Run one statement in the warehouse's own dialect and return its rows."""

    @abstractmethod
    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, warehouse type) of each column in table order; empty when the table does not exist."""

    @abstractmethod
    def tables(self, schema: str) -> list[str]:
        """Names of the tables and views in `schema`, sorted; empty when the schema does not exist."""

    @abstractmethod
    def describe(self) -> str:
        """Where this warehouse is, for people (a file, a URL without password, a project)."""

    @abstractmethod
    def quote(self, name: str) -> str:
        """An identifier quoted for this warehouse's SQL."""

    @abstractmethod
    def table_ref(self, schema: str, table: str) -> str:
        """The table's fully qualified, quoted name for this warehouse's SQL."""
