"""PostgreSQL as a warehouse to write to: Arrow batches loaded with `COPY ... FROM STDIN`, one transaction
per load (Dagster ships no Postgres IO manager; this is ours).

Every load is one transaction, so a failure anywhere (bad batch, type conflict, killed process, lost
connection) leaves the table exactly as it was; loads of the same table are serialized by an advisory
lock. The bulk path is only ever COPY of a stream encoded batch by batch in a thread of its own
(`postgres_load.CopyStream`): PostgreSQL's binary format when every column has an encoding and the target
columns have the batches' exact types (`postgres_binary`; the server parses it ~3x faster than CSV), CSV
otherwise; memory stays a few batches whatever the row count. Modes:

- `replace`: COPY into a new table, then DROP the old one and RENAME the new one in the same transaction:
  readers see the old table or the new one, never a partial one (they wait on the swap's lock briefly).
  A table that views depend on (dbt's staging models) cannot be dropped: it is TRUNCATEd and refilled in
  the same transaction instead (new columns added first), and readers wait for the commit. A column whose
  type the batches change (schema evolution widens a staged column) is altered in that transaction, the
  views reading the table dropped and recreated around it (`retype_under_views`).
- `append`: COPY into the table (created if missing).
- `upsert`: COPY into a TEMP staging table, then `INSERT ... SELECT ... ON CONFLICT (pk) DO UPDATE`. A table
  created here gets the primary key; an existing one must have a unique index on the key columns.
  Tombstones (rows with `_deleted` true) first delete their keys (`DELETE ... USING` the staging table) and
  are not inserted; the column is never added to the table.

Schema evolution (append/upsert): columns the batches carry and the table lacks are added (nullable) in the
same transaction; a column whose type changed is refused with what to do. Identifiers are always quoted.
The URL may reference `${ENV}` variables, resolved at connect time; messages show it with the password
hidden and driver messages are redacted with the secret values (`database_errors.DatabaseLocation`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from psycopg2 import sql
from pydantic import Field

from resources.databases.column_types import ColumnType
from resources.databases.errors import DatabaseLocation, sqlstate_of
from resources.databases.postgres_copy import copy_batches
from resources.secrets import env_references, resolve_env
from resources.warehouses.base import Warehouse
from resources.warehouses.load import (
    TOMBSTONE_COLUMN,
    LoadMode,
    LoadResult,
    PartitionSlice,
    TableLayout,
    check_load_request,
    repeated_keys_error,
    repeated_keys_sql,
)
from resources.warehouses.postgres_load import CopyStream, loads_into, postgres_type, with_first

MAX_IDENTIFIER_BYTES = 63
COPY_READ_BYTES = 1 << 16
READ_BATCH_ROWS = 100_000
APPLICATION_NAME = "platform-postgres-warehouse"


class PostgresWarehouseError(RuntimeError):
    """The warehouse failed a load or a read; `sqlstate` is the server's error code when it sent one."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class LoadConfigError(PostgresWarehouseError, ValueError):
    """The load cannot be done as asked against the table as it is: a human decides."""


