"""Coalescing: new data for an entity whose previous run still waits in the queue launches no run of its own.

The delivery and change sensors' runs land whatever is new when they start (the raw asset's processed-file
ledger, the extraction's watermark), so a run still waiting will land what arrived after it was queued.
Without this, data arriving faster than one run of the source finishes (`dagster.yaml` allows one run per
source at a time) piles up runs that each find nothing left to land: the 30-minute chaos soak ended with
34 delivery runs queued.
"""

import dagster as dg

WAITING_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


def waiting_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str | None:
    """The id of a run with all of `tags` (source, trigger, entity) that has not started yet, if any."""
    records = instance.get_run_records(dg.RunsFilter(statuses=WAITING_STATUSES, tags=tags), limit=1)
    return records[0].dagster_run.run_id if records else None
