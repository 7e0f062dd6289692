"""Where the platform keeps its own operational state (the healing ledger, quality events): one SQLite file
per store on the embedded default, or the Dagster instance's PostgreSQL database in a deployment.

A location is a path (SQLite) or a SQLAlchemy URL (`postgresql+psycopg2://...`, its password a `${NAME}`
reference resolved at connect time); `PlatformSettings` decides which (`resources/environment.py`). On
PostgreSQL the tables live in their own schema, `platform_ops` (the connections' search path), beside
Dagster's tables and never among them. Engines are shared per location within a process, so a sensor that
opens its store on every tick reuses the pool instead of reconnecting.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from resources.secrets import env_references, resolve_env

POSTGRES_SCHEMA = "platform_ops"
SQLITE_BUSY_SECONDS = 30


StateLocation = Path | str
"""A SQLite file's path, or a database's SQLAlchemy URL (a password as a `${NAME}` reference)."""


def beside(location: StateLocation, file_name: str) -> StateLocation:
    """Where a second store goes: the same database, or a file `file_name` beside the SQLite file."""
    if isinstance(location, str) and "://" in location:
        return location
    return Path(location).with_name(file_name)


class StateDatabase:
    def __init__(self, location: StateLocation) -> None:
        self.url = _url(location)

    @property
    def engine(self) -> sa.Engine:
        """Made on first use, not when a store is built: a code location that defines a sensor over the
        store loads without connecting (or resolving the password)."""
        return _engine(self.url)

    @property
    def location(self) -> str:
        """The location for messages: the URL as configured, its password a reference or masked."""
        return self.url.render_as_string(hide_password=not _is_reference(self.url.password))

    @property
    def is_postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    def create(self, metadata: sa.MetaData) -> None:
        """Create the tables of `metadata` (and on PostgreSQL the schema) that do not exist yet: on
        PostgreSQL once per process and location, on SQLite every time (a file removed meanwhile, as a
        demo starting afresh does, is made again; checking is one cheap query there)."""
        if self.is_postgres:
            _create_once(self.url, metadata)
        else:
            _create(self.engine, metadata)

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One transaction: committed when the block ends, rolled back on error."""
        with self.engine.begin() as connection:
            yield connection

    def insert_new(self, connection: sa.Connection, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert the row unless one with the same unique key exists; the number of rows inserted (0 or 1),
        decided by the database, so concurrent writers never both insert."""
        dialect = postgresql if self.is_postgres else sqlite
        statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
        return connection.execute(statement).rowcount

    def upsert(self, connection: sa.Connection, table: sa.Table, values: Mapping[str, Any]) -> None:
        """Insert the row, or replace the one with the same primary key."""
        dialect = postgresql if self.is_postgres else sqlite
        statement = dialect.insert(table).values(**values)
        keys = [column.name for column in table.primary_key.columns]
        changed = {name: statement.excluded[name] for name in values if name not in keys}
        connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed))


def read_only(location: StateLocation) -> contextlib.AbstractContextManager[sa.Connection | None]:
    """A connection that writes nothing, for watchers (metrics, health); None when a SQLite store was never
    created (its writer creates it on first use, so that means empty). Tables are named unqualified: on
    PostgreSQL the search path is `platform_ops`."""
    url = _url(location, create_parent=False)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        if not path.exists():
            return contextlib.nullcontext()
        uri = f"{path.as_uri()}?mode=ro"
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, timeout=5))
        return _closing_connection(engine, dispose=True)
    return _closing_connection(_engine(url), dispose=False)


@contextmanager
def _closing_connection(engine: sa.Engine, *, dispose: bool) -> Iterator[sa.Connection]:
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        if dispose:
            engine.dispose()


def _url(location: StateLocation, *, create_parent: bool = True) -> sa.URL:
    if isinstance(location, str) and "://" in location:
        return sa.make_url(location)
    path = Path(location).resolve()
    if create_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    return sa.make_url(f"sqlite:///{path}")


def _is_reference(password: str | None) -> bool:
    return password is not None and bool(env_references(password))


@functools.cache
def _engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, poolclass=sa.NullPool)
        sa.event.listen(engine, "connect", _sqlite_wal)
        return engine
    if url.password is not None:
        url = url.set(password=resolve_env(url.password, where=f"the platform state database {url.host}"))
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=4,
        connect_args={"options": f"-csearch_path={POSTGRES_SCHEMA}"},
    )


def _sqlite_wal(connection: Any, _: object) -> None:
    """WAL: readers (the ops assets, the metrics) are not blocked while the sensor writes."""
    connection.execute("PRAGMA journal_mode=WAL")


@functools.cache
def _create_once(url: sa.URL, metadata: sa.MetaData) -> None:
    _create(_engine(url), metadata)


def _create(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Creates the schema and tables missing. Processes (and threads) starting together on PostgreSQL take
    turns under a transaction advisory lock: without it, both see a table missing and the second CREATE
    fails on the catalog's unique index."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))"),
                {"lock": f"{POSTGRES_SCHEMA} schema"},
            )
            connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}"))
        metadata.create_all(connection)
