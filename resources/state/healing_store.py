"""The healing layer's state: incidents (the ledger), action outcomes, circuit breakers and parameter
overrides: in one SQLite file beside the landing zone (`<data dir>/ops/healing.sqlite`) by default, in the
Dagster instance's PostgreSQL database when the deployment has one (`resources/state/database.py`), so
that losing the VM's disk loses no incident and several daemons share one ledger.

Why not the warehouse: the healing sensor writes on every tick while runs write the warehouse, and an
embedded DuckDB file has one writer at a time; the ledger also has to survive a broken warehouse, which is
one of the failures it records. Every write is one short transaction; a state change another daemon may
race for is a compare-and-set (`claim`). Storage only: what the rows mean is decided in `sensors/`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from resources.state.database import StateDatabase

METADATA = sa.MetaData()
INCIDENTS = sa.Table(
    "incidents",
    METADATA,
    sa.Column("incident_id", sa.Text, primary_key=True),
    sa.Column("dedup_key", sa.Text, nullable=False, unique=True),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("asset_key", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("rule_id", sa.Text, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("evidence_json", sa.Text, nullable=False),
    sa.Column("action", sa.Text),
    sa.Column("risk", sa.Text),
    sa.Column("decision", sa.Text),
    sa.Column("decided_by", sa.Text),
    sa.Column("status", sa.Text, nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("healing_run_id", sa.Text),
    sa.Column("run_config_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("outcome", sa.Text),
    sa.Column("resolved_at", sa.Float),
    sa.Column("time_to_recover_s", sa.Float),
    sa.Column("approved_by", sa.Text),
    sa.Column("approved_at", sa.Float),
    sa.Column("deadline", sa.Float),
)
OUTCOMES = sa.Table(
    "outcomes",
    METADATA,
    sa.Column("incident_id", sa.Text, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("success", sa.Integer, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
)
BREAKERS = sa.Table(
    "breakers",
    METADATA,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("changed_at", sa.Float, nullable=False),
)
RUN_OBSERVATIONS = sa.Table(
    "run_observations",
    METADATA,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("claimed_at", sa.Float, nullable=False, index=True),
    sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
)
OBSERVATIONS_KEPT_SECONDS = 30 * 24 * 3600
"""How long a finished run's observation is remembered: far longer than any daemon's cursor lags."""
RunClaim = Literal["claimed", "observed", "in_progress"]
OBSERVATION_LEASE_SECONDS = 300.0
"""How long a claimed observation may stay unfinished before another daemon may take it over: the
claiming daemon died halfway (observing one run takes well under a second)."""
OVERRIDES = sa.Table(
    "overrides",
    METADATA,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("default_value", sa.Float, nullable=False),
    sa.Column("set_at", sa.Float, nullable=False),
    sa.Column("healthy_runs", sa.Integer, nullable=False, server_default="0"),
)


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
    """The ledger at `location`: a SQLite file path (the embedded default), or the SQLAlchemy URL of a
    PostgreSQL database (the deployment's instance database: tables in schema `platform_ops`). The tables
    are created on first use; every method is one short transaction."""

    def __init__(self, location: Path | str) -> None:
        self.database = StateDatabase(location)
        self.database.create(METADATA)

    @property
    def location(self) -> str:
        """Where the ledger is, for messages (a password masked)."""
        return self.database.location

    # Incidents

    @staticmethod
    def new_incident_id() -> str:
        return uuid.uuid4().hex[:12]

    def add_incident(self, incident: Incident) -> bool:
        """Records `incident`; False (and nothing written) when its `dedup_key` is already recorded, so a
        failure seen again by a retried sensor tick, or by a second daemon, is never recorded twice."""
        values = {name: getattr(incident, name) for name in INCIDENT_COLUMNS}
        with self.database.begin() as connection:
            return self.database.insert_new(connection, INCIDENTS, values) == 1

    def claim_run(self, run_id: str, now: float) -> RunClaim:
        """Whether this daemon is the one to observe the finished run `run_id` (and so the one that learns
        from it: its incidents, outcomes, breaker counts, override decay): `claimed`; or another daemon
        did (`observed`), or is doing so (`in_progress`). Two daemons reading the same runs would otherwise
        each count a failure against the source's breaker. A claim left unfinished past
        `OBSERVATION_LEASE_SECONDS` (its daemon was killed halfway) is taken over, so that the run is
        observed all the same; what the dead daemon had already recorded of it may then be recorded twice
        (at least once, never lost). Observations older than `OBSERVATIONS_KEPT_SECONDS` are forgotten
        here."""
        table = RUN_OBSERVATIONS
        with self.database.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.claimed_at < now - OBSERVATIONS_KEPT_SECONDS))
            if self.database.insert_new(connection, table, {"run_id": run_id, "claimed_at": now}) == 1:
                return "claimed"
            abandoned = sa.update(table).where(
                table.c.run_id == run_id,
                table.c.done == sa.false(),
                table.c.claimed_at < now - OBSERVATION_LEASE_SECONDS,
            )
            if connection.execute(abandoned.values(claimed_at=now)).rowcount == 1:
                return "claimed"
            done = connection.execute(sa.select(table.c.done).where(table.c.run_id == run_id)).scalar()
            return "observed" if done else "in_progress"

    def finish_run(self, run_id: str) -> None:
        """The observation of `run_id` is complete: no other daemon takes it over."""
        with self.database.begin() as connection:
            connection.execute(
                sa.update(RUN_OBSERVATIONS).where(RUN_OBSERVATIONS.c.run_id == run_id).values(done=True)
            )

    def release_run(self, run_id: str) -> None:
        """Forget the observation of `run_id` claimed by a tick that failed before it was done with it."""
        with self.database.begin() as connection:
            connection.execute(sa.delete(RUN_OBSERVATIONS).where(RUN_OBSERVATIONS.c.run_id == run_id))

    def update_incident(self, incident_id: str, **changes: Any) -> None:
        if self.claim(incident_id, None, **changes) is False:
            raise KeyError(f"no incident {incident_id!r} in {self.location}")

    def claim(self, incident_id: str, expected: Mapping[str, Any] | None, **changes: Any) -> bool:
        """Apply `changes` to the incident only if its columns still hold `expected` (e.g. the status and
        attempts it was read with): whether it did. Two daemons that read the same incident both try; the
        database lets one of them change it, so one acts and the other sees that it lost."""
        unknown = (set(changes) | set(expected or {})) - set(INCIDENT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown incident column(s): {sorted(unknown)}")
        where = [INCIDENTS.c.incident_id == incident_id]
        where += [INCIDENTS.c[name] == value for name, value in (expected or {}).items()]
        with self.database.begin() as connection:
            result = connection.execute(sa.update(INCIDENTS).where(*where).values(**changes))
            return result.rowcount == 1

    def incident(self, incident_id: str) -> Incident | None:
        with self.database.begin() as connection:
            row = (
                connection.execute(sa.select(INCIDENTS).where(INCIDENTS.c.incident_id == incident_id))
                .mappings()
                .first()
            )
        return Incident(**row) if row else None

    def incidents(self, *, statuses: tuple[str, ...] | None = None) -> list[Incident]:
        """Incidents (of the given statuses), oldest first."""
        query = sa.select(INCIDENTS).order_by(INCIDENTS.c.opened_at, INCIDENTS.c.incident_id)
        if statuses:
            query = query.where(INCIDENTS.c.status.in_(statuses))
        with self.database.begin() as connection:
            return [Incident(**row) for row in connection.execute(query).mappings()]

    def status_counts(self) -> dict[str, int]:
        """Incidents per status (what the health endpoint and the metrics report)."""
        query = sa.select(INCIDENTS.c.status, sa.func.count()).group_by(INCIDENTS.c.status)
        with self.database.begin() as connection:
            return {status: int(count) for status, count in connection.execute(query)}

    # Outcomes (what the policy learns from)

    def record_outcome(self, incident_id: str, category: str, action: str, success: bool, at: float) -> None:
        values = {
            "incident_id": incident_id,
            "category": category,
            "action": action,
            "success": int(success),
            "recorded_at": at,
        }
        with self.database.begin() as connection:
            connection.execute(sa.insert(OUTCOMES).values(**values))

    def outcome_counts(self, category: str) -> dict[str, tuple[int, int]]:
        """action -> (successes, failures) recorded for `category`."""
        query = (
            sa.select(OUTCOMES.c.action, sa.func.sum(OUTCOMES.c.success), sa.func.sum(1 - OUTCOMES.c.success))
            .where(OUTCOMES.c.category == category)
            .group_by(OUTCOMES.c.action)
        )
        with self.database.begin() as connection:
            return {action: (int(good), int(bad)) for action, good, bad in connection.execute(query)}

    # Circuit breakers

    def breaker(self, source: str) -> Breaker:
        with self.database.begin() as connection:
            row = (
                connection.execute(sa.select(BREAKERS).where(BREAKERS.c.source == source)).mappings().first()
            )
        return Breaker(**row) if row else Breaker(source, "closed", 0, 0.0)

    def breakers(self) -> list[Breaker]:
        with self.database.begin() as connection:
            rows = connection.execute(sa.select(BREAKERS).order_by(BREAKERS.c.source)).mappings()
            return [Breaker(**row) for row in rows]

    def save_breaker(self, breaker: Breaker) -> None:
        with self.database.begin() as connection:
            self.database.upsert(connection, BREAKERS, asdict(breaker))

    # Parameter overrides

    def overrides(self, scope: str) -> dict[str, float]:
        query = sa.select(OVERRIDES.c.name, OVERRIDES.c.value).where(OVERRIDES.c.scope == scope)
        with self.database.begin() as connection:
            return {name: value for name, value in connection.execute(query)}

    def override_rows(self) -> list[Mapping[str, Any]]:
        query = sa.select(OVERRIDES).order_by(OVERRIDES.c.scope, OVERRIDES.c.name)
        with self.database.begin() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def set_override(self, scope: str, name: str, value: float, default_value: float, at: float) -> None:
        row = {"scope": scope, "name": name, "value": value, "default_value": default_value, "set_at": at}
        with self.database.begin() as connection:
            self.database.upsert(connection, OVERRIDES, {**row, "healthy_runs": 0})

    def update_override(self, scope: str, name: str, *, value: float, healthy_runs: int) -> None:
        with self.database.begin() as connection:
            connection.execute(
                sa.update(OVERRIDES)
                .where(OVERRIDES.c.scope == scope, OVERRIDES.c.name == name)
                .values(value=value, healthy_runs=healthy_runs)
            )

    def delete_override(self, scope: str, name: str) -> None:
        with self.database.begin() as connection:
            connection.execute(
                sa.delete(OVERRIDES).where(OVERRIDES.c.scope == scope, OVERRIDES.c.name == name)
            )
