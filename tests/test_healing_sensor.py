"""The `healing` sensor as the daemon evaluates it, over real runs of a tiny source whose extraction fails
while a fault file exists: an incident is recorded and alerted (JSON webhook on loopback), the retry is
requested after its backoff and resolves it; circuit breakers open after consecutive failures and
half-open after the cool-down; parameter overrides decay after healthy runs; a human approves a proposal
with the `apply_healing_action` job."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster._core.remote_origin import (  # private: no public way to build a queued run in a test
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from healing_harness import fast_policy
from rest_test_server import Recorded, ScriptedServer, json_reply, unused_port

from resources.state.healing_store import OBSERVATION_LEASE_SECONDS, Breaker, HealingStore, Incident
from resources.state.quality_events import QualityEvent, quality_event_store
from sensors.automation.conditions import SOURCE_TAG as AUTOMATION_SOURCE_TAG
from sensors.healing.engine import (
    ACTION_TAG,
    COMPANIONS_TAG,
    INCIDENT_TAG,
    SOURCE_TAG,
    Healer,
    HealingCursor,
    HealingEvent,
    open_breaker_skip,
)
from sensors.healing.graph import HealingGraph
from sensors.healing.policy import HealingPolicy
from sensors.healing.sensor import APPROVAL_JOB_NAME, build_approval_job, build_healing_sensor

RAW = dg.AssetKey(["raw", "src", "thing"])
STAGED = dg.AssetKey(["staged", "src", "thing"])
OTHER_RAW = dg.AssetKey(["raw", "src", "other"])
OTHER_STAGED = dg.AssetKey(["staged", "src", "other"])


class BadRowsError(Exception):
    """Named as staging's own (the classifier matches exception class names)."""


class RestRetriesExhaustedError(Exception):
    """Named as the REST client's own."""


@dataclass
class SensorWorld:
    root: Path
    instance: dg.DagsterInstance
    policy: HealingPolicy
    cursor: str | None = None
    other_table: bool = False
    """A second table of the same source (`OTHER_RAW` -> `OTHER_STAGED`), failing while `fault` or
    `other_fault` exists."""

    @property
    def fault(self) -> Path:
        return self.root / "fault"

    @property
    def other_fault(self) -> Path:
        """While it exists, the second table's extraction fails (connection refused), the first's not."""
        return self.root / "other_fault"

    @property
    def check_unreachable(self) -> Path:
        """While it exists, the staged asset's volume check cannot reach what it compares with (its own
        step fails, as a check interrupted by a restart of the code server does)."""
        return self.root / "check_unreachable"

    @property
    def rate_limited(self) -> Path:
        """While it exists, the extraction fails with the API's 429."""
        return self.root / "rate_limited"

    @property
    def bad_rows(self) -> Path:
        """While it exists, staging refuses the delivery for its bad rows (data quality, escalated)."""
        return self.root / "bad_rows"

    @property
    def volume_spike(self) -> Path:
        """While it exists, the staged asset's blocking volume check fails (volume anomaly, escalated)."""
        return self.root / "volume_spike"

    @property
    def store(self) -> HealingStore:
        return HealingStore(self.root / "ops" / "healing.sqlite")

    def definitions(self) -> dg.Definitions:
        fault = self.fault

        asked = self.root / "asked_since"

        rate_limited = self.rate_limited

        @dg.asset(key=RAW, config_schema={"backfill_since": dg.Field(str, is_required=False)})
        def raw(context) -> None:  # unannotated: Dagster cannot resolve a postponed annotation here
            asked.write_text(str(context.op_execution_context.op_config.get("backfill_since")))
            if rate_limited.exists():
                raise RestRetriesExhaustedError("GET /things failed: HTTP 429 Too Many Requests")
            if fault.exists():
                requests.get(
                    f"http://127.0.0.1:{unused_port()}/", timeout=2
                )  # refused: a real ConnectionError

        bad_rows = self.bad_rows

        @dg.asset(key=STAGED, deps=[RAW])
        def staged() -> None:
            if bad_rows.exists():
                raise BadRowsError("src.thing: 3 of 3 rows break error-severity rules")

        volume_spike, check_unreachable = self.volume_spike, self.check_unreachable

        @dg.asset_check(asset=STAGED, name="volume_anomaly", blocking=True)
        def volume_anomaly() -> dg.AssetCheckResult:
            if check_unreachable.exists():
                requests.get(f"http://127.0.0.1:{unused_port()}/", timeout=2)
            return dg.AssetCheckResult(passed=not volume_spike.exists(), metadata={"rows": 3000})

        faults = (fault, self.other_fault)

        @dg.asset(key=OTHER_RAW)
        def other_raw() -> None:
            if any(path.exists() for path in faults):
                requests.get(f"http://127.0.0.1:{unused_port()}/", timeout=2)

        @dg.asset(key=OTHER_STAGED, deps=[OTHER_RAW])
        def other_staged() -> None:
            pass

        store = self.root / "ops" / "healing.sqlite"
        return dg.Definitions(
            assets=[raw, staged, *([other_raw, other_staged] if self.other_table else [])],
            asset_checks=[volume_anomaly],
            sensors=[
                build_healing_sensor(store, self.root / "ops" / "quality_events.jsonl", policy=self.policy)
            ],
            jobs=[build_approval_job(store)],
        )

    def materialize(
        self,
        selection: list[dg.AssetKey] | None = None,
        tags: dict[str, str] | None = None,
        run_config: dict | None = None,
    ) -> bool:
        job = self.definitions().resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            run_config=run_config,
            instance=self.instance,
            asset_selection=selection,
            tags=tags or {},
            raise_on_error=False,
        )
        return result.success

    def tick(self) -> list[dg.RunRequest]:
        time.sleep(0.06)
        definitions = self.definitions()
        sensor = definitions.resolve_sensor_def("healing")
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=definitions)
        result = sensor(context)
        self.cursor = result.cursor
        return list(result.run_requests or [])

    def run(self, request: dg.RunRequest) -> bool:
        run_config = request.run_config if isinstance(request.run_config, dict) else None
        return self.materialize(list(request.asset_selection or ()), dict(request.tags), run_config)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SensorWorld]:
    with dg.instance_for_test() as instance:
        yield SensorWorld(tmp_path, instance, fast_policy())


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    received: list[dict] = []

    def handle(request: Recorded) -> object:
        received.append(json.loads(request.body))
        return json_reply({"ok": True})

    with ScriptedServer(handle) as server:
        monkeypatch.setenv("PLATFORM_ALERT_WEBHOOK_URL", f"{server.base_url}/hooks/secret-token-123")
        yield received


