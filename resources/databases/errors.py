"""What went wrong talking to a source database, said without secrets and without losing the cause.

Every error names the database by its redacted URL (password hidden), carries the SQLSTATE when the server
sent one (the healing layer classifies by it: 08xxx connection, 28xxx authentication, 57014 timeout...)
and is raised `from` the driver's exception, so nothing is swallowed. Driver messages are passed through
`redact` with the connection's secret values before they are quoted.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from resources.secrets import redact

QUERY_CANCELED = "57014"
"""PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout (or a cancel request)."""


class DatabaseSourceError(RuntimeError):
    """A source database failed us; `sqlstate` is the server's error code when it sent one. The code is
    also written into the message (`[SQLSTATE 57014]`): Dagster's event log keeps only class names and
    messages, and the healing layer classifies recorded failures by it."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(f"{message} [SQLSTATE {sqlstate}]" if sqlstate else message)
        self.sqlstate = sqlstate


class DatabaseUnavailableError(DatabaseSourceError):
    """Connecting failed: refused, unreachable, timed out, authentication or unknown database."""


class StatementTimeoutError(DatabaseSourceError):
    """The extraction ran longer than the connection's `statement_timeout_seconds`."""


class ExtractionConfigError(DatabaseSourceError, ValueError):
    """The catalog names something the database does not have (table, column) or asks for the impossible:
    nothing to retry, a human must change the catalog."""


class DatabaseLocation:
    """How to name one database in messages: its URL with the password hidden, and the secret values that
    must never be quoted, even inside a driver's message (the password, credential-like query parameters).
    User, host and database stay visible: they are what one needs to fix a connection."""

    def __init__(self, url: sa.URL, secrets: Iterable[str]) -> None:
        self.secrets = [secret for secret in secrets if secret]
        self.display = self.redact(url.render_as_string(hide_password=True))

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def unavailable(self, error: BaseException, *, env_names: list[str]) -> DatabaseUnavailableError:
        """The error to raise (from `error`) when connecting failed, with a hint on what to check."""
        reason = self.driver_message(error)
        references = f" (from {', '.join(f'${{{name}}}' for name in env_names)})" if env_names else ""
        return DatabaseUnavailableError(
            f"Cannot connect to {self.display}: {reason}. Check that the server is running and reachable "
            f"from here (host, port, firewall, Cloud SQL instance), and the database name, user and "
            f"password{references}.",
            sqlstate=sqlstate_of(error),
        )

    def failed(
        self, error: BaseException, *, doing: str, timeout_seconds: float | None
    ) -> DatabaseSourceError:
        """The error to raise (from `error`) when a statement failed after connecting."""
        code = sqlstate_of(error)
        reason = self.driver_message(error)
        if code == QUERY_CANCELED and timeout_seconds is not None:
            return StatementTimeoutError(
                f"{doing} on {self.display} was cancelled after statement_timeout_seconds="
                f"{timeout_seconds:g} ({reason}). Raise `statement_timeout_seconds` in the connection "
                f"config, or make the query cheaper (an index on the cursor column, fewer rows per run).",
                sqlstate=code,
            )
        return DatabaseSourceError(f"{doing} on {self.display} failed: {reason}", sqlstate=code)

    def driver_message(self, error: BaseException) -> str:
        """The driver's own words (not SQLAlchemy's wrapper with SQL and links), first lines, redacted."""
        original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
        return self.redact(" ".join(lines[:3]) or type(original).__name__)


def sqlstate_of(error: BaseException) -> str | None:
    """The five-character SQLSTATE of a driver error (psycopg2 `pgcode`, pg8000 `C` field), if any."""
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    code = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
    if code is None and original.args and isinstance(original.args[0], dict):
        code = original.args[0].get("C")
    return code if isinstance(code, str) else None
