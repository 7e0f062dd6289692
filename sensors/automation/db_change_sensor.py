"""The change probe of a database source: a run when an incremental table's cursor column moved on.

Every tick asks, per incremental table of the source, `SELECT max(<cursor_column>) FROM <table>` through
the source's own connection (`resources.databases.engine.DatabaseEngine`: a read-only transaction, with
the statement timeout capped at `PROBE_TIMEOUT_SECONDS` so that a slow probe never holds the database for
the extraction's ten minutes). When the maximum is past the one in the sensor's cursor (or the cursor has
none yet), the entity gets one run of its raw asset and what is downstream; `run_key` is the entity and
the new maximum, so the same change never launches twice, and a change while the entity's previous run
still waits in the queue launches nothing: that run extracts it (`waiting_runs.py`). Only tables with
`incremental` are probed: a full extraction has no cursor column, and a custom `query` cannot be probed
without running it.

While the source's circuit breaker is open nothing is queried (the database is what is failing) and the
cursor stays, so the change is picked up once the breaker closes. A database error skips the tick with the
error as its reason (the extraction runs, not the probe, are what the healing layer watches).
The interval defaults to five minutes: often enough for hourly marts, rare enough for a production
database.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import sqlalchemy as sa

from resources.databases.config import DatabaseConnection
from resources.databases.engine import DatabaseEngine
from resources.databases.errors import DatabaseSourceError
from resources.secrets import MissingSecretError
from resources.state.database import StateLocation
from sensors.automation.conditions import ENTITY_TAG, SOURCE_TAG, TRIGGER_TAG
from sensors.automation.targets import SharedJob, selected_keys
from sensors.automation.waiting_runs import waiting_run
from sensors.healing.engine import open_breaker_skip

CHANGE_TRIGGER = "change"
PROBE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class ProbedTable:
    """One incremental table of a database source, and what a run of its entity targets."""

    entity: str
    table: str
    cursor_column: str
    target: dg.AssetSelection
    schema: str | None = None


Mark = tuple[str, Any]
"""A probed maximum in comparable form: ("number", n) or ("text", iso-or-text)."""


def comparable(value: Any) -> Mark | None:
    """Numbers compare as numbers; dates and times as ISO text (one column keeps one type, so one format);
    anything else as its text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ("number", int(value))
    if isinstance(value, int | float | Decimal):
        return ("number", float(value) if isinstance(value, Decimal) else value)
    if isinstance(value, datetime | date):
        return ("text", value.isoformat())
    return ("text", str(value))


def advanced(current: Mark | None, seen: Mark | None) -> bool:
    """Whether the maximum moved past the one seen (a first observation counts, an empty table does not)."""
    if current is None:
        return False
    if seen is None or current[0] != seen[0]:
        return True
    return current[1] > seen[1]


def probe_maxima(connection: DatabaseConnection, tables: Sequence[ProbedTable]) -> dict[str, Mark | None]:
    """max(cursor column) of each table, in one read-only snapshot."""
    capped = min(connection.statement_timeout_seconds, PROBE_TIMEOUT_SECONDS)
    engine = DatabaseEngine(connection.model_copy(update={"statement_timeout_seconds": capped}))
    try:
        snapshot = engine.snapshot()
        try:
            maxima = {}
            for probed in tables:
                table = sa.table(probed.table, sa.column(probed.cursor_column), schema=probed.schema)
                statement = sa.select(sa.func.max(table.c[probed.cursor_column]))
                try:
                    maxima[probed.entity] = comparable(snapshot.execute(statement).scalar())
                except sa.exc.DBAPIError as error:
                    raise engine.failed(
                        error, f"Probing max({probed.cursor_column}) of {probed.table}"
                    ) from error
            return maxima
        finally:
            snapshot.close()
    finally:
        engine.dispose()


def build_db_change_sensor(
    name: str,
    *,
    source: str,
    connection: DatabaseConnection,
    tables: Sequence[ProbedTable],
    job: SharedJob,
    healing_store: StateLocation,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    """A sensor named `name` probing the incremental `tables` of database `source`; its runs are subsets of
    `job` (`sensors/automation/targets.py`)."""

    @dg.sensor(
        name=name,
        target=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Probes max(cursor column) of {source}'s incremental tables; a run (raw and downstream) "
        f"when it advanced. Skipped while the source's circuit breaker is open.",
    )
    def db_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if (skip := open_breaker_skip(healing_store, source, "not probing it.")) is not None:
            return skip
        seen: dict[str, list[Any]] = json.loads(context.cursor) if context.cursor else {}
        try:
            maxima = probe_maxima(connection, tables)
        except (DatabaseSourceError, MissingSecretError) as error:
            return dg.SkipReason(f"Cannot probe {source}: {error}")
        requests = []
        cursor = dict(seen)
        for probed in tables:
            current, before = maxima[probed.entity], seen.get(probed.entity)
            if not advanced(current, tuple(before) if before else None):
                continue
            assert current is not None
            cursor[probed.entity] = list(current)
            change = f"{source}.{probed.entity}: max({probed.cursor_column}) is now {current[1]}"
            tags = {SOURCE_TAG: source, TRIGGER_TAG: CHANGE_TRIGGER, ENTITY_TAG: probed.entity}
            if (queued := waiting_run(context.instance, tags)) is not None:
                context.log.info(f"{change}: run {queued}, waiting in the queue, extracts it when it starts")
                continue
            context.log.info(change)
            requests.append(
                dg.RunRequest(
                    run_key=f"{source}.{probed.entity}:{current[1]}",
                    asset_selection=selected_keys(context.repository_def, probed.target, f"sensor {name}"),
                    tags=tags,
                )
            )
        dumped = json.dumps(cursor, sort_keys=True)
        if not requests:
            return dg.SensorResult(skip_reason=f"No change in {source}.", cursor=dumped)
        return dg.SensorResult(run_requests=requests, cursor=dumped)

    return db_change_sensor
