"""What the healing engine's events look like as alerts, and the notifier the healing sensor passes it:
every incident decision, proposal, escalation and resolution goes through the alert router
(`sensors/alerting/routing.py`: routes, grouping by root asset, channels), never straight to a channel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from resources.alerts.channels import Alert
from sensors.alerting.routing import AlertRouter
from sensors.healing.engine import HealingEvent
from sensors.healing.graph import HealingGraph

SEVERITY = {
    "incident": "info", "proposal": "warning", "escalation": "critical", "reminder": "critical",
    "resolution": "info",
}  # fmt: skip


def alert_for(event: HealingEvent, graph: HealingGraph, approval_job: str) -> Alert:
    incident = event.incident
    what = incident.asset_key or "a run"
    titles = {
        "incident": f"Healing {what}: {incident.category}, {incident.action}",
        "proposal": f"Approval needed for {what}: {incident.action} ({incident.category})",
        "escalation": f"Needs a human: {what} ({incident.category})",
        "reminder": f"Still failing, needs a human: {what} ({incident.category})",
        "resolution": f"Healed: {what} ({incident.category})",
    }
    decision = f" Decision: {event.decision.reason}." if event.decision else ""
    action = incident.action
    if event.kind == "incident":
        action = f"{incident.action} (automatic attempt {incident.attempts + 1})"
    elif event.kind == "resolution":
        action = f"{incident.action}: {incident.outcome}"
    return Alert(
        kind=event.kind,  # type: ignore[arg-type]
        severity=SEVERITY[event.kind],  # type: ignore[arg-type]
        incident_id=incident.incident_id,
        source=incident.source,
        asset_key=incident.asset_key,
        group_key=root_asset(graph, incident.asset_key),
        category=incident.category,
        confidence=incident.confidence,
        title=titles[event.kind],
        diagnosis=f"{incident.explanation} (rule {incident.rule_id}).{decision}",
        evidence=incident.evidence,
        action=action,
        approve_hint=(
            f"Launch the job `{approval_job}` with config incident_id: {incident.incident_id} and "
            f"approved_by: <your name>"
            if event.kind == "proposal"
            else None
        ),
        opened_at=datetime.fromtimestamp(incident.opened_at, UTC),
        deadline=datetime.fromtimestamp(incident.deadline, UTC) if incident.deadline else None,
    )


def root_asset(graph: HealingGraph, asset_key: str | None) -> str:
    """The first (by name) asset without upstream among those `asset_key` is built from: the group key,
    so that a failing source and everything it breaks downstream make one alert thread."""
    if asset_key is None:
        return "-"
    ancestors = graph.upstream([dg.AssetKey.from_user_string(asset_key)])
    roots = sorted(k.to_user_string() for k in ancestors if not graph.parents.get(k, frozenset()) & ancestors)
    return roots[0] if roots else asset_key


def router_notifier(
    router: AlertRouter, graph: HealingGraph, approval_job: str, log: Callable[[str], None]
) -> Callable[[HealingEvent], None]:
    def notify(event: HealingEvent) -> None:
        for delivery in router.submit(alert_for(event, graph, approval_job), datetime.now(UTC)):
            if delivery.status == "failed":
                log(
                    f"Alert {event.kind} of incident {event.incident.incident_id} not delivered on "
                    f"{delivery.channel}: {delivery.detail}"
                )

    return notify
