"""The healing layer's state: incidents (the ledger), action outcomes, circuit breakers and parameter
overrides, in one SQLite file beside the landing zone (`<data dir>/ops/healing.sqlite`).

Why SQLite and not the warehouse: the healing sensor writes on every tick while runs write the warehouse,
and an embedded DuckDB file has one writer at a time; the ledger also has to survive a broken warehouse,
which is one of the failures it records. WAL mode lets the `ops/healing_incidents` asset read it while the
sensor writes; every write is one short transaction. Storage only: what the rows mean is decided in
`sensors/`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    kind TEXT NOT NULL,
    asset_key TEXT,
    source TEXT,
    run_id TEXT,
    category TEXT NOT NULL,
    confidence REAL NOT NULL,
    rule_id TEXT NOT NULL,
    explanation TEXT NOT NULL,
    evidence_json TEXT NOT NULL,
    action TEXT,
    risk TEXT,
    decision TEXT,
    decided_by TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    healing_run_id TEXT,
    run_config_json TEXT NOT NULL DEFAULT '{}',
    outcome TEXT,
    resolved_at REAL,
    time_to_recover_s REAL,
    approved_by TEXT,
    approved_at REAL,
    deadline REAL
);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status);
CREATE TABLE IF NOT EXISTS outcomes (
    incident_id TEXT NOT NULL,
    category TEXT NOT NULL,
    action TEXT NOT NULL,
    success INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS breakers (
    source TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS overrides (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    default_value REAL NOT NULL,
    set_at REAL NOT NULL,
    healthy_runs INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name)
);
"""


@dataclass
class Incident:
    """One row of the ledger. `status`: open (just recorded), healing (an automatic action is scheduled or
    running), proposed (awaits a human), approved (a human approved; the sensor acts next tick),
    escalated (a human must act), resolved."""

    incident_id: str
    dedup_key: str
    opened_at: float
    updated_at: float
    kind: str
    asset_key: str | None
    source: str | None
    run_id: str | None
    category: str
    confidence: float
    rule_id: str
    explanation: str
    evidence_json: str
    action: str | None = None
    risk: str | None = None
    decision: str | None = None
    decided_by: str | None = None
    status: str = "open"
    attempts: int = 0
    next_attempt_at: float | None = None
    healing_run_id: str | None = None
    run_config_json: str = "{}"
    outcome: str | None = None
    resolved_at: float | None = None
    time_to_recover_s: float | None = None
    approved_by: str | None = None
    approved_at: float | None = None
    deadline: float | None = None

    @property
    def evidence(self) -> dict[str, Any]:
        return json.loads(self.evidence_json)

    @property
    def run_config(self) -> dict[str, Any]:
        return json.loads(self.run_config_json)


INCIDENT_COLUMNS = [field.name for field in fields(Incident)]


@dataclass(frozen=True)
class Breaker:
    source: str
    state: str
    """closed | open | half_open"""
    consecutive_failures: int
    changed_at: float


class HealingStore:
    """The SQLite file at `path` (created with its tables on first use)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as con:
            con.executescript(SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.row_factory = sqlite3.Row
            with con:  # one transaction: committed on success, rolled back on error
                yield con
        finally:
            con.close()

    # Incidents

    @staticmethod
    def new_incident_id() -> str:
        return uuid.uuid4().hex[:12]

    def add_incident(self, incident: Incident) -> bool:
        """Records `incident`; False (and nothing written) when its `dedup_key` is already recorded, so a
        failure seen again by a retried sensor tick is never recorded twice."""
        marks = ", ".join("?" * len(INCIDENT_COLUMNS))
        with self._connection() as con:
            cursor = con.execute(
                f"INSERT OR IGNORE INTO incidents ({', '.join(INCIDENT_COLUMNS)}) VALUES ({marks})",
                [getattr(incident, name) for name in INCIDENT_COLUMNS],
            )
            return cursor.rowcount == 1

    def update_incident(self, incident_id: str, **changes: Any) -> None:
        unknown = set(changes) - set(INCIDENT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown incident column(s): {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with self._connection() as con:
            cursor = con.execute(
                f"UPDATE incidents SET {assignments} WHERE incident_id = ?", [*changes.values(), incident_id]
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no incident {incident_id!r} in {self.path}")

    def incident(self, incident_id: str) -> Incident | None:
        with self._connection() as con:
            row = con.execute("SELECT * FROM incidents WHERE incident_id = ?", [incident_id]).fetchone()
        return Incident(**dict(row)) if row else None

    def incidents(self, *, statuses: tuple[str, ...] | None = None) -> list[Incident]:
        """Incidents (of the given statuses), oldest first."""
        where = f"WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        with self._connection() as con:
            rows = con.execute(
                f"SELECT * FROM incidents {where} ORDER BY opened_at, incident_id", list(statuses or ())
            ).fetchall()
        return [Incident(**dict(row)) for row in rows]

    # Outcomes (what the policy learns from)

    def record_outcome(self, incident_id: str, category: str, action: str, success: bool, at: float) -> None:
        with self._connection() as con:
            con.execute(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?)",
                [incident_id, category, action, int(success), at],
            )

    def outcome_counts(self, category: str) -> dict[str, tuple[int, int]]:
        """action -> (successes, failures) recorded for `category`."""
        with self._connection() as con:
            rows = con.execute(
                "SELECT action, sum(success), sum(1 - success) FROM outcomes "
                "WHERE category = ? GROUP BY action",
                [category],
            ).fetchall()
        return {action: (int(good), int(bad)) for action, good, bad in rows}

    # Circuit breakers

    def breaker(self, source: str) -> Breaker:
        with self._connection() as con:
            row = con.execute("SELECT * FROM breakers WHERE source = ?", [source]).fetchone()
        return Breaker(**dict(row)) if row else Breaker(source, "closed", 0, 0.0)

    def breakers(self) -> list[Breaker]:
        with self._connection() as con:
            rows = con.execute("SELECT * FROM breakers ORDER BY source").fetchall()
        return [Breaker(**dict(row)) for row in rows]

    def save_breaker(self, breaker: Breaker) -> None:
        with self._connection() as con:
            con.execute(
                "INSERT OR REPLACE INTO breakers VALUES (?, ?, ?, ?)",
                [breaker.source, breaker.state, breaker.consecutive_failures, breaker.changed_at],
            )

    # Parameter overrides

    def overrides(self, scope: str) -> dict[str, float]:
        with self._connection() as con:
            rows = con.execute("SELECT name, value FROM overrides WHERE scope = ?", [scope]).fetchall()
        return {name: value for name, value in rows}

    def override_rows(self) -> list[Mapping[str, Any]]:
        with self._connection() as con:
            return [dict(row) for row in con.execute("SELECT * FROM overrides ORDER BY scope, name")]

    def set_override(self, scope: str, name: str, value: float, default_value: float, at: float) -> None:
        with self._connection() as con:
            con.execute(
                "INSERT OR REPLACE INTO overrides VALUES (?, ?, ?, ?, ?, 0)",
                [scope, name, value, default_value, at],
            )

    def update_override(self, scope: str, name: str, *, value: float, healthy_runs: int) -> None:
        with self._connection() as con:
            con.execute(
                "UPDATE overrides SET value = ?, healthy_runs = ? WHERE scope = ? AND name = ?",
                [value, healthy_runs, scope, name],
            )

    def delete_override(self, scope: str, name: str) -> None:
        with self._connection() as con:
            con.execute("DELETE FROM overrides WHERE scope = ? AND name = ?", [scope, name])
