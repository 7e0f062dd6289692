"""A step killed by SIGKILL on the multiprocess executor (the postgres and bigquery environments' executor),
which is what the out-of-memory killer does: real runs in real step processes, read by the real `healing`
sensor. Dagster records the step's error as a `ChildProcessCrashException` without a message; the sensor
reads the executor's engine event ("terminated by signal 9 (SIGKILL)"), classifies it resource_exhausted,
heals it with a smaller batch, and counts the time to recover from the failure's own timestamp."""

import time
from pathlib import Path

import dagster as dg
from healing_harness import fast_policy
from killed_step_job import raw_orders, reconstructable_job

from resources.state.healing_store import HealingStore
from sensors.healing.engine import ACTION_TAG, STEP_PROCESS_CRASH
from sensors.healing.sensor import build_healing_sensor


def _run(instance: dg.DagsterInstance, **kwargs: object) -> dg.DagsterRun:
    with dg.execute_job(reconstructable_job(), instance=instance, raise_on_error=False, **kwargs) as result:
        return result.dagster_run


def test_a_sigkilled_step_is_classified_resource_exhausted_and_healed_from_its_failure_time(
    tmp_path: Path,
) -> None:
    store_path = tmp_path / "ops" / "healing.sqlite"
    sensor = build_healing_sensor(store_path, tmp_path / "ops" / "quality_events.jsonl", policy=fast_policy())
    definitions = dg.Definitions(assets=[raw_orders], sensors=[sensor])

    def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions)
        return sensor(context)

    with dg.instance_for_test() as instance:
        failed = _run(instance)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        error = failure.dagster_event.step_failure_data.error
        assert (error.cls_name, error.message.strip()) == (
            STEP_PROCESS_CRASH,
            f"dagster._core.executor.child_process_executor.{STEP_PROCESS_CRASH}",
        ), "Dagster records the kill without a word: the cause is only in its engine event"

        time.sleep(1.0)  # the sensor reads the failure a while after it happened
        noticed = time.time()
        first = tick(instance, None)
        store = HealingStore(store_path)
        (incident,) = store.incidents()
        assert (incident.kind, incident.category, incident.rule_id, incident.confidence) == (
            "step_failure",
            "resource_exhausted",
            "step_process_killed",
            0.8,
        ), incident.explanation
        assert "terminated by signal 9 (SIGKILL)" in incident.evidence["errors"][0]["message"]
        assert incident.opened_at == failure.timestamp < noticed - 0.9, "opened at the failure, not the tick"

        (request,) = first.run_requests or []  # its backoff, counted from the failure, passed before the tick
        assert request.tags[ACTION_TAG] == "shrink_batch"
        assert request.run_config == {"ops": {"raw__killed__orders": {"config": {"batch_scale": 0.5}}}}
        healed = _run(
            instance,
            asset_selection=list(request.asset_selection or ()),
            run_config=request.run_config,
            tags=dict(request.tags),
        )
        assert healed.status == dg.DagsterRunStatus.SUCCESS
        tick(instance, first.cursor)

        resolved = store.incident(incident.incident_id)
        assert resolved is not None and resolved.status == "resolved", resolved
        (healed_record,) = instance.get_run_records(dg.RunsFilter(run_ids=[healed.run_id]))
        assert resolved.resolved_at == healed_record.end_time
        assert resolved.time_to_recover_s == round(healed_record.end_time - failure.timestamp, 3)
        print(
            f"SIGKILLed step: {resolved.category} ({resolved.rule_id}, {resolved.confidence}), "
            f"{resolved.action} -> {resolved.status}; failed at {failure.timestamp:.3f}, noticed at "
            f"{noticed:.3f}, recovered at {resolved.resolved_at:.3f}: time to recover "
            f"{resolved.time_to_recover_s} s"
        )
