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

A part is of one of two kinds. `records` parts hold the landed records, in the entity's table. A `keys`
part is a scan of the entity's primary keys (`deletes: reconcile`), in `bronze._key_scans`: pending and
committed with the extraction like its records, so that staging on any machine judges deletions by it; the
commit of a scan removes the entity's earlier scans in its transaction (only the latest counts).

Retention (`remove_parts`) deletes committed records parts, their rows and their `_commits` rows, in one
transaction, and counts them in `bronze._retention`, so that a full rebuild knows it cannot read them.
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
from resources.landing.sharing import LandingBusyError
from resources.secrets import env_references, redact, resolve_env

SCHEMA = "bronze"
COMMITS_TABLE = "_commits"
PENDING_TABLE = "_pending"
KEY_SCANS_TABLE = "_key_scans"
RECORDS = "records"
KEYS = "keys"
"""The kinds of a part: landed records (the entity's table), or a scan of its primary keys (`_key_scans`)."""
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
    kind TEXT NOT NULL DEFAULT 'records' CHECK (kind IN ('records', 'keys')),
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
CREATE TABLE IF NOT EXISTS bronze._key_scans (
    table_name TEXT NOT NULL,
    extraction TEXT NOT NULL,
    record_number BIGINT NOT NULL,
    record JSONB NOT NULL,
    PRIMARY KEY (table_name, extraction, record_number)
);
CREATE TABLE IF NOT EXISTS bronze._retention (
    table_name TEXT PRIMARY KEY,
    parts_removed BIGINT NOT NULL
);
"""
_LEDGER_UPGRADE = """
ALTER TABLE bronze._pending ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'records';
ALTER TABLE bronze._commits ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'records';
"""
"""A ledger created before parts had kinds (key scans and retention in bronze) gains the column."""
_LEDGER_COLUMNS = (
    "table_name, extraction, run_id, source, ingested_at, row_count, json_bytes, arrow_schema, kind"
)
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
    kind: str = RECORDS


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
        kind: str = RECORDS,
    ) -> BronzePart | None:
        """Insert one part of `kind`, batch by batch, in one transaction that also records it as pending;
        None when the stream is empty or the part was committed already (a retry must not land it twice). A
        pending part of the same name (an earlier attempt's) is replaced."""
        with self.transaction(target) as cursor:
            if _committed_names(cursor, target, [extraction]):
                return None
            _delete_pending(cursor, target, [extraction])
            if kind == RECORDS:
                _create_partition(cursor, target.table, ingested_at.date())
            schema: pa.Schema | None = None
            rows = json_bytes = 0
            for batch in batches:
                schema = schema or batch.schema
                if kind == RECORDS:
                    lineage = (source, ingested_at, run_id)
                    json_bytes += _copy_batch(cursor, target, extraction, batch, rows, *lineage)
                else:
                    json_bytes += _copy_keys(cursor, target, extraction, batch, rows)
                rows += batch.num_rows
            if schema is None:
                return None
            part = BronzePart(extraction, run_id, source, ingested_at, rows, json_bytes, schema, kind)
            cursor.execute(
                f"INSERT INTO bronze._pending ({_LEDGER_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})",
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
        committed. A key scan among them replaces the entity's committed scans."""
        with self.transaction(target) as cursor:
            parts = _parts(cursor, PENDING_TABLE, target)
            if any(part.kind == KEYS for part in parts):
                _delete_committed(cursor, target, KEYS)
            cursor.execute(
                f"INSERT INTO bronze._commits ({_LEDGER_COLUMNS}) SELECT {_LEDGER_COLUMNS} "
                "FROM bronze._pending WHERE table_name = %s "
                "ON CONFLICT (table_name, extraction) DO NOTHING",
                (target.table,),
            )
            cursor.execute("DELETE FROM bronze._pending WHERE table_name = %s", (target.table,))
            cursor.execute("DELETE FROM bronze._checkpoints WHERE table_name = %s", (target.table,))
        return parts

    def committed(self, target: BronzeTarget, kind: str = RECORDS) -> list[BronzePart]:
        """The committed parts of the entity of `kind`, in commit order."""
        with self.transaction(target, locked=False) as cursor:
            return [part for part in _parts(cursor, COMMITS_TABLE, target) if part.kind == kind]

    def remove_parts(
        self,
        target: BronzeTarget,
        *,
        staged_through: datetime,
        keep_newest: int | None,
        older_than: datetime | None,
    ) -> list[BronzePart]:
        """Delete the committed records parts retention lets go, with their rows, in one transaction that
        counts them in `bronze._retention`: staged (ingested no later than `staged_through`), not of the
        newest extraction, and beyond the newest `keep_newest` parts or ingested before `older_than` (the
        rules of the landed index: `landed_index.py`), and the day partitions they leave empty. The parts
        removed."""
        with self.transaction(target) as cursor:
            live = _parts(cursor, COMMITS_TABLE, target)
            records = [part for part in live if part.kind == RECORDS]
            newest = max((part.ingested_at for part in records), default=None)
            kept = {part.extraction for part in records[-keep_newest:]} if keep_newest else set()
            doomed = [
                part
                for part in records
                if part.ingested_at <= staged_through
                and part.ingested_at != newest
                and (keep_newest is None or part.extraction not in kept)
                and (older_than is None or part.ingested_at < older_than)
            ]
            if doomed:
                _delete_committed(cursor, target, RECORDS, [part.extraction for part in doomed])
                for day in sorted({part.ingested_at.date() for part in doomed}):
                    _drop_partition_if_empty(cursor, target.table, day)
                cursor.execute(
                    "INSERT INTO bronze._retention VALUES (%s, %s) ON CONFLICT (table_name) "
                    "DO UPDATE SET parts_removed = bronze._retention.parts_removed + excluded.parts_removed",
                    (target.table, len(doomed)),
                )
        return doomed

    def removed_count(self, target: BronzeTarget) -> int:
        """How many committed records parts retention removed, ever."""
        with self.transaction(target, locked=False) as cursor:
            cursor.execute(
                "SELECT parts_removed FROM bronze._retention WHERE table_name = %s", (target.table,)
            )
            found = cursor.fetchone()
        return 0 if found is None else int(found[0])

    def read(self, target: BronzeTarget, part: BronzePart, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The records of a committed part, in landing order, typed back to its Arrow schema, in batches of
        at most `batch_rows` (a server-side cursor: memory holds one batch)."""
        connection = self._connect()
        try:
            with connection.cursor(name="bronze_read") as cursor:
                cursor.itersize = batch_rows
                if part.kind == KEYS:
                    where = "table_name = %s AND extraction = %s"
                    parameters: tuple[object, ...] = (target.table, part.extraction)
                else:
                    where = "extraction = %s AND ingested_at = %s"
                    parameters = (part.extraction, part.ingested_at)
                cursor.execute(
                    sql.SQL("SELECT record::text FROM {} WHERE " + where + " ORDER BY record_number").format(
                        _rows_table(target, part.kind)
                    ),
                    parameters,
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
    """The entity's table, and the ledger as this version has it (a ledger created before key scans and
    retention lived in bronze gains their tables and `kind` column)."""
    cursor.execute("SELECT to_regclass(%s), to_regclass(%s)", (f"{SCHEMA}.{table}", f"{SCHEMA}._retention"))
    entity_table, current_ledger = cursor.fetchone()
    if entity_table is not None and current_ledger is not None:
        return
    # Two entities' first extractions, in parallel steps, would race to create the schema and the ledger.
    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (SCHEMA,))
    cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    cursor.execute(_LEDGER)
    if current_ledger is None:
        cursor.execute(_LEDGER_UPGRADE)
    cursor.execute(sql.SQL(_ENTITY_TABLE).format(table=sql.Identifier(SCHEMA, table)))
    for suffix, definition in _INDEXES.items():
        cursor.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + definition).format(
                sql.Identifier(f"{table}_{suffix}"[:63]), sql.Identifier(SCHEMA, table)
            )
        )


def _create_partition(cursor: Any, table: str, day: date) -> None:
    """The day's partition, created on first use (the parent's indexes are created on it too)."""
    start, end = _day_bounds(day)
    cursor.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            _partition(table, day), sql.Identifier(SCHEMA, table), sql.Literal(start), sql.Literal(end)
        )
    )


def _drop_partition_if_empty(cursor: Any, table: str, day: date) -> None:
    """Drop the day's partition once no records part of that day is left, pending or committed: a daily
    snapshot under retention would otherwise leave an empty table behind every day. (The caller holds the
    entity's write lock, so no part of that day is being inserted.)"""
    cursor.execute(
        "SELECT 1 FROM bronze._pending WHERE table_name = %(table)s AND kind = %(kind)s "
        "AND ingested_at >= %(start)s AND ingested_at < %(end)s UNION ALL "
        "SELECT 1 FROM bronze._commits WHERE table_name = %(table)s AND kind = %(kind)s "
        "AND ingested_at >= %(start)s AND ingested_at < %(end)s LIMIT 1",
        dict(zip(("start", "end"), _day_bounds(day), strict=True), table=table, kind=RECORDS),
    )
    if cursor.fetchone() is None:
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_partition(table, day)))


