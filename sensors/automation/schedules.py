"""Cron schedules from the catalog: one per source schedule (`schedule: {cron, timezone}` of a source, or of
an entity that overrides it), evaluated in the catalog's time zone (`execution_timezone`, so that
"06:00 Europe/Berlin" stays 06:00 across daylight-saving changes).

A schedule's run materializes its raw assets and what is downstream of them (staged tables, dbt models):
one run lands, stages and rebuilds. It is a subset of the shared job the schedule is given, named at tick
time (`sensors/automation/targets.py`: one job for every trigger instead of an implicit job each). The
downstream assets' eager conditions do not fire again for it: Dagster's
`any_deps_updated` ignores updates made by a run that also targeted the asset. Raw assets carry no
`on_cron` condition (see `sensors/automation/conditions.py`): the schedule is their one cron mechanism.

A tick whose previous run still waits in the run queue launches nothing (`waiting_run`, as the delivery and
change sensors coalesce): that run extracts what is new when it starts, and a source whose runs take longer
than its cron interval would otherwise pile up runs (the CI chaos soak ended with three of one source
queued).

A tick whose source has an open circuit breaker (`sensors.healing.engine.open_breaker_skip`) is skipped with
the reason, so a source that keeps failing is not hit again until the breaker half-opens and the healing
layer's probe run succeeds. The default status is chosen by the caller (`platform_assets/definitions.py`).
"""

import dagster as dg

from resources.state.database import StateLocation
from sensors.automation.conditions import SOURCE_TAG, TRIGGER_TAG
from sensors.automation.targets import SharedJob, selected_keys
from sensors.automation.waiting_runs import waiting_run
from sensors.healing.engine import open_breaker_skip

SCHEDULE_TRIGGER = "schedule"


def build_source_schedule(
    name: str,
    *,
    source: str,
    cron: str,
    timezone: str,
    job: SharedJob,
    target: dg.AssetSelection,
    healing_store: StateLocation,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """A schedule `name`: runs the `target` assets of `job` on `cron` in `timezone` unless `source`'s
    breaker is open."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=timezone,
        target=job,
        default_status=default_status,
        description=f"Extracts {source} on '{cron}' ({timezone}) and stages and rebuilds what reads it; "
        f"skipped while its previous run still waits in the queue or the source's circuit breaker is open.",
    )
    def source_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        meanwhile = "no scheduled run until the healing layer closes it (Dagster UI: ops.healing_incidents)."
        if (skip := open_breaker_skip(healing_store, source, meanwhile)) is not None:
            return skip
        tags = {SOURCE_TAG: source, TRIGGER_TAG: SCHEDULE_TRIGGER}
        if waiting := waiting_run(context.instance, tags):
            return dg.SkipReason(f"Run {waiting} of this schedule still waits in the queue to land new data.")
        scheduled = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"{name}:{scheduled.isoformat()}" if scheduled else None,
            asset_selection=selected_keys(context.repository_def, target, f"schedule {name}"),
            tags=tags,
        )

    return source_schedule