def test_a_failed_run_is_retried_after_backoff_resolved_and_alerted(
    world: SensorWorld, webhook: list[dict]
) -> None:
    world.fault.touch()
    assert not world.materialize()
    world.fault.unlink()

    (request,) = world.tick() or world.tick()
    assert request.tags[ACTION_TAG] == "retry_with_backoff"
    assert request.tags[SOURCE_TAG] == "src", "held to one run per source like the source's own runs"
    assert SOURCE_TAG == AUTOMATION_SOURCE_TAG
    assert int(request.tags["dagster/priority"]) > 0, "leaves the queue before scheduled and delivery runs"
    assert set(request.asset_selection or ()) == {RAW, STAGED}, "the failed asset and what is downstream"
    assert world.run(request)
    assert world.tick() == []

    (incident,) = world.store.incidents()
    assert (incident.category, incident.status, incident.attempts) == ("transient_network", "resolved", 1)
    assert incident.time_to_recover_s is not None and incident.outcome.startswith("healed by run")
    assert world.store.outcome_counts("transient_network") == {"retry_with_backoff": (1, 0)}
    kinds = [alert["alerts"][0]["kind"] if "alerts" in alert else alert.get("kind") for alert in webhook]
    assert "resolution" in json.dumps(webhook) and kinds, "the incident and its resolution were alerted"
    assert "secret-token-123" not in json.dumps(webhook)


def test_the_backoff_counts_from_the_failure_so_a_failure_read_late_is_retried_on_the_tick_that_reads_it(
    tmp_path: Path,
) -> None:
    """The sensor reads a failure a tick after it happened: the retry's backoff has partly passed by then.
    Counted from the reading, the 10-s first retry came 20-40 s after the failure (the chaos soak)."""
    backoff = {"base_seconds": 1.0, "max_seconds": 1.0, "jitter": 0.0}
    with dg.instance_for_test() as instance:
        world = SensorWorld(tmp_path, instance, fast_policy(backoff=backoff))
        world.fault.touch()
        assert not world.materialize()
        world.fault.unlink()
        time.sleep(1.2)  # the daemon was busy: the backoff has passed when the sensor first reads the failure

        (request,) = world.tick()
        (incident,) = world.store.incidents()
        assert incident.next_attempt_at == incident.opened_at + 1.0
        assert request.tags[INCIDENT_TAG] == incident.incident_id