class SchemaChangeError(LoadConfigError):
    """The batches change the type of an existing column: a human decides (migrate or replace)."""


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database to load Arrow batches into and read tables back from."""

    kind: ClassVar[str] = "postgres"
    url: str
    """SQLAlchemy URL, `postgresql+psycopg2://user:${PASSWORD_VAR}@host:port/database`."""
    connect_timeout_seconds: int = 10
    optional_env: list[str] = Field(default_factory=list)
    """Variables of `url` that may be unset, read as empty: an empty password is no password (libpq then
    uses `PGPASSWORD`, `~/.pgpass`, or the server's trust or peer authentication)."""

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
        """Load `batches` (all of one Arrow schema) into `schema.table` in one transaction. `layout` is
        BigQuery's business: PostgreSQL tables here are plain heap tables."""
        if mode not in get_args(LoadMode):
            raise ValueError(f"mode must be one of {', '.join(get_args(LoadMode))}, not {mode!r}")
        if mode == "upsert" and not primary_key:
            raise ValueError("mode='upsert' needs primary_key (the columns that identify a row)")
        _check_identifiers([schema, table, *(primary_key or [])])
        started = time.monotonic()
        arrow_schema, stream = with_first(batches)
        if arrow_schema is not None:
            check_load_request(mode, primary_key, partition, arrow_schema.names, f"{schema}.{table}")
        location, connection = self._connect()
        try:
            with connection.cursor() as cursor:
                loader = _Load(cursor, schema, table, primary_key or [])
                rows, bytes_sent = loader.run(mode, arrow_schema, stream, partition)
                columns = loader.existing_columns() or []
            connection.commit()
        except BaseException as error:
            _rollback(connection)
            if isinstance(error, psycopg2.Error):
                raise PostgresWarehouseError(
                    f"{mode} of {schema}.{table} on {location.display} failed, nothing was changed: "
                    f"{location.driver_message(error)}",
                    sqlstate=sqlstate_of(error),
                ) from error
            raise
        finally:
            connection.close()
        return LoadResult(rows, bytes_sent, time.monotonic() - started, list(columns))

    def read_arrow(self, query: str) -> pa.Table:
        """The result of `query` as an Arrow table (read with COPY TO, typed from the result's columns)."""
        return self.stream_arrow(query).read_all()

    def stream_arrow(self, query: str, batch_rows: int = READ_BATCH_ROWS) -> pa.RecordBatchReader:
        """The result of `query` as batches of at most `batch_rows` rows; the connection stays open until
        the reader is exhausted (or garbage collected)."""
        location, connection = self._connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT * FROM ({query}) AS result LIMIT 0")
                columns = [_column_type(column) for column in cursor.description]
        except psycopg2.Error as error:
            connection.close()
            raise _read_error(location, error) from error
        except BaseException:
            connection.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from copy_batches(connection, query, columns, batch_rows)
                connection.commit()
            except psycopg2.Error as error:
                raise _read_error(location, error) from error
            finally:
                connection.close()

        schema = pa.schema([column.field for column in columns])
        return pa.RecordBatchReader.from_batches(schema, batches())

    def stream_table(
        self,
        schema: str,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        partition: PartitionSlice | None = None,
        batch_rows: int = READ_BATCH_ROWS,
    ) -> pa.RecordBatchReader:
        selected = ", ".join(self.quote(name) for name in columns) if columns else "*"
        query = f"SELECT {selected} FROM {self.table_ref(schema, table)}"
        if partition is not None:
            values = ", ".join("'" + str(value).replace("'", "''") + "'" for value in partition.values)
            query += f" WHERE CAST({self.quote(partition.column)} AS text) = ANY(ARRAY[{values}]::text[])"
        return self.stream_arrow(query, batch_rows)

    def tables(self, schema: str) -> list[str]:
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
            [schema],
        )
        return [name for (name,) in rows]

    def describe(self) -> str:
        return self.display_url()

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def table_ref(self, schema: str, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}"

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, type) of each column in table order; empty when the table does not exist."""
        _, connection = self._connect()
        try:
            with connection.cursor() as cursor:
                return _Load(cursor, schema, table, []).existing_columns() or []
        finally:
            connection.close()

    def query(self, statement: str, parameters: Sequence[Any] | None = None) -> list[tuple]:
        """Rows of one statement (committed), for small lookups and tests."""
        location, connection = self._connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, parameters)
                rows = cursor.fetchall() if cursor.description else []
            connection.commit()
            return rows
        except psycopg2.Error as error:
            raise PostgresWarehouseError(
                f"query on {location.display} failed: {location.driver_message(error)}",
                sqlstate=sqlstate_of(error),
            ) from error
        finally:
            connection.close()

    def display_url(self) -> str:
        """The URL with the password hidden (references unresolved), for logs."""
        return _parsed_url(self.url).render_as_string(hide_password=True)

    def _connect(self) -> tuple[DatabaseLocation, psycopg2.extensions.connection]:
        environ = {**dict.fromkeys(self.optional_env, ""), **os.environ}
        url = _parsed_url(resolve_env(self.url, environ, where="the Postgres warehouse url"))
        secrets = [url.password] if url.password else []
        location = DatabaseLocation(url, [str(secret) for secret in secrets])
        if url.get_backend_name() != "postgresql":
            raise PostgresWarehouseError(f"{location.display} is not a PostgreSQL URL")
        arguments: dict[str, Any] = {
            "connect_timeout": self.connect_timeout_seconds,
            "application_name": APPLICATION_NAME,
            **url.translate_connect_args(username="user", database="dbname"),
            **url.query,
        }
        try:
            connection = psycopg2.connect(**arguments)
        except psycopg2.Error as error:
            names = env_references(self.url)
            references = f" (from {', '.join(f'${{{name}}}' for name in names)})" if names else ""
            raise PostgresWarehouseError(
                f"Cannot connect to {location.display}: {location.driver_message(error)}. Check that the "
                f"server is reachable, and the database name, user and password{references}.",
                sqlstate=sqlstate_of(error),
            ) from error
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        connection.commit()
        return location, connection


class _Load:
    """The statements of one load, on a cursor inside the load's transaction."""

    def __init__(self, cursor: Any, schema: str, table: str, primary_key: list[str]) -> None:
        self.cursor = cursor
        self.schema = schema
        self.table = table
        self.primary_key = primary_key
        self.target = sql.Identifier(schema, table)

    def run(
        self,
        mode: str,
        arrow_schema: pa.Schema | None,
        batches: Iterator[pa.RecordBatch],
        partition: PartitionSlice | None = None,
    ) -> tuple[int, int]:
        self.cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        if self.cursor.fetchone() is None:  # a role with table privileges only may not CREATE SCHEMA
            # `IF NOT EXISTS` does not guard against a concurrent creator: two first loads into one new
            # schema (two workers, or a pool of two writers) would fail one of them on pg_namespace's
            # unique index. The second waits here until the first has committed, then finds the schema.
            self.execute(
                sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))").format(
                    sql.Literal(f"schema:{self.schema}")
                )
            )
            self.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        self.execute(
            sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))").format(
                sql.Literal(f"{self.schema}.{self.table}")
            )
        )
        existing = self.existing_columns()
        if arrow_schema is None:
            if mode == "replace":
                if existing is None:
                    raise ValueError(
                        f"replace of {self.schema}.{self.table} got no batches and the table does not "
                        f"exist: there are no columns to create it with (pass a pyarrow.RecordBatchReader "
                        f"to load an empty table)."
                    )
                self.execute(sql.SQL("TRUNCATE {}").format(self.target))
            return 0, 0
        _check_identifiers(arrow_schema.names)
        columns = [(field.name, postgres_type(field.type)) for field in arrow_schema]
        missing_key = [name for name in self.primary_key if name not in arrow_schema.names]
        if missing_key:
            raise ValueError(f"primary key column(s) {missing_key} are not in the batches' columns")
        stream = CopyStream(batches, arrow_schema)
        if mode == "replace" and existing is not None and self.has_dependent_views():
            if self.retype_under_views(existing, columns):
                existing = self.existing_columns() or []
            self.evolve(existing, columns, arrow_schema)
            self.execute(sql.SQL("TRUNCATE {}").format(self.target))
            self.copy(self.target, columns, stream)
        elif mode == "replace":
            self.replace(columns, stream)
        else:
            stored = [column for column in columns if column[0] != TOMBSTONE_COLUMN]
            if existing is None:
                self.create(self.target, stored, with_key=bool(self.primary_key))
            else:
                self.evolve(existing, stored, arrow_schema)
                if mode == "upsert":
                    self.check_unique_key()
            if mode == "replace_partitions":
                assert partition is not None
                self.execute(
                    sql.SQL("DELETE FROM {} WHERE CAST({} AS text) = ANY({})").format(
                        self.target,
                        sql.Identifier(partition.column),
                        sql.Literal([str(value) for value in partition.values]),
                    )
                )
            if mode == "upsert":
                self.upsert(columns, stream)
            else:
                self.copy(self.target, columns, stream)
        return stream.rows - stream.tombstones, stream.bytes_sent

    def has_dependent_views(self) -> bool:
        """Views (dbt's staging models) read the table: it cannot be swapped, only emptied and refilled in
        place (readers of the views wait for the load's commit instead of failing)."""
        self.cursor.execute(
            "SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "WHERE d.refobjid = %s::regclass AND r.ev_class <> d.refobjid LIMIT 1",
            (self.target.as_string(self.cursor),),
        )
        return self.cursor.fetchone() is not None

    def retype_under_views(self, existing: list[tuple[str, str]], columns: list[tuple[str, str]]) -> bool:
        """`replace` in place (views read the table): give the columns whose type the batches change
        their new type. PostgreSQL refuses ALTER COLUMN TYPE on a column a view uses, so the views reading
        the table (and the views reading those) are dropped and recreated from their own definitions,
        with their options, owner, comments and grants, in this transaction: readers never see them
        missing, and a view that no longer compiles with the new type fails the load and leaves
        everything as it was. The table is emptied first (`replace` refills it), so no value is cast.
        Returns whether any column was retyped."""
        current = dict(existing)
        changed = [
            (name, incoming)
            for name, incoming in columns
            if name in current and not loads_into(incoming, current[name])
        ]
        if not changed:
            return False
        self.cursor.execute("SELECT current_setting('search_path')")
        (search_path,) = self.cursor.fetchone()
        # Definitions with every name schema-qualified, whatever the session's search_path.
        self.cursor.execute("SELECT set_config('search_path', 'pg_catalog, pg_temp', true)")
        views = self.dependent_views()
        for view in reversed(views):
            self.execute(sql.SQL("DROP VIEW {}").format(view.name))
        self.execute(sql.SQL("TRUNCATE {}").format(self.target))
        for name, incoming in changed:
            self.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING NULL").format(
                    self.target, sql.Identifier(name), sql.SQL(incoming)
                )
            )
        for view in views:
            for statement in view.recreate():
                self.execute(statement)
        self.cursor.execute("SELECT set_config('search_path', %s, true)", (search_path,))
        return True

    def dependent_views(self) -> list[_View]:
        """The views reading the table, directly or through other views, in creation order."""
        self.cursor.execute(
            "WITH RECURSIVE dependents(oid, depth) AS ("
            " SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
            " WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass"
            " AND d.refobjid = %s::regclass AND r.ev_class <> d.refobjid"
            " UNION"
            " SELECT r.ev_class, dependents.depth + 1 FROM dependents"
            " JOIN pg_depend d ON d.refobjid = dependents.oid AND d.refclassid = 'pg_class'::regclass"
            " AND d.classid = 'pg_rewrite'::regclass"
            " JOIN pg_rewrite r ON r.oid = d.objid WHERE r.ev_class <> d.refobjid)"
            " SELECT c.oid, n.nspname, c.relname, c.relkind, max(dependents.depth) AS depth,"
            " pg_get_viewdef(c.oid), pg_get_userbyid(c.relowner), c.reloptions,"
            " obj_description(c.oid, 'pg_class'),"
            " (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid),"
            " (SELECT count(*) FROM pg_rewrite w WHERE w.ev_class = c.oid AND w.rulename <> '_RETURN')"
            " FROM dependents JOIN pg_class c ON c.oid = dependents.oid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " GROUP BY c.oid, n.nspname, c.relname, c.relkind ORDER BY depth, n.nspname, c.relname",
            (self.target.as_string(self.cursor),),
        )
        rows = self.cursor.fetchall()
        unsupported = [
            f"{schema}.{name}" for _, schema, name, kind, _, _, _, _, _, triggers, rules in rows
            if kind != "v" or triggers or rules
        ]  # fmt: skip
        if unsupported:
            raise SchemaChangeError(
                f"cannot change column types of {self.schema}.{self.table}: {', '.join(unsupported)} "
                f"read(s) it and is a materialized view or has triggers or rules, which this load does "
                f"not recreate. Drop them, load, and recreate them (or migrate the table by hand)."
            )
        views = []
        for oid, schema, name, _, _, definition, owner, options, comment, _, _ in rows:
            self.cursor.execute(
                "SELECT a.attname, d.description FROM pg_description d JOIN pg_attribute a"
                " ON a.attrelid = d.objoid AND a.attnum = d.objsubid"
                " WHERE d.objoid = %s AND d.classoid = 'pg_class'::regclass AND d.objsubid > 0"
                " ORDER BY a.attnum",
                (oid,),
            )
            column_comments = self.cursor.fetchall()
            self.cursor.execute(
                "SELECT CASE WHEN g.grantee = 0 THEN NULL ELSE pg_get_userbyid(g.grantee) END,"
                " g.privilege_type, g.is_grantable FROM pg_class c, aclexplode(c.relacl) g"
                " WHERE c.oid = %s ORDER BY 1, 2",
                (oid,),
            )
            grants = self.cursor.fetchall()
            self.cursor.execute("SELECT current_user")
            (user,) = self.cursor.fetchone()
            views.append(
                _View(
                    sql.Identifier(schema, name),
                    definition.strip().rstrip(";"),
                    options or [],
                    owner if owner != user else None,
                    comment,
                    column_comments,
                    grants,
                )
            )
        return views

    def replace(self, columns: list[tuple[str, str]], stream: CopyStream) -> None:
        new_name = _unique_name(self.table, "load")
        new_table = sql.Identifier(self.schema, new_name)
        self.create(new_table, columns, with_key=False)
        self.copy(new_table, columns, stream)
        if self.primary_key:
            self.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                    new_table, sql.Identifier(f"{new_name}_pkey"), _names(self.primary_key)
                )
            )
        self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.target))
        self.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new_table, sql.Identifier(self.table)))
        if self.primary_key:
            self.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    self.target,
                    sql.Identifier(f"{new_name}_pkey"),
                    sql.Identifier(_truncated(self.table, MAX_IDENTIFIER_BYTES - 5) + "_pkey"),
                )
            )

    def upsert(self, columns: list[tuple[str, str]], stream: CopyStream) -> None:
        staging = sql.Identifier(_unique_name(self.table, "stage"))
        self.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(staging, _definitions(columns))
        )
        self.copy(staging, columns, stream)
        names = [name for name, _ in columns if name != TOMBSTONE_COLUMN]
        live = sql.SQL("")
        if len(names) < len(columns):  # tombstones: their keys are deleted, their rows not inserted
            tombstone = sql.Identifier(TOMBSTONE_COLUMN)
            matches = sql.SQL(" AND ").join(
                sql.SQL("{}.{} = {}.{}").format(
                    self.target, sql.Identifier(name), staging, sql.Identifier(name)
                )
                for name in self.primary_key
            )
            self.execute(
                sql.SQL("DELETE FROM {} USING {} WHERE {} AND {}.{}").format(
                    self.target, staging, matches, staging, tombstone
                )
            )
            live = sql.SQL(" WHERE {} IS NOT TRUE").format(tombstone)
        updates = [name for name in names if name not in self.primary_key]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name))
                    for name in updates
                )
            )
            if updates
            else sql.SQL("DO NOTHING")
        )
        # In a savepoint: when the rows repeat a key, PostgreSQL's own error names none of them; the rows
        # it refused are still there to name them from.
        self.execute(sql.SQL("SAVEPOINT upsert"))
        try:
            self.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}{} ON CONFLICT ({}) {}").format(
                    self.target, _names(names), _names(names), staging, live, _names(self.primary_key), action
                )
            )
        except psycopg2.errors.CardinalityViolation as error:
            self.execute(sql.SQL("ROLLBACK TO SAVEPOINT upsert"))

            def quote(name: str) -> str:
                return sql.Identifier(name).as_string(self.cursor)

            self.cursor.execute(repeated_keys_sql(staging.as_string(self.cursor), self.primary_key, quote))
            target = f"{self.schema}.{self.table}"
            raise repeated_keys_error(target, self.primary_key, self.cursor.fetchall()) from error

    def create(self, target: sql.Composable, columns: list[tuple[str, str]], *, with_key: bool) -> None:
        key = sql.SQL(", PRIMARY KEY ({})").format(_names(self.primary_key)) if with_key else sql.SQL("")
        self.execute(sql.SQL("CREATE TABLE {} ({}{})").format(target, _definitions(columns), key))

    def evolve(
        self, existing: list[tuple[str, str]], columns: list[tuple[str, str]], arrow_schema: pa.Schema
    ) -> None:
        """Add the columns the table lacks; refuse type changes of the ones it has."""
        existing_types = dict(existing)
        conflicts = [
            f'column "{name}" is {existing_types[name]} in the table but {incoming} in the batches '
            f"(Arrow {arrow_schema.field(name).type})"
            for name, incoming in columns
            if name in existing_types and not loads_into(incoming, existing_types[name])
        ]
        if conflicts:
            raise SchemaChangeError(
                f"cannot load into {self.schema}.{self.table}: {'; '.join(conflicts)}. Cast the column "
                f"back to the table's type before loading, or change the table deliberately: "
                f"ALTER TABLE ... ALTER COLUMN ... TYPE ... (a migration), or load with mode='replace'."
            )
        for name, incoming in columns:
            if name not in existing_types:
                self.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        self.target, sql.Identifier(name), sql.SQL(incoming)
                    )
                )

    def copy(self, target: sql.Composable, columns: list[tuple[str, str]], stream: CopyStream) -> None:
        """COPY the stream into `target`: binary when the target's columns have exactly the batches'
        types (a table created by this load with `columns`, or an existing one that matches), which the
        server parses ~3x faster than CSV; CSV otherwise (a widened column, a type without a binary
        encoding here)."""
        target_types = self.existing_columns() if target == self.target else columns
        stream.use_binary(target_types or [])
        statement = sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(
            target, _names([name for name, _ in columns]), sql.SQL(stream.copy_options)
        )
        try:
            self.cursor.copy_expert(statement.as_string(self.cursor), stream, COPY_READ_BYTES)
        finally:
            stream.close()  # stops the stream's encoder if the COPY failed before reading it all

    def check_unique_key(self) -> None:
        """ON CONFLICT needs a unique index on exactly the key columns: say so before copying anything."""
        self.cursor.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL "
            "AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
            "     WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s::text[]",
            (self.schema, self.table, sorted(self.primary_key)),
        )
        if self.cursor.fetchone() is None:
            key = ", ".join(self.primary_key)
            raise LoadConfigError(
                f"cannot upsert into {self.schema}.{self.table} on ({key}): the table has no primary key "
                f"or unique index on exactly these columns. Add one (ALTER TABLE ... ADD PRIMARY KEY "
                f"({key})), or load with mode='append' or mode='replace'."
            )

    def existing_columns(self) -> list[tuple[str, str]] | None:
        """(name, format_type) of the table's columns in order; None when there is no such table."""
        self.cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (self.schema, self.table),
        )
        rows = self.cursor.fetchall()
        return [(name, type_name) for name, type_name in rows] or None

    def execute(self, statement: sql.Composable) -> None:
        self.cursor.execute(statement)


