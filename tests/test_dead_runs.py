"""Runs whose worker died are failed by the healing sensor's tick (`sensors/healing/dead_runs.py`), with real
processes: a worker that exited (the run STARTED, or still STARTING), a pid now held by another program, and a
live worker, which is left alone, as is a STARTING run whose worker was not spawned yet."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import EngineEventData

from sensors.healing.classifier import ErrorLink, Evidence, classify
from sensors.healing.dead_runs import fail_dead_runs


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def live_worker() -> Iterator[subprocess.Popen]:
    """A process whose command line reads like a run worker's (the code server's `spawn_main` child)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "spawn_main"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def other_program() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def started_run(
    instance: dg.DagsterInstance, pid: int, status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED
) -> dg.DagsterRun:
    """A run whose worker reported itself as `pid`, as the worker Dagster's gRPC server spawns does (before
    it starts the run: the run may still be STARTING)."""
    run = instance.add_run(dg.DagsterRun(job_name="ingestion", status=status))
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )
    return run


def test_a_run_whose_worker_is_gone_is_failed_and_a_live_one_is_left_alone(
    instance: dg.DagsterInstance, live_worker: subprocess.Popen, other_program: subprocess.Popen
) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    dead = started_run(instance, exited.pid)
    reused = started_run(instance, other_program.pid)  # the pid now belongs to another program
    alive = started_run(instance, live_worker.pid)
    # Its worker died before it reported the run started (a code server restart): not left to the timeout.
    dead_starting = started_run(instance, exited.pid, dg.DagsterRunStatus.STARTING)
    alive_starting = started_run(instance, live_worker.pid, dg.DagsterRunStatus.STARTING)
    not_spawned = instance.add_run(dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.STARTING))
    logged: list[str] = []

    assert sorted(fail_dead_runs(instance, logged.append)) == sorted(
        [dead.run_id, reused.run_id, dead_starting.run_id]
    )
    status = {run.run_id: run.status for run in instance.get_runs()}
    assert status[dead.run_id] == status[reused.run_id] == dg.DagsterRunStatus.FAILURE
    assert status[dead_starting.run_id] == dg.DagsterRunStatus.FAILURE
    assert status[alive.run_id] == dg.DagsterRunStatus.STARTED
    assert status[alive_starting.run_id] == status[not_spawned.run_id] == dg.DagsterRunStatus.STARTING
    assert any(f"pid {exited.pid}" in line and "was STARTED" in line for line in logged)
    assert any(f"pid {exited.pid}" in line and "was STARTING" in line for line in logged)

    (failure,) = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    diagnosis = classify(
        Evidence(
            kind="run_crash",
            asset_key=None,
            run_id=dead.run_id,
            errors=(ErrorLink("RunFailure", failure.message),),
        )
    )
    assert (diagnosis.rule_id, diagnosis.category.value) == ("run_worker_gone", "interrupted")
    assert fail_dead_runs(instance, logged.append) == [], "each is failed once"