def _queued(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.DagsterRun:
    """The requested attempt, waiting in the run queue (as the daemon's queued run coordinator holds it)."""
    code_location = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(code_location, "__repository__"), "__ASSET_JOB")
    queued = dg.DagsterRun(
        job_name="__ASSET_JOB",
        status=dg.DagsterRunStatus.QUEUED,
        tags=dict(request.tags),
        remote_job_origin=origin,
    )
    return instance.add_run(queued)


def test_an_attempt_still_queued_when_another_run_repairs_its_asset_is_canceled(tmp_path: Path) -> None:
    """The source's scheduled run lands the failed asset while the healing attempt waits for the source's
    run slot behind it: the incident is resolved and the attempt canceled in the queue, not run again."""
    with dg.instance_for_test() as instance:
        world = SensorWorld(tmp_path, instance, fast_policy())
        world.fault.touch()
        assert not world.materialize()
        world.fault.unlink()
        (request,) = world.tick() or world.tick()
        attempt = _queued(instance, request)
        started = instance.add_run(
            dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags=dict(request.tags))
        )
        assert world.materialize(), "the source's scheduled run"
        assert world.tick() == []

        (incident,) = world.store.incidents()
        assert incident.status == "resolved" and incident.outcome.startswith("materialized by run")
        canceled = instance.get_run_by_id(attempt.run_id)
        assert canceled is not None and canceled.status == dg.DagsterRunStatus.CANCELED
        assert "resolved by run" in str(instance.all_logs(attempt.run_id)[-2].message), "says why in its log"
        running = instance.get_run_by_id(started.run_id)
        assert running is not None and running.status == dg.DagsterRunStatus.STARTED, "left to finish"


def test_a_retry_meeting_the_same_outage_again_is_not_learned_as_retrying_failing(world: SensorWorld) -> None:
    """The outage outlasts the first retry: the attempt counts, but the policy does not learn that retrying
    fails (a long outage had taught it to wait for a human's approval on every later blip)."""
    world.fault.touch()
    assert not world.materialize()
    (first,) = world.tick() or world.tick()
    assert not world.run(first), "still down"
    retried = world.tick() + world.tick() + world.tick()
    assert world.store.outcome_counts("transient_network") == {}
    world.fault.unlink()
    (second,) = retried or world.tick() + world.tick()
    assert world.run(second)
    world.tick()
    (incident,) = world.store.incidents()
    assert (incident.status, incident.attempts, incident.decision) == ("resolved", 2, "auto")
    assert world.store.outcome_counts("transient_network") == {"retry_with_backoff": (1, 0)}


def test_a_retry_asks_again_for_what_the_failed_run_was_asked_to_read(world: SensorWorld) -> None:
    """A failed backfill is retried as the same backfill, not as a regular run (which would read from the
    watermark on, not the range)."""
    backfill = {"ops": {"raw__src__thing": {"config": {"backfill_since": "2026-01-03"}}}}
    world.fault.touch()
    assert not world.materialize(run_config=backfill)
    world.fault.unlink()
    (world.root / "asked_since").unlink()

    (request,) = world.tick() or world.tick()
    assert request.run_config == backfill
    assert world.run(request)
    assert (world.root / "asked_since").read_text() == "2026-01-03"
    assert world.tick() == []
    assert [incident.status for incident in world.store.incidents()] == ["resolved"]


def test_another_run_failing_the_same_way_joins_the_incident_being_healed(world: SensorWorld) -> None:
    """A schedule's runs keep failing while the first failure is being healed: one incident, one retry
    (found by the chaos soak: each failed run opened an incident with retries of its own)."""
    world.fault.touch()
    assert not world.materialize()
    requests_due = world.tick()
    assert not world.materialize()
    world.fault.unlink()
    requests_due += world.tick() + world.tick()

    assert len(requests_due) == 1, "one incident, one retry"
    assert world.run(requests_due[0])
    assert world.tick() == []
    assert [(i.category, i.status) for i in world.store.incidents()] == [("transient_network", "resolved")]


