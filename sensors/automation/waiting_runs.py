"""Coalescing: new data for an entity whose previous run still waits in the queue launches no run of its own.

The delivery and change sensors' runs land whatever is new when they start (the raw asset's processed-file
ledger, the extraction's watermark), so a run still waiting will land what arrived after it was queued.
Without this, data arriving faster than one run of the source finishes (`dagster.yaml` allows one run per
source at a time) piles up runs that each find nothing left to land: the 30-minute chaos soak ended with
34 delivery runs queued.

The joined data counts as seen by the sensor. If the waiting run never starts (a start timeout fails it:
the healing sensor retries it as any failed run) or a human cancels it, the data waits in the landing zone
or the source for the entity's next run (the next delivery or change, a schedule, a manual
materialization), which lands it: nothing is lost, and nothing re-launches what a human cancelled.
"""

import dagster as dg

WAITING_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


def waiting_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str | None:
    """The id of a run with all of `tags` (source, trigger, entity) that has not started yet, if any. Not a
    retry or re-execution of an earlier run (which carries that run's tags): it re-runs the failed steps
    with what the earlier run had landed, and lands nothing new. Joined to the retry of a refused
    delivery, a corrected re-delivery was never landed (the 30-minute chaos soak: 39 orders lost)."""
    records = instance.get_run_records(dg.RunsFilter(statuses=WAITING_STATUSES, tags=tags))
    fresh = (record.dagster_run for record in records if record.dagster_run.parent_run_id is None)
    return next((run.run_id for run in fresh), None)
