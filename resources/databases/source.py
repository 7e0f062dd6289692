"""Tables (or custom queries) of a SQL database as streams of Arrow record batches, full or incremental.

One extraction is one read-only transaction with a consistent snapshot (`engine`): what to
select is decided in it (`plan`), then rows stream in batches of `batch_rows`, so memory is
bounded by the batch whatever the table size. Two read paths give identical batches (`column_types`):

- PostgreSQL with psycopg2 (the default there): `COPY (SELECT ...) TO STDOUT` parsed by Arrow
  (`postgres_copy`), 4-5x the cursor's rows/s;
- any other database or driver: a server-side cursor (`stream_results`), rows converted column-wise.

The extraction returns the new watermark (`watermark`) and never stores it: the caller persists
it once its landing committed. Messages name the database by its URL with the password hidden, and
driver errors stay chained with their SQLSTATE (`errors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from itertools import chain
from types import TracebackType
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from resources.databases.column_types import ColumnType, arrow_array, inferred_column_types
from resources.databases.config import DatabaseConnection, TableExtraction
from resources.databases.engine import DatabaseEngine
from resources.databases.plan import (
    ExtractionPlan,
    TableDescription,
    describe_table,
    missing_query_cursor,
    query_plan,
    table_plan,
)
from resources.databases.postgres_copy import copy_batches
from resources.databases.watermark import WatermarkTracker


class Extraction:
    """One extraction, a single pass: iterate it for `pyarrow.RecordBatch`es (all of `schema`), then read
    `rows` and `watermark_after`. It holds a database connection until the iteration ends; `close()` (or
    a `with` block) releases it when the batches are not wanted after all."""

    def __init__(
        self,
        schema: pa.Schema,
        query_text: str,
        batches: Generator[pa.RecordBatch, None, None],
        tracker: WatermarkTracker | None,
        release: Callable[[bool], None],
    ) -> None:
        self.schema = schema
        self.query_text = query_text
        """The SQL sent (no secrets) and its parameters, for logs."""
        self.rows = 0
        self._batches = batches
        self._tracker = tracker
        self._release = release
        self._state = "ready"

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._state != "ready":
            raise RuntimeError(f"This extraction is {self._state}: an extraction can be iterated only once.")
        self._state = "running"
        completed = False
        try:
            for batch in self._batches:
                if self._tracker is not None:
                    self._tracker.observe(batch)
                self.rows += batch.num_rows
                yield batch
            completed = True
        finally:
            self._state = "finished" if completed else "abandoned"
            self._batches.close()
            self._release(completed)

    @property
    def watermark_after(self) -> dict[str, Any] | None:
        """Where the next run starts (None for a full extraction, or while nothing was ever read). Known
        only after the whole iteration: store it once the landing committed, never before."""
        if self._state != "finished":
            raise RuntimeError(
                f"The watermark is known only once every batch was read; this extraction is {self._state}."
            )
        return None if self._tracker is None else self._tracker.watermark

    def close(self) -> None:
        if self._state == "ready":
            self._state = "abandoned"
            self._batches.close()
            self._release(False)

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class DatabaseSource:
    """A SQL database reached through SQLAlchemy (any URL), or a Cloud SQL instance through Google's
    connector, built from the catalog's `DatabaseConnection`. Connects once per call."""

    def __init__(self, connection: DatabaseConnection, *, postgres_copy: bool = True) -> None:
        """`postgres_copy`: read PostgreSQL through COPY when the driver is psycopg2 (the default); False
        forces the server-side cursor, which every driver supports."""
        self.engine = DatabaseEngine(connection)
        self.postgres_copy = postgres_copy

    def describe_table(self, extraction: TableExtraction) -> TableDescription:
        """Columns (Arrow types, nullability) and primary key of the extraction's table."""
        connection = self.engine.snapshot()
        try:
            return describe_table(connection, extraction, self.engine)
        finally:
            connection.close()

    def extract(
        self,
        extraction: TableExtraction,
        *,
        primary_key: list[str],
        watermark: dict[str, Any] | None,
        batch_rows: int = 50_000,
        until: str | int | None = None,
    ) -> Extraction:
        """Start an extraction: full (no `incremental`), incremental past `watermark` (the previous run's
        `watermark_after`) and, for a re-extracted range, up to `until` included, or the custom `query`.
        `primary_key` is the default tie-breaker. The snapshot
        is taken when this returns; rows flow while the result is iterated. Database errors surface here
        or during the iteration, as `DatabaseSourceError`s."""
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        connection = self.engine.snapshot()
        try:
            if extraction.query is not None:
                plan = query_plan(connection, extraction, watermark, self.engine, until)
            else:
                description = describe_table(connection, extraction, self.engine)
                plan = table_plan(description, extraction, primary_key, watermark, until)
            return self._started(connection, plan, batch_rows)
        except BaseException:
            connection.invalidate()
            connection.close()
            raise

    def close(self) -> None:
        """Release the engine (and the Cloud SQL connector)."""
        self.engine.dispose()

    def __enter__(self) -> DatabaseSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _started(self, connection: sa.Connection, plan: ExtractionPlan, batch_rows: int) -> Extraction:
        compiled = plan.statement.compile(dialect=connection.dialect)
        query_text = str(compiled)
        if compiled.params:
            query_text += f"\n-- parameters: {json.dumps(compiled.params, default=str)}"
        if plan.columns is not None and self._copies(connection):
            dbapi_connection = connection.connection.dbapi_connection
            with dbapi_connection.cursor() as cursor:
                select_sql = cursor.mogrify(str(compiled), compiled.params).decode()
            columns = plan.columns
            batches = copy_batches(dbapi_connection, select_sql, columns, batch_rows)
        else:
            columns, batches = self._cursor_batches(connection, plan, batch_rows)
        schema = pa.schema([column.field for column in columns])
        if plan.tracker is not None and plan.tracker.columns.cursor.name not in schema.names:
            raise missing_query_cursor(plan.tracker.columns.cursor.name, schema.names)

        def release(completed: bool) -> None:
            if not completed:
                connection.invalidate()
            connection.close()

        return Extraction(schema, query_text, self._translated(batches, plan.what), plan.tracker, release)

    def _copies(self, connection: sa.Connection) -> bool:
        dialect = connection.dialect
        return self.postgres_copy and dialect.name == "postgresql" and dialect.driver == "psycopg2"

    def _cursor_batches(
        self, connection: sa.Connection, plan: ExtractionPlan, batch_rows: int
    ) -> tuple[list[ColumnType], Iterator[pa.RecordBatch]]:
        try:
            result = connection.execution_options(yield_per=batch_rows).execute(plan.statement)
            partitions = result.partitions(batch_rows)
            columns = plan.columns
            if columns is None:
                first = next(partitions, [])
                columns = inferred_column_types(list(result.keys()), first)
                partitions = chain([first] if first else [], partitions)
        except sa_exc.DBAPIError as error:
            raise self.engine.failed(error, plan.what) from error
        schema = pa.schema([column.field for column in columns])
        batches = (
            pa.RecordBatch.from_arrays(
                [
                    arrow_array(values, column)
                    for values, column in zip(zip(*rows, strict=True), columns, strict=True)
                ],
                schema=schema,
            )
            for rows in partitions
        )
        return columns, batches

    def _translated(
        self, batches: Iterator[pa.RecordBatch], what: str
    ) -> Generator[pa.RecordBatch, None, None]:
        """Driver errors while rows flow (timeouts, lost connections), raised as ours, the cause chained."""
        try:
            yield from batches
        except (sa_exc.DBAPIError, self.engine.driver_error) as error:
            raise self.engine.failed(error, what) from error