@dataclass(frozen=True)
class _View:
    """A view as `dependent_views` found it: enough to create it again after it was dropped."""

    name: sql.Identifier
    definition: str
    options: list[str]
    owner: str | None
    """Its owner when another role than the loading one (then restored)."""
    comment: str | None
    column_comments: list[tuple[str, str]]
    grants: list[tuple[str | None, str, bool]]
    """(grantee, None for PUBLIC; privilege; with grant option)."""

    def recreate(self) -> list[sql.Composable]:
        options = (
            sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(option) for option in self.options))
            if self.options
            else sql.SQL("")
        )  # reloptions as the catalog spells them (security_barrier=true, check_option=local)
        statements: list[sql.Composable] = [
            sql.SQL("CREATE VIEW {}{} AS {}").format(self.name, options, sql.SQL(self.definition))
        ]
        if self.owner:
            statements.append(
                sql.SQL("ALTER VIEW {} OWNER TO {}").format(self.name, sql.Identifier(self.owner))
            )
        if self.comment is not None:
            statements.append(
                sql.SQL("COMMENT ON VIEW {} IS {}").format(self.name, sql.Literal(self.comment))
            )
        for column, comment in self.column_comments:
            target = sql.Identifier(*self.name.strings, column)
            statements.append(sql.SQL("COMMENT ON COLUMN {} IS {}").format(target, sql.Literal(comment)))
        for grantee, privilege, grantable in self.grants:
            statements.append(
                sql.SQL("GRANT {} ON {} TO {}{}").format(
                    sql.SQL(privilege),
                    self.name,
                    sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                    sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
                )
            )
        return statements


