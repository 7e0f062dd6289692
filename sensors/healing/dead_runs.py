"""Runs whose worker died: failed, so that they free their source's run slot and are relaunched.

Dagster's run monitoring cannot see a dead run worker with the default run launcher (it has no worker
health check): a run whose worker was SIGKILLed (the OOM killer, a killed step) or went down with a
restarted code server stays STARTED until `max_runtime_seconds` (four hours), holding its source's one
run slot meanwhile (`dagster.yaml`), so every later run of the source waits in the queue. The chaos soak
found it once its step kills hit: runs stuck for the rest of the soak. A run whose worker died before it
reported the run started stays STARTING until run monitoring's `start_timeout_seconds` (90 s) and its next
poll (up to 30 s later), holding the slot as long: in the soak, runs launched as the code server
restarted sat STARTING for those two minutes, and the restarts were among its slowest recoveries.

Each healing tick therefore looks at the STARTING and STARTED runs: a run whose worker process (the pid of
its "Started process for run" engine event, which the worker writes as it comes up, before it starts the
run) no longer exists is reported failed with that reason. A STARTING run without that event yet (its
worker not up) is left to the start timeout. Dagster's run retry (`run_retries`, for crashed runs) then
relaunches it, its pool slots are freed after
`free_slots_after_run_end_seconds`, and the healing engine sees the crash like any other. The check only
holds where the sensor runs on the run workers' host: with the default run launcher, whose workers are
children of the code server that evaluates this sensor. Under any other launcher nothing is checked.
"""

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from resources.processes import process_exists

DEAD_RUN_MESSAGE = (
    "Run worker (pid {pid}) is gone while the run was {status}: killed (the OOM killer, a signal) or taken "
    "down with its code server. Failed by the healing sensor so that the run retry relaunches it and its "
    "source's runs are not held behind it."
)
"""The run failure reported (classifier rule `run_worker_gone`)."""
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
"""The statuses of a run whose worker has been spawned and should be alive."""
WORKER_LAUNCHERS = frozenset({"DefaultRunLauncher"})
"""Run launchers whose run workers are processes of the host that evaluates the sensor."""
WORKER_MARKERS = (b"spawn_main", b"dagster")
"""What a run worker's command line holds (the code server spawns it with `multiprocessing`; `dagster api
execute_run` elsewhere): a pid reused by another program is not taken for the worker."""


def fail_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> list[str]:
    """Report every STARTING or STARTED run whose worker is gone as failed; the ids of those runs."""
    if type(instance.run_launcher).__name__ not in WORKER_LAUNCHERS:
        return []
    failed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=list(IN_PROGRESS))):
        run = record.dagster_run
        pid = _worker_pid(instance, run.run_id)
        if pid is None or _alive(pid):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in IN_PROGRESS:
            continue  # it finished while we looked
        message = DEAD_RUN_MESSAGE.format(pid=pid, status=current.status.value)
        instance.report_run_failed(current, message)
        log(f"Run {run.run_id}: {message}")
        failed.append(run.run_id)
    return failed


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's worker, from the latest "Started process for run" engine event."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and "Started process for run" in (record.event_log_entry.message or ""):
            return int(pid.value)
    return None


def _alive(pid: int) -> bool:
    """Whether a run worker runs as `pid`: the process exists and, where /proc tells, is one."""
    if not process_exists(pid):
        return False
    command = Path(f"/proc/{pid}/cmdline")
    try:
        text = command.read_bytes()
    except OSError:
        return not command.parent.parent.exists()  # no /proc (macOS): the pid exists, take it as alive
    return any(marker in text for marker in WORKER_MARKERS)
