"""The `healing` sensor (runs the healing engine every tick) and the `apply_healing_action` job (a human
approves a proposed action).

The sensor is RUNNING by default: healing that must be switched on by hand misses the failures it exists
for, and everything it launches is bounded (attempts per incident, backoff, circuit breakers). It targets
every asset through an asset selection rather than a target: its runs go to Dagster's own asset job
instead of an implicit job over every asset (which the code location's snapshot would carry, and a run
looking up its job would resolve); each run request selects the failed assets and what is downstream of
them.

Approval: a proposal's alert names its incident id; launching `apply_healing_action` from the UI with that
id and `approved_by` (who approves) in its config records who approved it and when, and marks the incident
approved; the sensor's next tick launches the action. `approved_by` is a required config field because
Dagster OSS knows no users: its runs carry no `dagster/user` tag, so without the field every approval would
be anonymous in the ledger.
"""

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.state.database import StateLocation, beside
from resources.state.healing_store import HealingStore, Incident
from sensors.alerting.routing import DEFAULT_ROUTES_PATH, AlertRouter, load_alert_routes
from sensors.healing.alerts import router_notifier
from sensors.healing.dead_runs import fail_dead_runs
from sensors.healing.engine import APPROVAL_JOB_NAME, Healer, HealingCursor
from sensors.healing.graph import HealingGraph
from sensors.healing.policy import HealingPolicy, default_policy
from sensors.healing.quality_events import quality_event_store

SENSOR_NAME = "healing"
HEALING_INTERVAL_SECONDS = 4
"""How often the healing sensor looks at the finished runs: part of every time to recover twice (the failure
waits for a tick to be seen, the retry's backoff ends on a tick; the chaos soak's median goal is a minute),
and a tick that finds nothing new reads one page of run records. Below the daemon's sensor loop (a pass
every 5 s, `MIN_INTERVAL_LOOP_TIME` in dagster/_daemon/sensor.py), so that every pass evaluates it: a minimum
of one or two passes exactly is compared with the time since the last tick, which lands on either side of
it, and a 10-s minimum ticked every 10 or 15 s."""


def build_healing_sensor(
    store_path: StateLocation,
    quality_events_path: StateLocation,
    *,
    policy: HealingPolicy | None = None,
    alert_routes: Path = DEFAULT_ROUTES_PATH,
    minimum_interval_seconds: int = HEALING_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """`store_path`: the healing ledger; alerts go through the routes of `alert_routes` (delivery state in
    the same database, or `alerts.sqlite` beside the ledger's file)."""

    @dg.sensor(
        name=SENSOR_NAME,
        asset_selection=dg.AssetSelection.all(),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Classifies failed runs, failed checks and stale assets into incidents (ops ledger), "
        "heals what is safe (retry, resume, smaller batches, slower requests, re-materialize), proposes or "
        "escalates the rest.",
    )
    def healing(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        graph = HealingGraph.from_asset_graph(context.repository_def.asset_graph)
        router = AlertRouter(load_alert_routes(alert_routes), beside(store_path, "alerts.sqlite"))
        notify = router_notifier(router, graph, APPROVAL_JOB_NAME, context.log.warning)
        healer = Healer(HealingStore(store_path), policy or default_policy(), graph, notify=notify)
        fail_dead_runs(context.instance, context.log.warning)
        events = quality_event_store(quality_events_path)
        requests, cursor = healer.tick(context.instance, HealingCursor.parse(context.cursor), events)
        router.flush(datetime.now(UTC))
        for request in requests:
            context.log.info(
                f"Healing: {request.tags} -> {[k.to_user_string() for k in request.asset_selection or ()]}"
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())

    return healing


class ApprovalConfig(dg.Config):
    incident_id: str
    """The incident whose proposed action to apply (from the alert, or ops.healing_incidents)."""
    approved_by: str = Field(pattern=r"\S")
    """Who approves (a name or e-mail address), recorded in the ledger: required, since Dagster OSS sets
    no `dagster/user` tag on the run."""
    note: str = ""


class ApprovalError(ValueError):
    """The incident does not exist or has no action waiting for approval."""


def build_approval_job(store_path: StateLocation) -> dg.JobDefinition:
    @dg.op(name="approve_proposed_action")
    def approve(context: dg.OpExecutionContext, config: ApprovalConfig) -> None:
        store = HealingStore(store_path)
        incident = store.incident(config.incident_id)
        if incident is None:
            raise ApprovalError(
                f"No incident {config.incident_id!r} in the healing ledger ({store.location})."
            )
        if incident.status == "resolved":
            context.log.info(_nothing_to_approve(incident))
            return
        if incident.status not in ("proposed", "escalated") or incident.action in (None, "escalate"):
            raise ApprovalError(
                f"Incident {config.incident_id} is {incident.status} with action {incident.action!r}: "
                f"there is no proposed action to approve."
            )
        who = config.approved_by.strip()
        approved = store.claim(
            config.incident_id,
            {"status": incident.status},
            status="approved",
            decision="approved",
            approved_by=f"{who} (run {context.run.run_id}){': ' + config.note if config.note else ''}",
            approved_at=time.time(),
            updated_at=time.time(),
        )
        if not approved:
            moved_on = store.incident(config.incident_id)
            assert moved_on is not None
            if moved_on.status == "resolved":
                context.log.info(_nothing_to_approve(moved_on))
                return
            raise ApprovalError(
                f"Incident {config.incident_id} changed while it was being approved (now {moved_on.status} "
                f"with action {moved_on.action!r}); look at it again and approve it again if it still waits."
            )
        context.log.info(
            f"{who} approved {incident.action} for incident {config.incident_id} ({incident.category} on "
            f"{incident.asset_key}); the healing sensor launches it on its next tick."
        )

    @dg.job(
        name=APPROVAL_JOB_NAME, description="Approve the action a healing incident proposes (by incident id)."
    )
    def apply_healing_action() -> None:
        approve()

    return apply_healing_action


def _nothing_to_approve(incident: Incident) -> str:
    """An approval that arrives after the incident healed is not an error: the approver (or the alert it
    followed) was simply late, and failing the run would itself look like a failure to heal (the chaos soak's
    operator approved a proposal the next scheduled run had just resolved)."""
    return (
        f"Incident {incident.incident_id} is already resolved ({incident.outcome}): nothing to approve, "
        f"nothing was changed."
    )