def _names(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _definitions(columns: list[tuple[str, str]]) -> sql.Composable:
    """Column definitions; the type names come from `postgres_type`, never from input."""
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_name)) for name, type_name in columns
    )


def _check_identifiers(names: Iterable[str]) -> None:
    """PostgreSQL silently truncates identifiers past 63 bytes: refuse them instead."""
    too_long = [name for name in names if len(name.encode()) > MAX_IDENTIFIER_BYTES or not name]
    if too_long:
        raise ValueError(
            f"identifier(s) {too_long} are empty or longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
        )


def _truncated(name: str, max_bytes: int) -> str:
    return name.encode()[:max_bytes].decode(errors="ignore")


def _unique_name(table: str, purpose: str) -> str:
    return f"{_truncated(table, 40)}__{purpose}_{uuid.uuid4().hex[:8]}"


def _rollback(connection: Any) -> None:
    try:
        if not connection.closed:
            connection.rollback()
    except psycopg2.Error:
        pass  # the connection is gone: the server rolls the transaction back itself


def _read_error(location: DatabaseLocation, error: psycopg2.Error) -> PostgresWarehouseError:
    return PostgresWarehouseError(
        f"reading from {location.display} failed: {location.driver_message(error)}",
        sqlstate=sqlstate_of(error),
    )