def _partition(table: str, day: date) -> sql.Composable:
    return sql.Identifier(SCHEMA, f"{table}_{day:%Y%m%d}"[:63])


def _day_bounds(day: date) -> tuple[str, str]:
    """The UTC day as the bounds of its partition."""
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


def _rows_table(target: BronzeTarget, kind: str) -> sql.Composable:
    """Where the rows of a part of `kind` are: the entity's table, or the key scans'."""
    return sql.Identifier(SCHEMA, target.table if kind == RECORDS else KEY_SCANS_TABLE)


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

    columns = {
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
    return _copy(cursor, _rows_table(target, RECORDS), pa.table(columns))


def _copy_keys(
    cursor: Any, target: BronzeTarget, extraction: str, batch: pa.RecordBatch, first_number: int
) -> int:
    """COPY one batch of a key scan into `bronze._key_scans`; the JSON's size in bytes."""
    rows = batch.num_rows
    columns = {
        "table_name": pa.array([target.table] * rows, pa.string()),
        "extraction": pa.array([extraction] * rows, pa.string()),
        "record_number": pa.array(range(first_number, first_number + rows), pa.int64()),
        RECORD_COLUMN: bronze_rows(batch, (), None).column(RECORD_COLUMN),
    }
    return _copy(cursor, _rows_table(target, KEYS), pa.table(columns))


def _copy(cursor: Any, into: sql.Composable, rows: pa.Table) -> int:
    """COPY the rows (as CSV, which quotes the JSON text) into the columns of their names; the size of their
    JSON records in bytes."""
    buffer = io.BytesIO()
    pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    cursor.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            into, sql.SQL(", ").join(map(sql.Identifier, rows.column_names))
        ),
        buffer,
    )
    return pc.sum(pc.binary_length(rows.column(RECORD_COLUMN))).as_py() or 0