def test_time_to_recover_counts_from_the_failure_even_when_the_sensor_reads_it_with_its_repair(
    world: SensorWorld,
) -> None:
    """The sensor was not ticking during the outage (a daemon restart): one tick reads the failed run and
    the run that repaired it. The outage is the failure's timestamp to the repair's end, not 0 s."""
    world.fault.touch()
    assert not world.materialize()
    time.sleep(1.0)  # the outage
    world.fault.unlink()
    assert world.materialize()
    assert world.tick() == []

    (incident,) = world.store.incidents()
    (failed, repaired) = sorted(world.instance.get_run_records(), key=lambda r: r.create_timestamp)
    (failure,) = world.instance.all_logs(failed.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    assert (incident.status, incident.opened_at, incident.resolved_at) == (
        "resolved",
        failure.timestamp,
        repaired.end_time,
    )
    assert incident.time_to_recover_s == round(repaired.end_time - failure.timestamp, 3) >= 1.0


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cool_down(
    world: SensorWorld,
) -> None:
    cooldown_s = 60.0  # passed by moving the breaker's clock, not by waiting: a busy machine made 1 s flaky
    world.policy = fast_policy(
        circuit_breaker={
            "failures_to_open": 2,
            "first_cooldown_seconds": cooldown_s,
            "cooldown_seconds": cooldown_s,
        },
        max_attempts=5,
        thresholds={
            "auto_confidence": 0.5,
            "propose_confidence": 0.3,
        },  # failed attempts lower the confidence
    )
    world.fault.touch()
    assert not world.materialize()
    for _ in range(3):
        for request in world.tick():
            assert not world.run(request)
    assert world.store.breaker("src").state == "open"
    assert world.tick() == [], "no run against an open source"
    opened = world.store.breaker("src")
    assert not world.materialize(), "a run already under way when it opened"
    world.tick()
    assert world.store.breaker("src") == opened, "its failure does not lengthen the cool-down"
    world.fault.unlink()
    world.store.save_breaker(replace(opened, changed_at=opened.changed_at - cooldown_s))
    (probe,) = world.tick()
    assert world.store.breaker("src").state == "half_open"
    assert world.run(probe)
    world.tick()
    assert world.store.breaker("src").state == "closed"
    assert world.store.incidents()[0].status == "resolved"


def test_an_escalated_sources_breaker_half_opens_for_its_schedule_after_the_cool_down(
    world: SensorWorld,
) -> None:
    """With the incident escalated no healing attempt probes the source; its next scheduled run does once
    the cool-down has passed (the chaos soak: the REST source never ran again after an escalated 429 storm,
    its schedule skipping behind a breaker left open)."""
    cooldown_s = 60.0  # passed by moving the breaker's clock, not by waiting (see the test above)
    world.policy = fast_policy(
        circuit_breaker={
            "failures_to_open": 3,
            "first_cooldown_seconds": cooldown_s,
            "cooldown_seconds": cooldown_s,
        }
    )
    escalated = Incident(
        incident_id="storm1", dedup_key="step_failure:r1:raw", opened_at=time.time(), updated_at=time.time(),
        kind="step_failure", asset_key=RAW.to_user_string(), source="src", run_id="r1",
        category="source_unavailable", confidence=0.9, rule_id="http_5xx", explanation="why",
        evidence_json="{}", action="escalate", status="escalated",
    )  # fmt: skip
    world.store.add_incident(escalated)
    opened = Breaker("src", "open", 3, time.time())
    world.store.save_breaker(opened)
    assert world.tick() == []
    assert open_breaker_skip(world.root / "ops" / "healing.sqlite", "src", "waits") is not None, (
        "cooling down"
    )
    world.store.save_breaker(replace(opened, changed_at=opened.changed_at - cooldown_s))
    assert world.tick() == [], "nothing for the engine to retry"
    assert world.store.breaker("src").state == "half_open"
    assert open_breaker_skip(world.root / "ops" / "healing.sqlite", "src", "waits") is None, (
        "the schedule may run"
    )
    assert world.materialize()
    world.tick()
    assert world.store.breaker("src").state == "closed"
    assert world.store.incident("storm1").status == "resolved"


def test_a_run_whose_observer_died_halfway_is_observed_once_its_lease_has_passed(world: SensorWorld) -> None:
    """A daemon killed between claiming a failed run and finishing with it (the chaos soak kills daemons)
    leaves the claim unfinished: the other daemon holds its cursor at that run, and takes the claim over
    once the lease has passed, so the failure still becomes an incident."""
    world.tick()
    world.fault.touch()
    assert not world.materialize()
    (failed,) = world.instance.get_runs(limit=1)
    assert world.store.claim_run(failed.run_id, time.time()) == "claimed"  # then the claimer died
    world.tick()
    assert world.store.incidents() == [], "another daemon may still be observing it"
    with sqlite3.connect(world.root / "ops" / "healing.sqlite") as ledger:
        ledger.execute(
            "UPDATE run_observations SET claimed_at = claimed_at - ?", (OBSERVATION_LEASE_SECONDS,)
        )
    world.tick()
    (incident,) = world.store.incidents()
    assert incident.run_id == failed.run_id
    assert world.store.claim_run(failed.run_id, time.time()) == "observed"
    world.tick()
    assert len(world.store.incidents()) == 1, "observed once"


def test_a_refused_delivery_leaves_the_breaker_closed_and_its_repeats_join_the_escalation(
    world: SensorWorld, webhook: list[dict]
) -> None:
    """Bad rows say nothing about the source's health: its breaker stays closed, so its good deliveries
    keep flowing; and each run refusing the same bad delivery is the one escalated incident, alerted once
    (the chaos soak saw the breaker hold a file source's deliveries for ten minutes and an escalation per
    run). The escalated incident shows the latest repeat (its run, its time): the human sees it still fails
    after what they repaired; a warning about the asset of the same category joins it, but is no repeat."""
    world.policy = fast_policy(circuit_breaker={"failures_to_open": 2, "cooldown_seconds": 600})
    world.bad_rows.touch()
    seen = []
    for _ in range(3):
        assert not world.materialize()
        assert world.tick() == []
        seen += [(i.run_id, i.updated_at) for i in world.store.incidents()]
    assert world.store.breaker("src").state == "closed"
    (incident,) = world.store.incidents()
    assert (incident.category, incident.status) == ("data_quality", "escalated")
    assert len(set(seen)) == 3 and seen[-1] == (incident.run_id, incident.updated_at), seen
    escalations = [alert for alert in webhook if alert.get("kind") == "escalation"]
    assert len(escalations) == 1, webhook

    warning = QualityEvent(
        "check:staged/src/thing:mean_shift:1", "check", STAGED.to_user_string(), "mean_shift", "warn",
        "2026-12-07T00:00:00+00:00", {"run_id": "another", "blocking": False, "metadata": {"column": "x"}},
    )  # fmt: skip
    quality_event_store(world.root / "ops" / "quality_events.jsonl").append([warning])
    world.tick()
    (joined,) = world.store.incidents()
    assert (joined.run_id, joined.updated_at, joined.evidence["check_name"]) == (
        incident.run_id,
        incident.updated_at,
        None,
    ), "a warning about the asset is not the refused delivery failing again"

    world.bad_rows.unlink()  # the human's corrected delivery
    assert world.materialize()
    world.tick()
    assert [i.status for i in world.store.incidents()] == ["resolved"]


def test_each_run_failing_a_blocking_check_joins_the_one_escalated_incident(
    world: SensorWorld, webhook: list[dict]
) -> None:
    """The asset is materialized before its blocking check fails the run: that materialization must not
    resolve the incident the check's failure keeps open, or every repeat is a new incident and alert."""
    world.volume_spike.touch()
    for _ in range(3):
        assert not world.materialize()
        world.tick()
    (incident,) = world.store.incidents()
    assert (incident.asset_key, incident.category, incident.status) == (
        STAGED.to_user_string(),
        "volume_anomaly",
        "escalated",
    )
    assert len([alert for alert in webhook if alert.get("kind") == "escalation"]) == 1, webhook
    world.volume_spike.unlink()
    assert world.materialize()
    world.tick()
    assert [i.status for i in world.store.incidents()] == ["resolved"]


def test_each_repeat_of_an_escalated_failure_tells_the_router_a_reminder(world: SensorWorld) -> None:
    """The engine reports every repeat; whether it pages is the router's (at most every
    `remind_every_minutes`, tests/test_alert_routing.py)."""
    events: list[HealingEvent] = []
    graph = HealingGraph.from_asset_graph(world.definitions().resolve_asset_graph())
    healer = Healer(world.store, world.policy, graph, notify=events.append)
    cursor = HealingCursor()
    world.bad_rows.touch()
    for _ in range(3):
        assert not world.materialize()
        _, cursor = healer.tick(world.instance, cursor)
    assert [event.kind for event in events] == ["escalation", "reminder", "reminder"]
    assert len({event.incident.incident_id for event in events}) == 1


def test_a_failed_run_still_resolves_the_incidents_of_what_it_materialized(world: SensorWorld) -> None:
    """The extraction's incident is over once an extraction succeeds, though the run then fails further
    down for a reason of its own (the chaos soak: an escalated login failure stayed open behind a drift)."""
    world.fault.touch()
    assert not world.materialize()
    world.tick()
    world.fault.unlink()
    world.bad_rows.touch()
    assert not world.materialize(), "the extraction succeeds, staging refuses the delivery"
    world.tick()
    by_asset = {i.asset_key: (i.category, i.status) for i in world.store.incidents()}
    assert by_asset == {
        RAW.to_user_string(): ("transient_network", "resolved"),
        STAGED.to_user_string(): ("data_quality", "escalated"),
    }


def test_an_attempt_failing_another_way_is_decided_on_as_that_failure(world: SensorWorld) -> None:
    """A crashed run's retry that is rate-limited is slowed down (an action for failed steps), not escalated
    for want of an action for crashed runs (the chaos soak: a code-server restart, then a 429 storm). The
    retry is not learned as failing (it got past the crash); slowing down that meets the same 429s is."""
    crash = Incident(
        incident_id="crash1", dedup_key="run_crash:r1:", opened_at=time.time(), updated_at=time.time(),
        kind="run_crash", asset_key=RAW.to_user_string(), source="src", run_id="r1",
        category="interrupted", confidence=0.9, rule_id="run_interrupted_unexpectedly", explanation="why",
        evidence_json="{}", action="retry_with_backoff", status="running", attempts=1,
    )  # fmt: skip
    world.store.add_incident(crash)
    world.tick()  # the cursor past the runs so far
    world.rate_limited.touch()
    assert not world.materialize(tags={INCIDENT_TAG: "crash1", ACTION_TAG: "retry_with_backoff"})
    (slower,) = world.tick()  # its backoff, counted from the failure, has passed
    decided = world.store.incident("crash1")
    assert decided is not None
    assert world.store.outcome_counts("interrupted") == {}, "it got past the crash and met a new failure"
    assert (decided.kind, decided.category, decided.action, decided.status, decided.attempts) == (
        "step_failure",
        "rate_limited",
        "slow_down",
        "running",
        2,
    )
    assert slower.tags[ACTION_TAG] == "slow_down"
    assert not world.materialize(tags={INCIDENT_TAG: "crash1", ACTION_TAG: "slow_down"}), "still limited"
    world.tick()
    assert world.store.outcome_counts("rate_limited") == {"slow_down": (0, 1)}, "slowing down did not cure it"


def test_overrides_decay_back_after_healthy_runs(world: SensorWorld) -> None:
    world.store.set_override("raw/src/thing", "batch_scale", 0.25, 1.0, time.time())
    for _ in range(3):
        assert world.materialize()
        world.tick()
    assert world.store.overrides("raw/src/thing") == {"batch_scale": 0.625}
    for _ in range(9):  # 0.625 -> 0.8125 -> 0.906 -> 0.953: back above 0.95, dropped
        assert world.materialize()
        world.tick()
    assert world.store.overrides("raw/src/thing") == {}


def test_a_human_approves_a_proposal_with_the_job_and_the_sensor_acts(world: SensorWorld) -> None:
    world.policy = fast_policy(thresholds={"auto_confidence": 0.99, "propose_confidence": 0.5})
    world.fault.touch()
    assert not world.materialize()
    world.fault.unlink()
    assert world.tick() == []
    (incident,) = world.store.incidents()
    assert (incident.status, incident.decision) == ("proposed", "propose")

    def approve(**config: str) -> dg.ExecuteInProcessResult:
        return (
            world.definitions()
            .resolve_job_def(APPROVAL_JOB_NAME)
            .execute_in_process(
                instance=world.instance,
                run_config={"ops": {"approve_proposed_action": {"config": config}}},
                raise_on_error=False,
            )
        )

    with pytest.raises(dg.DagsterInvalidConfigError, match='Missing required config entry "approved_by"'):
        approve(incident_id=incident.incident_id)
    assert not approve(incident_id=incident.incident_id, approved_by="  ").success, "a blank name is refused"
    assert world.store.incident(incident.incident_id).status == "proposed", "nobody approved it"

    approval = approve(incident_id=incident.incident_id, approved_by="oncall@example.com")
    assert approval.success
    approved = world.store.incident(incident.incident_id)
    assert approved is not None and approved.status == "approved"
    assert approved.approved_by == f"oncall@example.com (run {approval.run_id})"

    (request,) = world.tick()
    assert request.tags[INCIDENT_TAG] == incident.incident_id
    assert world.run(request)
    world.tick()
    healed = world.store.incident(incident.incident_id)
    assert healed is not None and healed.status == "resolved"

    late = approve(incident_id=incident.incident_id, approved_by="late@example.com")
    assert late.success, "a late approval of a healed incident is no failure for the healing sensor to heal"
    unchanged = world.store.incident(incident.incident_id)
    assert unchanged is not None
    assert (unchanged.status, unchanged.approved_by) == ("resolved", approved.approved_by)
    world.tick()
    assert len(world.store.incidents()) == 1, "the late approval opened no incident"
    assert not approve(incident_id="no-such-incident", approved_by="oncall@example.com").success


def test_an_incident_open_past_its_deadline_is_escalated_and_alerted(
    world: SensorWorld, webhook: list[dict]
) -> None:
    world.policy = fast_policy(
        thresholds={"auto_confidence": 0.99, "propose_confidence": 0.5}, escalate_open_after_minutes=0.01
    )
    world.fault.touch()
    assert not world.materialize()
    assert world.tick() == []
    (proposed,) = world.store.incidents()
    assert proposed.status == "proposed", "waiting for a human"
    time.sleep(0.7)  # past the 0.6 s deadline
    assert world.tick() == []
    (overdue,) = world.store.incidents()
    assert (overdue.status, overdue.outcome) == ("escalated", "escalated: open past its deadline")
    kinds = json.dumps(webhook)
    assert '"proposal"' in kinds and '"escalation"' in kinds, (
        "the proposal and then the escalation were alerted"
    )


def test_a_crashed_attempt_that_dagster_relaunches_is_not_a_failed_attempt(tmp_path: Path) -> None:
    """Dagster's run retry (crashes only, `dagster.yaml`) relaunches a healing run whose worker was killed,
    with its incident's tags, and the relaunch's outcome is the attempt's. Taking the crash as a failed
    attempt had re-decided an approved schema evolution as `shrink_batch` for the crash, launched that
    beside the relaunch, and the drift was no longer on record (the 30-minute chaos soak)."""
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 1}}) as instance:
        world = SensorWorld(tmp_path, instance, fast_policy())
        drift = Incident(
            incident_id="drift1", dedup_key="step_failure:r1:staged", opened_at=time.time(),
            updated_at=time.time(), kind="step_failure", asset_key=STAGED.to_user_string(), source="src",
            run_id="r1", category="schema_drift", confidence=0.95, rule_id="schema_drift_staging",
            explanation="why", evidence_json="{}", action="evolve_schema", status="running", attempts=1,
        )  # fmt: skip
        world.store.add_incident(drift)
        world.tick()  # the cursor past the runs so far
        tags = {INCIDENT_TAG: "drift1", ACTION_TAG: "evolve_schema"}
        crashed = instance.add_run(
            dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.STARTED, tags=tags)
        )
        instance.report_run_failed(crashed)

        assert world.tick() == [], "no second attempt beside the relaunch"
        kept = world.store.incident("drift1")
        assert kept is not None
        assert (kept.category, kept.action, kept.status, kept.attempts) == (
            "schema_drift",
            "evolve_schema",
            "running",
            1,
        )

        assert world.materialize(tags={**tags, "dagster/retry_number": "1"})
        world.tick()
        healed = world.store.incident("drift1")
        assert healed is not None and healed.status == "resolved"


