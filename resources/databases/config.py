"""What to extract from a database table, and how incrementally, as declared in the catalog."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


DEFAULT_LOOKBACK_SECONDS = 300.0
"""The lookback of `timestamp` mode when the catalog gives none. A row's `updated_at` is stamped when its
transaction writes it (PostgreSQL's `now()` is even the transaction's start), but the row becomes visible
only at commit: an extraction in between reads later-stamped rows, moves the watermark past the late one,
and a strict `>` filter never reads it (tests/test_database_source_postgres.py shows it happen). Five
minutes covers long write transactions of OLTP databases (batch updates, an import in one transaction) and
clock skew between the application servers that stamp the column; raise it above the longest write
transaction of your source. Re-reading costs the rows of the window once more per run, which staging's
upsert on the primary key de-duplicates (latest cursor wins): nothing is staged twice."""


class Incremental(Strict):
    """`timestamp`: rows whose `cursor_column` (then `tie_breaker` columns) is past the watermark, re-reading
    `lookback_seconds` (default `DEFAULT_LOOKBACK_SECONDS`) before it for late commits; 0 reads strictly past
    it, for a source whose rows are visible when stamped. `key`: an ever-growing integer key (append-only
    tables), no lookback. `full` (the default, no `incremental` block) re-reads the whole table every run."""

    mode: Literal["timestamp", "key"]
    cursor_column: str
    tie_breaker: list[str] | None = Field(default=None, description="Defaults to the primary key.")
    lookback_seconds: float = Field(default=0, ge=0)
    initial_value: str | int | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_lookback(cls, data: Any) -> Any:
        """Unset (or null), the lookback is the safe default for `timestamp` mode and 0 for `key` mode,
        which has no lookback."""
        if isinstance(data, dict) and data.get("lookback_seconds") is None:
            default = DEFAULT_LOOKBACK_SECONDS if data.get("mode") == "timestamp" else 0
            return {**data, "lookback_seconds": default}
        return data


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