def _committed_names(cursor: Any, target: BronzeTarget, names: Sequence[str]) -> set[str]:
    cursor.execute(
        "SELECT extraction FROM bronze._commits WHERE table_name = %s AND extraction = ANY(%s)",
        (target.table, list(names)),
    )
    return {name for (name,) in cursor.fetchall()}


def _delete_pending(cursor: Any, target: BronzeTarget, names: Sequence[str] | None) -> None:
    """Pending parts' rows, then the parts; rows of committed parts are never matched."""
    for kind in (RECORDS, KEYS):
        _delete_parts(cursor, target, PENDING_TABLE, kind, names)


def _delete_committed(
    cursor: Any, target: BronzeTarget, kind: str, names: Sequence[str] | None = None
) -> None:
    """Committed parts of `kind` (all, or those `names`) and their rows."""
    _delete_parts(cursor, target, COMMITS_TABLE, kind, names)


_PART_ROWS = {
    RECORDS: "landed.extraction = ledger.extraction AND landed.ingested_at = ledger.ingested_at",
    KEYS: "landed.table_name = ledger.table_name AND landed.extraction = ledger.extraction",
}
"""How a part's rows are matched to its ledger row (the entity's table is partitioned by `ingested_at`)."""


def _delete_parts(
    cursor: Any, target: BronzeTarget, ledger: str, kind: str, names: Sequence[str] | None
) -> None:
    """The parts of `kind` in `ledger` (all; or those `names`): their rows, then their ledger rows."""
    where = "ledger.table_name = %(table)s AND ledger.kind = %(kind)s" + (
        "" if names is None else " AND ledger.extraction = ANY(%(names)s)"
    )
    parameters = {"table": target.table, "kind": kind, "names": list(names or ())}
    ledger_table = sql.Identifier(SCHEMA, ledger)
    rows = sql.SQL(f"DELETE FROM {{}} AS landed USING {{}} AS ledger WHERE {where} AND {_PART_ROWS[kind]}")
    cursor.execute(rows.format(_rows_table(target, kind), ledger_table), parameters)
    cursor.execute(sql.SQL(f"DELETE FROM {{}} AS ledger WHERE {where}").format(ledger_table), parameters)


def _parts(cursor: Any, ledger: str, target: BronzeTarget) -> list[BronzePart]:
    order = "seq" if ledger == COMMITS_TABLE else "extraction"
    cursor.execute(
        sql.SQL(
            "SELECT extraction, run_id, source, ingested_at, row_count, json_bytes, arrow_schema, kind "
            "FROM {} WHERE table_name = %s ORDER BY " + order
        ).format(sql.Identifier(SCHEMA, ledger)),
        (target.table,),
    )
    return [
        BronzePart(name, run, source, at, rows, size, pa.ipc.read_schema(pa.py_buffer(bytes(schema))), kind)
        for name, run, source, at, rows, size, schema, kind in cursor.fetchall()
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
        part.kind,
    )
