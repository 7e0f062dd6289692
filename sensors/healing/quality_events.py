"""The quality-events sensor: every failed asset check and every asset going stale becomes one
`QualityEvent`, appended to the store the healing layer and the alert channels read.

What it watches
- **Checks**: every evaluation with `passed=False` of the watched checks (one event per failed
  evaluation, blocking or not; severity from the check: `error` or `warn`). Read from the instance's
  asset-check execution records, which every event-log storage keeps (including the run-sharded SQLite
  storage of `dagster dev`, where a cross-run event query by storage id is not supported).
- **Freshness**: the state of each watched `FreshnessPolicy`, computed by this sensor from the asset's
  latest materialization with Dagster's semantics (time window: FAIL when older than the fail window, WARN
  when older than the warn window; cron: FAIL when not materialized since the start of the last completed
  deadline window). One event per *transition* into FAIL (severity `error`) or WARN (severity `warn`),
  never one per tick; a new materialization that passes the policy re-arms it. Dagster 1.13's freshness
  daemon computes the same states for the UI and records `FreshnessStateChange` events, but only when the
  daemon runs and `freshness.enabled` is on; computing here keeps the record independent of that and lets
  it carry the lag and windows. An asset never materialized is UNKNOWN (as in Dagster): no event.

Where events go (`resources/state/quality_events.py`): a JSON Lines file on the embedded default
(`<data dir>/ops/quality_events.jsonl`; appends fsynced, one event per line, so it can be tailed, rotated
and shipped like any log), or a table of the platform's state database (the instance's PostgreSQL) in a
deployment, so that no event lives only on one VM's disk. Not `AssetObservation`s: the consumers (healing
policies, alert channels) are plain processes that should not need Dagster's GraphQL API to read them, and
observations written on the data assets would mix quality bookkeeping into their event history.

Exactly once: the cursor holds, per check, the execution records already handled, and per asset the last
freshness state seen. Each event also carries a deterministic `event_id` (the check execution, or the
asset's last materialization and the state), and the store never appends an id it already holds: a tick
that wrote its events but failed before its cursor was saved does not duplicate them on the next tick.
Without a cursor (first start) the sensor reports what is failing *now* (each check's latest evaluation,
each asset's current state), not the whole history.

Default status RUNNING: the sensor launches nothing and only appends records, so running it by default is
safe, and a recorder that has to be switched on by hand misses the failures it exists for.

Independent of the asset factories: it takes the policies and check keys to watch as arguments, or reads
those of its own code location when they are not given.
"""

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from resources.state.database import StateLocation
from resources.state.quality_events import QualityEvent, Severity, quality_event_store

SENSOR_NAME = "quality_events"
HISTORY_LIMIT = 100
"""Executions of one check read per tick: more failures of one check between two ticks are not seen."""
RESOLVED_STATUSES = {"SUCCEEDED", "FAILED"}
STALE_STATES = {"FAIL": "error", "WARN": "warn"}
"""Freshness states that are recorded, with the severity of their event."""

RETENTION_DAYS = 90.0
"""How long quality events are kept: in a file, once its first event is older, the sensor rotates the file
(the previous `.1` goes), so the events of the last one to two retention periods are kept; in the state
database, older events are deleted."""


