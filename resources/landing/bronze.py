"""The PostgreSQL bronze layer (seed 002): each landed record as JSONB with its lineage, in
`bronze.<source>__<entity>` tables partitioned by the day it was ingested.

Exactly once, all at once. An extraction lands as one or more parts (the names the file landing zone gives
its Parquet parts). A part's rows are inserted in one transaction together with a row in `bronze._pending`
that names the part and keeps its Arrow schema; the extraction becomes visible when `commit` moves its
pending rows into `bronze._commits`, in one transaction. Readers only read the rows of committed parts, so
they see an extraction whole or not at all. A process killed while inserting leaves nothing (its
transaction rolls back); one killed between parts or before the commit leaves parts that no reader sees,
which the next attempt either resumes (REST checkpoints) or discards. `_commits` is keyed by
(table, part): a part is committed once, however often a retry commits it again.

An extraction holds a session advisory lock on its entity for its whole duration (`exclusive`): a second
extraction of the entity, on any machine, is refused instead of landing the same rows. Its checkpoint (REST
pages fetched so far) is kept in `bronze._checkpoints` and dropped by the commit, in the commit's
transaction, so that an attempt on another machine resumes where a killed one stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg2 import sql
from sqlalchemy import make_url

from resources.landing.bronze_records import (
    RAW_ID_COLUMN,
    RECORD_COLUMN,
    SOURCE_TIMESTAMP_COLUMN,
    bronze_rows,
    records_as,
)
from resources.landing.zone import LandingBusyError
from resources.secrets import env_references, redact, resolve_env

SCHEMA = "bronze"
COMMITS_TABLE = "_commits"
PENDING_TABLE = "_pending"
VALID = "valid"
"""Validation status of a landed record: it conformed to its extraction's Arrow schema. Rules are checked
when it is staged (`staged.quarantine` keeps the rows that break them)."""

_LEDGER = """
CREATE TABLE IF NOT EXISTS bronze._pending (
    table_name TEXT NOT NULL,
    extraction TEXT NOT NULL,
    run_id TEXT NOT NULL,
    source TEXT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    row_count BIGINT NOT NULL,
    json_bytes BIGINT NOT NULL,
    arrow_schema BYTEA NOT NULL,
    PRIMARY KEY (table_name, extraction)
);
CREATE TABLE IF NOT EXISTS bronze._checkpoints (
    table_name TEXT PRIMARY KEY,
    state JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS bronze._commits (
    LIKE bronze._pending INCLUDING ALL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seq BIGSERIAL
);
"""
_LEDGER_COLUMNS = "table_name, extraction, run_id, source, ingested_at, row_count, json_bytes, arrow_schema"
_ENTITY_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    extraction TEXT NOT NULL,
    record_number BIGINT NOT NULL,
    record JSONB NOT NULL,
    source TEXT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    source_timestamp TIMESTAMPTZ,
    raw_id TEXT,
    validation_status TEXT NOT NULL CHECK (validation_status IN ('valid', 'invalid', 'warning')),
    error_message TEXT,
    run_id TEXT NOT NULL,
    file_path TEXT,
    file_hash TEXT,
    file_size BIGINT,
    api_endpoint TEXT,
    api_response_code INTEGER,
    PRIMARY KEY (extraction, record_number, ingested_at)
) PARTITION BY RANGE (ingested_at)
"""
_INDEXES = {
    "record_gin": "USING GIN (record)",
    "source_timestamp": "(source_timestamp)",
    "validation_status": "(validation_status)",
    "run_id": "(run_id)",
}
"""The seed's indexes (the primary key serves reads and discards by extraction)."""
_COPY_COLUMNS = (
    "extraction",
    "record_number",
    RECORD_COLUMN,
    "source",
    "ingested_at",
    SOURCE_TIMESTAMP_COLUMN,
    RAW_ID_COLUMN,
    "validation_status",
    "run_id",
    "api_endpoint",
)


class BronzeError(RuntimeError):
    """The bronze layer cannot be reached or written: says where (password hidden) and what to check."""


@dataclass(frozen=True)
class BronzeTarget:
    """One entity's bronze table and what its records say about themselves."""

    source: str
    entity: str
    raw_id: tuple[str, ...] = ()
    """The entity's primary key columns, joined into `raw_id`."""
    source_timestamp: str | None = None
    """The column holding the record's own time at the source (an incremental cursor), if any."""
    api_endpoint: str | None = None

    @property
    def table(self) -> str:
        return f"{self.source}__{self.entity}"


@dataclass(frozen=True)
class BronzePart:
    """A part of an extraction, pending or committed."""

    extraction: str
    run_id: str
    source: str
    ingested_at: datetime
    rows: int
    json_bytes: int
    schema: pa.Schema


class BronzeLayer:
    """The bronze schema of one PostgreSQL database, reached by a SQLAlchemy-style URL whose password may
    be a `${VARIABLE}` reference (resolved at connect time; `optional_env` may be unset: empty)."""

    def __init__(self, url: str, optional_env: Sequence[str] = ()) -> None:
        self.url = url
        self.optional_env = tuple(optional_env)

    @contextlib.contextmanager
    def transaction(self, target: BronzeTarget, *, locked: bool = True) -> Iterator[Any]:
        """A cursor in one transaction, with the bronze tables in place, that holds the entity's write lock
        unless it only reads (`locked=False`: staging does not wait for a part being inserted); committed
        when the block ends, rolled back when it raises."""
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                if locked:
                    lock = f"{SCHEMA}.{target.table}"
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock,))
                _create_tables(cursor, target.table)
                yield cursor
            connection.commit()
        except psycopg2.Error as error:
            raise BronzeError(
                f"Writing or reading {SCHEMA}.{target.table} at {self.display_url()} failed "
                f"({error.pgcode or 'no SQLSTATE'}): {str(error).strip()}. Nothing of this transaction was "
                f"kept; check that the role may create tables in schema {SCHEMA} and that the server has "
                f"room, then re-run the step."
            ) from error
        finally:
            connection.close()

    @contextlib.contextmanager
    def exclusive(self, target: BronzeTarget) -> Iterator[None]:
        """Exclusive right to extract the entity, held by a session of its own until the block ends (a
        killed process's session ends with it, and so does its lock)."""
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                key = f"extraction of {SCHEMA}.{target.table}"
                cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
                (locked,) = cursor.fetchone()
            connection.commit()
            if not locked:
                raise LandingBusyError(
                    f"Another run is landing {target.source}.{target.entity} into {SCHEMA}.{target.table} "
                    f"right now (it holds the entity's lock at {self.display_url()}); wait for it to finish "
                    f"instead of extracting the same data twice."
                )
            yield
        finally:
            connection.close()

    def checkpoint(self, target: BronzeTarget) -> dict[str, Any] | None:
        with self.transaction(target) as cursor:
            cursor.execute("SELECT state FROM bronze._checkpoints WHERE table_name = %s", (target.table,))
            found = cursor.fetchone()
        return None if found is None else dict(found[0])

    def save_checkpoint(self, target: BronzeTarget, state: dict[str, Any]) -> None:
        with self.transaction(target) as cursor:
            cursor.execute(
                "INSERT INTO bronze._checkpoints VALUES (%s, %s) ON CONFLICT (table_name) "
                "DO UPDATE SET state = excluded.state",
                (target.table, json.dumps(state, sort_keys=True)),
            )

    def write_part(
        self,
        target: BronzeTarget,
        extraction: str,
        batches: Iterable[pa.RecordBatch],
        *,
        source: str,
        ingested_at: datetime,
        run_id: str,
    ) -> BronzePart | None:
        """Insert one part, batch by batch, in one transaction that also records it as pending; None when
        the stream is empty or the part was committed already (a retry must not land it twice). A pending
        part of the same name (an earlier attempt's) is replaced."""
        with self.transaction(target) as cursor:
            if _committed_names(cursor, target, [extraction]):
                return None
            _delete_pending(cursor, target, [extraction])
            _create_partition(cursor, target.table, ingested_at.date())
            schema: pa.Schema | None = None
            rows = json_bytes = 0
            for batch in batches:
                schema = schema or batch.schema
                lineage = (source, ingested_at, run_id)
                json_bytes += _copy_batch(cursor, target, extraction, batch, rows, *lineage)
                rows += batch.num_rows
            if schema is None:
                return None
            part = BronzePart(extraction, run_id, source, ingested_at, rows, json_bytes, schema)
            cursor.execute(
                "INSERT INTO bronze._pending VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (target.table, *_part_values(part)),
            )
        return part

    def pending(self, target: BronzeTarget) -> list[BronzePart]:
        with self.transaction(target) as cursor:
            return _parts(cursor, PENDING_TABLE, target)

    def discard(self, target: BronzeTarget, names: Sequence[str] | None = None) -> None:
        """Remove pending parts (all, with the checkpoint; or those `names`) and their rows; committed parts
        are never touched."""
        with self.transaction(target) as cursor:
            _delete_pending(cursor, target, names)
            if names is None:
                cursor.execute("DELETE FROM bronze._checkpoints WHERE table_name = %s", (target.table,))

    def commit(self, target: BronzeTarget) -> list[BronzePart]:
        """Make every pending part visible and drop the checkpoint, in one transaction; the parts
        committed."""
        with self.transaction(target) as cursor:
            parts = _parts(cursor, PENDING_TABLE, target)
            cursor.execute(
                f"INSERT INTO bronze._commits ({_LEDGER_COLUMNS}) SELECT {_LEDGER_COLUMNS} "
                "FROM bronze._pending WHERE table_name = %s "
                "ON CONFLICT (table_name, extraction) DO NOTHING",
                (target.table,),
            )
            cursor.execute("DELETE FROM bronze._pending WHERE table_name = %s", (target.table,))
            cursor.execute("DELETE FROM bronze._checkpoints WHERE table_name = %s", (target.table,))
        return parts

    def committed(self, target: BronzeTarget) -> list[BronzePart]:
        """The committed parts of the entity, in commit order."""
        with self.transaction(target, locked=False) as cursor:
            return _parts(cursor, COMMITS_TABLE, target)

    def read(self, target: BronzeTarget, part: BronzePart, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The records of a committed part, in landing order, typed back to its Arrow schema, in batches of
        at most `batch_rows` (a server-side cursor: memory holds one batch)."""
        connection = self._connect()
        try:
            with connection.cursor(name="bronze_read") as cursor:
                cursor.itersize = batch_rows
                cursor.execute(
                    sql.SQL(
                        "SELECT record::text FROM {} WHERE extraction = %s AND ingested_at = %s "
                        "ORDER BY record_number"
                    ).format(sql.Identifier(SCHEMA, target.table)),
                    (part.extraction, part.ingested_at),
                )
                while documents := cursor.fetchmany(batch_rows):
                    yield records_as([document for (document,) in documents], part.schema)
            connection.commit()
        finally:
            connection.close()

    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def _connect(self) -> psycopg2.extensions.connection:
        environ = {**dict.fromkeys(self.optional_env, ""), **os.environ}
        url = make_url(resolve_env(self.url, environ, where="the bronze layer's url"))
        try:
            connection = psycopg2.connect(
                **url.translate_connect_args(username="user", database="dbname"),
                connect_timeout=10,
                application_name="dataplatform-bronze",
                **url.query,
            )
        except psycopg2.Error as error:
            secrets = [str(url.password)] if url.password else []
            names = ", ".join(f"${{{name}}}" for name in env_references(self.url)) or "the URL"
            raise BronzeError(
                f"Cannot connect to the bronze layer at {self.display_url()}: "
                f"{redact(str(error).strip(), secrets)}. Check that the server is reachable, and the "
                f"database name, user and password (from {names})."
            ) from None
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        return connection


def _create_tables(cursor: Any, table: str) -> None:
    cursor.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{table}",))
    if cursor.fetchone()[0] is not None:
        return
    # Two entities' first extractions, in parallel steps, would race to create the schema and the ledger.
    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (SCHEMA,))
    cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    cursor.execute(_LEDGER)
    cursor.execute(sql.SQL(_ENTITY_TABLE).format(table=sql.Identifier(SCHEMA, table)))
    for suffix, definition in _INDEXES.items():
        cursor.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + definition).format(
                sql.Identifier(f"{table}_{suffix}"[:63]), sql.Identifier(SCHEMA, table)
            )
        )


def _create_partition(cursor: Any, table: str, day: date) -> None:
    """The day's partition, created on first use (the parent's indexes are created on it too)."""
    cursor.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(SCHEMA, f"{table}_{day:%Y%m%d}"[:63]),
            sql.Identifier(SCHEMA, table),
            sql.Literal(f"{day.isoformat()} 00:00:00+00"),
            sql.Literal(f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"),
        )
    )


def _copy_batch(
    cursor: Any,
    target: BronzeTarget,
    extraction: str,
    batch: pa.RecordBatch,
    first_number: int,
    source: str,
    ingested_at: datetime,
    run_id: str,
) -> int:
    """COPY one batch's records (as CSV, which quotes the JSON text) into the entity's table; the JSON's
    size in bytes."""
    converted = bronze_rows(batch, target.raw_id, target.source_timestamp)
    rows = batch.num_rows

    def constant(value: object) -> pa.Array:
        return pa.array([value] * rows, pa.string())

    table = pa.table(
        {
            "extraction": constant(extraction),
            "record_number": pa.array(range(first_number, first_number + rows), pa.int64()),
            RECORD_COLUMN: converted.column(RECORD_COLUMN),
            "source": constant(source),
            "ingested_at": constant(ingested_at.isoformat()),
            SOURCE_TIMESTAMP_COLUMN: converted.column(SOURCE_TIMESTAMP_COLUMN),
            RAW_ID_COLUMN: converted.column(RAW_ID_COLUMN),
            "validation_status": constant(VALID),
            "run_id": constant(run_id),
            "api_endpoint": constant(target.api_endpoint),
        }
    )
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    cursor.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            sql.Identifier(SCHEMA, target.table), sql.SQL(", ").join(map(sql.Identifier, _COPY_COLUMNS))
        ),
        buffer,
    )
    return pc.sum(pc.binary_length(converted.column(RECORD_COLUMN))).as_py() or 0


def _committed_names(cursor: Any, target: BronzeTarget, names: Sequence[str]) -> set[str]:
    cursor.execute(
        "SELECT extraction FROM bronze._commits WHERE table_name = %s AND extraction = ANY(%s)",
        (target.table, list(names)),
    )
    return {name for (name,) in cursor.fetchall()}


def _delete_pending(cursor: Any, target: BronzeTarget, names: Sequence[str] | None) -> None:
    """Pending parts' rows, then the parts; rows of committed parts are never matched."""
    chosen = "" if names is None else " AND extraction = ANY(%(names)s)"
    parameters = {"table": target.table, "names": list(names or ())}
    cursor.execute(
        sql.SQL(
            "DELETE FROM {} AS landed USING bronze._pending AS pending WHERE pending.table_name = %(table)s "
            "AND landed.extraction = pending.extraction AND landed.ingested_at = pending.ingested_at"
            + chosen.replace("extraction", "pending.extraction")
        ).format(sql.Identifier(SCHEMA, target.table)),
        parameters,
    )
    cursor.execute("DELETE FROM bronze._pending WHERE table_name = %(table)s" + chosen, parameters)


def _parts(cursor: Any, ledger: str, target: BronzeTarget) -> list[BronzePart]:
    order = "seq" if ledger == COMMITS_TABLE else "extraction"
    cursor.execute(
        sql.SQL(
            "SELECT extraction, run_id, source, ingested_at, row_count, json_bytes, arrow_schema FROM {} "
            "WHERE table_name = %s ORDER BY " + order
        ).format(sql.Identifier(SCHEMA, ledger)),
        (target.table,),
    )
    return [
        BronzePart(name, run, source, at, rows, size, pa.ipc.read_schema(pa.py_buffer(bytes(schema))))
        for name, run, source, at, rows, size, schema in cursor.fetchall()
    ]


def _part_values(part: BronzePart) -> tuple[object, ...]:
    return (
        part.extraction,
        part.run_id,
        part.source,
        part.ingested_at,
        part.rows,
        part.json_bytes,
        psycopg2.Binary(part.schema.serialize().to_pybytes()),
    )
