"""What to extract from a database table, and how incrementally, as declared in the catalog."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConnection(Strict):
    """A SQLAlchemy URL (secrets as `${ENV_VAR}` references, e.g. `postgresql+psycopg2://etl:${PG_PASSWORD}@
    host/db`), or a Cloud SQL instance reached through Google's connector."""

    url: str
    cloud_sql_instance: str | None = Field(
        default=None, description="`project:region:instance`; the URL then carries user, password, database."
    )
    statement_timeout_seconds: float = Field(default=600, gt=0)


class Incremental(Strict):
    """`timestamp`: rows whose `cursor_column` (then `tie_breaker` columns) is past the watermark, re-reading
    `lookback_seconds` before it for late commits. `key`: an ever-growing integer key (append-only tables).
    `full` (the default, no `incremental` block) re-reads the whole table every run."""

    mode: Literal["timestamp", "key"]
    cursor_column: str
    tie_breaker: list[str] | None = Field(default=None, description="Defaults to the primary key.")
    lookback_seconds: float = Field(default=0, ge=0)
    initial_value: str | int | None = None


class TableExtraction(Strict):
    """One table (or a custom query) of a database source."""

    table: str | None = None
    schema_name: str | None = Field(default=None, alias="schema")
    columns: list[str] | None = Field(default=None, description="Default: every column of the table.")
    query: str | None = Field(
        default=None,
        description="Custom SELECT instead of a table; gets the bind parameter `:watermark` (NULL on the "
        "first run) when `incremental` is set.",
    )
    incremental: Incremental | None = None