def test_incidents_of_one_source_falling_due_together_are_retried_in_one_run(world: SensorWorld) -> None:
    """Two tables of a source fail together (connections terminated): one attempt retries both, instead of
    the second waiting for the source's run slot behind the first's (the chaos soak: 50 s)."""
    world.other_table = True
    world.fault.touch()
    assert not world.materialize()
    world.fault.unlink()

    (request,) = world.tick() or world.tick()
    first, second = world.store.incidents()
    assert request.tags[INCIDENT_TAG] == first.incident_id
    assert request.tags[COMPANIONS_TAG] == second.incident_id
    assert set(request.asset_selection or ()) == {RAW, STAGED, OTHER_RAW, OTHER_STAGED}
    assert [i.attempts for i in world.store.incidents()] == [1, 1], "an attempt for each"
    assert world.run(request)
    assert world.tick() == []

    for incident in world.store.incidents():
        assert (incident.status, incident.outcome) == ("resolved", f"healed by run {_last_run_id(world)}")
    assert world.store.outcome_counts("transient_network") == {"retry_with_backoff": (2, 0)}


def test_one_run_retrying_two_incidents_heals_the_one_it_repaired_and_retries_the_other(
    world: SensorWorld,
) -> None:
    """Each failure of a shared attempt is the incident's whose retry selected it: the table that still
    fails retries again, the one that landed is healed, and no failure is carried twice."""
    world.other_table = True
    world.fault.touch()
    assert not world.materialize()
    world.fault.unlink()
    world.other_fault.touch()
    (request,) = world.tick() or world.tick()
    assert not world.run(request), "the second table still fails"
    (retry,) = world.tick()  # the milliseconds of the test policy's backoff have passed

    by_asset = {i.asset_key: i for i in world.store.incidents()}
    assert len(by_asset) == 2, "the repeat joined its incident, none was opened for it"
    thing, other = by_asset[RAW.to_user_string()], by_asset[OTHER_RAW.to_user_string()]
    assert (thing.status, thing.outcome) == ("resolved", f"healed by run {_last_run_id(world)}")
    assert (other.status, other.attempts, other.category) == ("running", 2, "transient_network")
    assert retry.tags[INCIDENT_TAG] == other.incident_id and COMPANIONS_TAG not in retry.tags
    assert set(retry.asset_selection or ()) == {OTHER_RAW, OTHER_STAGED}
    world.other_fault.unlink()
    assert world.run(retry)
    world.tick()
    assert {i.status for i in world.store.incidents()} == {"resolved"}