@dataclass
class _Cursor:
    freshness: dict[str, str] = field(default_factory=dict)
    """Asset user string -> last freshness state seen."""
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`asset:check` -> {"upto": every execution id <= it is handled, "seen": handled ids above it}."""

    @classmethod
    def parse(cls, raw: str | None) -> "_Cursor | None":
        if not raw:
            return None
        data = json.loads(raw)
        return cls(freshness=dict(data.get("freshness", {})), checks=dict(data.get("checks", {})))

    def dump(self) -> str:
        return json.dumps({"v": 1, "freshness": self.freshness, "checks": self.checks}, sort_keys=True)


def build_quality_events_sensor(
    events_path: StateLocation,
    freshness_policies: Mapping[dg.AssetKey, dg.FreshnessPolicy] | None = None,
    check_keys: Iterable[dg.AssetCheckKey] | None = None,
    *,
    name: str = SENSOR_NAME,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    retention_days: float = RETENTION_DAYS,
) -> dg.SensorDefinition:
    """A sensor recording failed checks and stale assets into `events_path`, rotating it once its first
    event is older than `retention_days`.

    `freshness_policies` / `check_keys`: what to watch; None = every policy / check of the code location
    the sensor is loaded in (read at each tick from the repository)."""
    store = quality_event_store(events_path)
    fixed_checks = None if check_keys is None else sorted(check_keys, key=_check_id)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Records failed asset checks and assets going stale as quality events in "
        f"{store.location}.",
    )
    def quality_events(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        policies = freshness_policies
        checks = fixed_checks
        if policies is None or checks is None:
            graph = context.repository_def.asset_graph if context.repository_def else None
            if graph is None:
                raise dg.DagsterInvariantViolationError(
                    "quality_events needs its policies and check keys, or a code location to read them from"
                )
            if policies is None:
                policies = {
                    key: graph.get(key).freshness_policy
                    for key in graph.get_all_asset_keys()
                    if graph.get(key).freshness_policy is not None
                }
            if checks is None:
                checks = sorted(graph.asset_check_keys, key=_check_id)

        previous = _Cursor.parse(context.cursor)
        cursor = previous or _Cursor()
        now = time.time()
        events = [
            *_check_events(context.instance, checks, cursor, first_tick=previous is None),
            *_freshness_events(context.instance, policies, cursor, now),
        ]
        if store.rotate_if_older_than(retention_days, datetime.now(UTC)):
            context.log.info(
                f"Retention: quality events older than {retention_days:g} days left {store.location}"
            )
        appended = store.append(events)
        context.update_cursor(cursor.dump())
        for event in appended:
            context.log.info(f"quality event: {event.kind} {event.asset_key} {event.check_name or ''}")
        return dg.SkipReason(
            f"Recorded {len(appended)} quality event(s) in {store.location}"
            if appended
            else "No new failed check or stale asset."
        )

    return quality_events


def _check_id(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _check_events(
    instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], cursor: _Cursor, first_tick: bool
) -> list[QualityEvent]:
    storage = instance.event_log_storage
    watched = {_check_id(key) for key in check_keys}
    cursor.checks = {check_id: state for check_id, state in cursor.checks.items() if check_id in watched}
    latest = storage.get_latest_asset_check_execution_by_key(list(check_keys)) if check_keys else {}
    events: list[QualityEvent] = []
    for key in check_keys:
        record = latest.get(key)
        if record is None:
            continue
        check_id = _check_id(key)
        state = cursor.checks.get(check_id)
        if state is None:
            # A check seen for the first time: from a fresh cursor only its latest evaluation counts
            # (what fails now); a check added to a running sensor has its whole (bounded) history read.
            upto = record.id - 1 if first_tick else 0
            state = {"upto": upto, "seen": []}
        if record.id <= state["upto"]:
            cursor.checks[check_id] = state
            continue
        history = storage.get_asset_check_execution_history(key, limit=HISTORY_LIMIT)
        upto, seen = state["upto"], set(state["seen"])
        contiguous = True
        for execution in sorted((r for r in history if r.id > upto), key=lambda r: r.id):
            resolved = execution.status.value in RESOLVED_STATUSES or _run_is_over(instance, execution.run_id)
            if execution.id not in seen and execution.status.value in RESOLVED_STATUSES:
                event = _check_event(key, execution)
                if event is not None:
                    events.append(event)
                seen.add(execution.id)
            if contiguous and resolved:
                upto = execution.id
            else:
                contiguous = False
        cursor.checks[check_id] = {"upto": upto, "seen": sorted(i for i in seen if i > upto)}
    return events


def _run_is_over(instance: dg.DagsterInstance, run_id: str) -> bool:
    """A check still PLANNED whose run has ended never ran (its step failed or was skipped)."""
    run = instance.get_run_by_id(run_id) if run_id else None
    return run is None or run.is_finished


def _check_event(key: dg.AssetCheckKey, execution: Any) -> QualityEvent | None:
    entry = execution.event
    evaluation = entry.dagster_event.event_specific_data if entry and entry.dagster_event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
        return None
    severity: Severity = "warn" if evaluation.severity == dg.AssetCheckSeverity.WARN else "error"
    return QualityEvent(
        event_id=f"check:{_check_id(key)}:{execution.id}",
        kind="check",
        asset_key=key.asset_key.to_user_string(),
        check_name=key.name,
        severity=severity,
        observed_at=_iso(entry.timestamp),
        details={
            "run_id": execution.run_id or None,
            "description": evaluation.description,
            "blocking": evaluation.blocking,
            "partition": execution.partition,
            "metadata": {name: _plain(value) for name, value in (evaluation.metadata or {}).items()},
        },
    )


def _plain(value: Any) -> Any:
    """A metadata value as JSON: tables as lists of row objects, schemas as {column: type}, other values
    raw when they serialize, else as text."""
    raw = getattr(value, "value", value)
    if isinstance(raw, dg.TableMetadataValue):
        return [dict(record.data) for record in raw.records]
    if isinstance(raw, dg.TableRecord):
        return dict(raw.data)
    if isinstance(raw, dg.TableSchema):
        return {column.name: column.type for column in raw.columns}
    try:
        return json.loads(json.dumps(raw, default=str))
    except Exception:  # a value that does not serialize must not stop the recording
        return str(raw)


def _freshness_events(
    instance: dg.DagsterInstance,
    policies: Mapping[dg.AssetKey, dg.FreshnessPolicy],
    cursor: _Cursor,
    now: float,
) -> list[QualityEvent]:
    keys = sorted(policies, key=lambda key: key.to_user_string())
    last = {
        record.asset_entry.asset_key: record.asset_entry.last_materialization_record
        for record in instance.get_asset_records(keys)
    }
    previous_states, cursor.freshness = cursor.freshness, {}  # assets no longer watched drop out
    events = []
    for key in keys:
        policy = policies[key]
        materialization = last.get(key)
        state = freshness_state(policy, materialization.timestamp if materialization else None, now)
        asset = key.to_user_string()
        previous = previous_states.get(asset)
        cursor.freshness[asset] = state
        if state == previous or state not in STALE_STATES or materialization is None:
            continue
        events.append(
            QualityEvent(
                event_id=f"freshness:{asset}:{state}:{materialization.storage_id}",
                kind="freshness",
                asset_key=asset,
                check_name=None,
                severity=STALE_STATES[state],  # type: ignore[arg-type]
                observed_at=_iso(now),
                details={
                    "state": state,
                    "previous_state": previous,
                    "last_materialized_at": _iso(materialization.timestamp),
                    "stale_since": _stale_since(policy, state, materialization.timestamp),
                    "lag_minutes": round((now - materialization.timestamp) / 60, 1),
                    "policy": _describe(policy),
                },
            )
        )
    return events


def freshness_state(policy: dg.FreshnessPolicy, last_materialized: float | None, now: float) -> str:
    """PASS, WARN, FAIL or UNKNOWN (never materialized), with the semantics of Dagster's own evaluators."""
    if last_materialized is None:
        return "UNKNOWN"
    if _is_time_window(policy):
        age = now - last_materialized
        if age >= policy.fail_window.to_timedelta().total_seconds():
            return "FAIL"
        if policy.warn_window and age >= policy.warn_window.to_timedelta().total_seconds():
            return "WARN"
        return "PASS"
    if _is_cron(policy):
        from dagster._utils.schedules import get_latest_completed_cron_tick  # Dagster's own cron walk

        tick = get_latest_completed_cron_tick(
            policy.deadline_cron, datetime.fromtimestamp(now, UTC), policy.timezone
        )
        window_start = tick.timestamp() - policy.lower_bound_delta.total_seconds()
        return "PASS" if last_materialized >= window_start else "FAIL"
    return "UNKNOWN"


