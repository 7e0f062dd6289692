"""One configured database: its SQLAlchemy engine, created on first use, and read-only snapshots of it.

The URL's `${ENV}` references are resolved when the engine is created, at the first connection, never
when the catalog loads. Every connection is opened for one extraction and closed after it (no pool: runs
are minutes apart, and a pooled connection could be stale). A snapshot is one transaction:

- PostgreSQL: `REPEATABLE READ READ ONLY` (reflection, query and watermark see the same data), with
  `statement_timeout` from the config and the session formats the read paths rely on (UTC, ISO);
- SQLite: a read transaction with `query_only`;
- other dialects: the driver's default transaction.

Cloud SQL goes through `google.cloud.sql.connector` (imported lazily, pg8000 or psycopg 3 driver).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.pool import NullPool

from resources.databases.config import DatabaseConnection
from resources.databases.errors import DatabaseLocation, DatabaseSourceError, ExtractionConfigError
from resources.secrets import env_references, resolve_env

CONNECT_TIMEOUT_SECONDS = 30
APPLICATION_NAME = "dataplatform-extract"
CLOUD_SQL_DRIVERS = ("pg8000", "psycopg")
POSTGRES_SESSION = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "iso_8601"}
"""Set for the extraction's transaction only: timestamptz arrive in UTC and text renderings are ISO."""
POSTGRES_FORMATS = {"extra_float_digits": "1", "bytea_output": "hex"}
"""Shortest exact float text (the COPY path parses it back bit for bit) and bytea as hex."""
SENSITIVE_QUERY_WORDS = ("password", "secret", "token", "key")


class DatabaseEngine:
    """The engine of one `DatabaseConnection`, and how to name it in messages without its secrets."""

    def __init__(self, config: DatabaseConnection) -> None:
        self.config = config
        self._engine: sa.Engine | None = None
        self._location: DatabaseLocation | None = None
        self._closers: list[Callable[[], None]] = []

    @property
    def location(self) -> DatabaseLocation:
        """The database's redacted URL and secrets (resolves the URL's `${ENV}` references)."""
        self._created()
        assert self._location is not None
        return self._location

    @property
    def driver_error(self) -> type[Exception]:
        """The DB-API driver's base exception class (errors raised outside SQLAlchemy, e.g. by COPY)."""
        return self._created().dialect.loaded_dbapi.Error

    def snapshot(self) -> sa.Connection:
        """A new connection inside a read-only transaction with one consistent snapshot; close it after."""
        engine = self._created()
        try:
            connection = engine.connect()
        except Exception as error:
            raise self.location.unavailable(error, env_names=env_references(self.config.url)) from error
        try:
            self._begin_read_only(connection)
        except BaseException as error:
            connection.invalidate()
            connection.close()
            if isinstance(error, sa_exc.DBAPIError):
                raise self.failed(error, "Starting the read-only transaction") from error
            raise
        return connection

    def failed(self, error: BaseException, doing: str) -> DatabaseSourceError:
        """The error to raise (from `error`) when a statement failed: redacted, SQLSTATE kept."""
        return self.location.failed(error, doing=doing, timeout_seconds=self.config.statement_timeout_seconds)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        while self._closers:
            self._closers.pop()()

    def _created(self) -> sa.Engine:
        if self._engine is not None:
            return self._engine
        url = _parsed_url(resolve_env(self.config.url, where="the database connection url"))
        self._location = DatabaseLocation(url, _url_secrets(url))
        try:
            self._engine = (
                self._cloud_sql_engine(url) if self.config.cloud_sql_instance else _plain_engine(url)
            )
        except (sa_exc.NoSuchModuleError, ImportError) as error:
            raise DatabaseSourceError(
                f"No SQLAlchemy driver for {url.drivername!r} ({error}): install the driver package, or fix "
                f"the dialect+driver part of the url."
            ) from error
        return self._engine

    def _cloud_sql_engine(self, url: sa.URL) -> sa.Engine:
        """Through Google's connector, IAM authentication when the url has no password. Not tested here:
        it needs a Cloud SQL instance and credentials."""
        driver = url.get_driver_name()
        if driver not in CLOUD_SQL_DRIVERS:
            raise ExtractionConfigError(
                f"Cloud SQL connects through the pg8000 or psycopg (3) driver: write the url as "
                f"postgresql+pg8000://user:${{PASSWORD}}@/database, not {url.drivername}://..."
            )
        try:
            from google.cloud.sql.connector import Connector
        except ImportError as error:
            raise DatabaseSourceError(
                "cloud_sql_instance is set: install cloud-sql-python-connector (the `cloudsql` extra)."
            ) from error
        if importlib.util.find_spec(driver) is None:
            raise DatabaseSourceError(f"cloud_sql_instance is set: install the {driver} driver package.")
        connector = Connector(refresh_strategy="lazy")
        self._closers.append(connector.close)
        instance = self.config.cloud_sql_instance

        def connect() -> Any:
            return connector.connect(
                instance,
                driver,
                user=url.username,
                password=url.password,
                db=url.database,
                enable_iam_auth=url.password is None,
            )

        return sa.create_engine(url, creator=connect, poolclass=NullPool)

    def _begin_read_only(self, connection: sa.Connection) -> None:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            settings = {
                "statement_timeout": str(round(self.config.statement_timeout_seconds * 1000)),
                **POSTGRES_SESSION,
                **POSTGRES_FORMATS,
            }
            connection.execute(
                sa.select(*(sa.func.set_config(name, value, True) for name, value in settings.items()))
            )
        elif dialect == "sqlite":
            connection.exec_driver_sql("PRAGMA query_only = ON")
            connection.exec_driver_sql("BEGIN")


def _plain_engine(url: sa.URL) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg2":
        defaults = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": APPLICATION_NAME}
        connect_args = {name: value for name, value in defaults.items() if name not in url.query}
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _parsed_url(text: str) -> sa.URL:
    """The URL, or an error that does not quote it (SQLAlchemy's own message would, password included)."""
    try:
        return sa.make_url(text)
    except sa_exc.ArgumentError:
        pass
    raise ExtractionConfigError(
        "The database connection url is not a SQLAlchemy URL (dialect+driver://user:password@host:port/database)."
    )


def _url_secrets(url: sa.URL) -> list[str]:
    """Values never to quote: the password, and query parameters that look like credentials."""
    query_secrets = [
        value
        for name, values in url.query.items()
        if any(word in name.lower() for word in SENSITIVE_QUERY_WORDS)
        for value in ([values] if isinstance(values, str) else values)
    ]
    return [*([url.password] if url.password else []), *query_secrets]