def test_a_queued_attempt_is_canceled_only_once_every_incident_it_retries_is_resolved(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        world = SensorWorld(tmp_path, instance, fast_policy(), other_table=True)
        world.fault.touch()
        assert not world.materialize()
        world.fault.unlink()
        (request,) = world.tick() or world.tick()
        queued = _queued(instance, request)

        assert world.materialize([RAW, STAGED]), "the first table lands in another run"
        world.tick()
        waiting = instance.get_run_by_id(queued.run_id)
        assert waiting is not None and waiting.status == dg.DagsterRunStatus.QUEUED, (
            "the other still needs it"
        )

        assert world.materialize([OTHER_RAW, OTHER_STAGED])
        world.tick()
        canceled = instance.get_run_by_id(queued.run_id)
        assert canceled is not None and canceled.status == dg.DagsterRunStatus.CANCELED
        assert {i.outcome.split(" run ")[0] for i in world.store.incidents()} == {"materialized by"}


def _last_run_id(world: SensorWorld) -> str:
    (record,) = world.instance.get_run_records(limit=1)
    return record.dagster_run.run_id


def test_a_checks_own_failed_step_is_its_assets_failure_and_its_retry_selects_that_asset(
    world: SensorWorld,
) -> None:
    """Taken for no asset, the retry of a failed check step selected nothing, which Dagster runs as every
    asset of the code location (the 30-minute chaos soak: a whole-platform healing run)."""
    world.check_unreachable.touch()
    assert not world.materialize()
    world.check_unreachable.unlink()

    (request,) = world.tick() or world.tick()
    (incident,) = world.store.incidents()
    assert (incident.asset_key, incident.source, incident.category) == (
        STAGED.to_user_string(),
        "src",
        "transient_network",
    )
    assert set(request.asset_selection or ()) == {STAGED}, "the checked asset, its checks run with it"
    assert world.run(request)
    world.tick()
    assert world.store.incidents()[0].status == "resolved"


def test_a_failure_naming_no_asset_is_escalated_not_retried_as_every_asset(world: SensorWorld) -> None:
    world.tick()  # the cursor past the runs so far
    crashed = world.instance.add_run(dg.DagsterRun(job_name="ops_job", status=dg.DagsterRunStatus.STARTED))
    world.instance.report_run_failed(crashed, message="Execution was interrupted unexpectedly.")

    assert world.tick() == []
    (incident,) = world.store.incidents()
    assert (incident.asset_key, incident.category, incident.status) == (None, "interrupted", "escalated")
    assert "names no asset" in str(incident.decided_by)


def test_a_failed_run_that_dagster_relaunches_opens_no_incident_its_relaunchs_failure_does(
    world: SensorWorld,
) -> None:
    """A restart of the code server interrupts a run's step: Dagster fails the run as an unexpected
    termination and relaunches it, tagging it `dagster/will_retry` (passed here: in process, no worker can
    be terminated). The relaunch is the retry; a healing run beside it did the work twice."""
    world.fault.touch()
    assert not world.materialize(tags={"dagster/will_retry": "true"})
    assert world.tick() == [] and world.store.incidents() == []
    assert not world.materialize(tags={"dagster/will_retry": "false", "dagster/retry_number": "1"})
    world.fault.unlink()
    (request,) = world.tick() or world.tick()
    (incident,) = world.store.incidents()
    assert request.tags[INCIDENT_TAG] == incident.incident_id