def _stale_since(policy: Any, state: str, last_materialized: float) -> str | None:
    """When a time-window policy's window ran out (the tick only notices it later); None for cron."""
    if not _is_time_window(policy):
        return None
    window = policy.fail_window if state == "FAIL" else policy.warn_window
    return _iso(last_materialized + window.to_timedelta().total_seconds())


def _is_time_window(policy: Any) -> bool:
    """`FreshnessPolicy.time_window(...)` (its class is not exported by `dagster`)."""
    return hasattr(policy, "fail_window")


def _is_cron(policy: Any) -> bool:
    """`FreshnessPolicy.cron(...)`."""
    return hasattr(policy, "deadline_cron")


def _describe(policy: dg.FreshnessPolicy) -> dict[str, Any]:
    if _is_time_window(policy):
        warn = policy.warn_window.to_timedelta() if policy.warn_window else None
        return {
            "kind": "time_window",
            "fail_window_minutes": policy.fail_window.to_timedelta().total_seconds() / 60,
            "warn_window_minutes": warn.total_seconds() / 60 if warn else None,
        }
    if _is_cron(policy):
        return {
            "kind": "cron",
            "deadline_cron": policy.deadline_cron,
            "lower_bound_minutes": policy.lower_bound_delta.total_seconds() / 60,
            "timezone": policy.timezone,
        }
    return {"kind": type(policy).__name__}