def _parsed_url(text: str) -> sa.URL:
    try:
        return sa.make_url(text)
    except sa_exc.ArgumentError:
        pass
    raise PostgresWarehouseError(
        "The Postgres warehouse url is not a SQLAlchemy URL (postgresql+psycopg2://user:password@host/db)."
    )


_OID_TYPES: dict[int, tuple[pa.DataType, str]] = {
    16: (pa.bool_(), "boolean"),
    17: (pa.binary(), "bytea"),
    20: (pa.int64(), "bigint"),
    21: (pa.int16(), "smallint"),
    23: (pa.int32(), "integer"),
    700: (pa.float32(), "real"),
    701: (pa.float64(), "double precision"),
    1082: (pa.date32(), "date"),
    1083: (pa.time64("us"), "time without time zone"),
    1114: (pa.timestamp("us"), "timestamp without time zone"),
    1184: (pa.timestamp("us", tz="UTC"), "timestamp with time zone"),
}
NUMERIC_OID = 1700


def _column_type(column: Any) -> ColumnType:
    """The Arrow type of a result column from its type OID (numeric with its precision and scale);
    anything else arrives as text."""
    if column.type_code == NUMERIC_OID and column.precision is not None and column.precision <= 38:
        arrow_type: pa.DataType = pa.decimal128(column.precision, column.scale or 0)
        return ColumnType(column.name, arrow_type, True, f"numeric({column.precision},{column.scale})")
    arrow_type, type_name = _OID_TYPES.get(column.type_code, (pa.string(), "text"))
    return ColumnType(column.name, arrow_type, True, type_name)
