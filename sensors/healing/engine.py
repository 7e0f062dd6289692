"""The healing engine: one `tick` turns what failed since the last tick into incidents, decides what to do
about each (`healing_policy`), and returns the runs to launch. The `healing` sensor calls it; tests call
it directly between real materializations.

A tick:
1. **Runs** that finished since the cursor: every failed step (or the run itself, when it crashed without
   a failed step) becomes evidence, classified and recorded as an incident (once: the step is the dedup
   key), opened at the failure event's own time; a step failed by a blocking check is that check's
   failure (its asset, name and metadata). A step whose process was killed carries no error text;
   the executor's engine event about it does, and is read into the evidence. A failed run that was itself
   a healing attempt (`healing/incident_id` tag, and `healing/companion_incident_ids` for the incidents
   it retried with it) updates its incidents instead: the attempt's outcome is recorded (what the policy
   learns from) and the next decision is taken. A failure that says the source
   is unwell (`SOURCE_HEALTH_CATEGORIES`) counts against its circuit breaker. A failure of an asset whose
   incident of the same category is not resolved yet joins it. Every finished run is observed by one
   daemon only (`HealingStore.claim_run`), however many share the ledger. Any run, failed or not,
   resolves the incidents of the assets it materialized (recovered when it ended), and cancels their
   healing attempts still waiting in the queue; a successful one also closes its sources' circuit breakers
   and lets their parameter overrides decay.
2. **Quality events** (failed checks, stale assets: `sensors/healing/quality_events.py`) appended since
   the last tick, read from the events file by byte offset (safe under rotation): incidents too.
3. **Due actions**: incidents healing automatically whose backoff (counted from the failure) has passed,
   and proposals a human approved (`apply_healing_action`), become run requests (failed assets and what is
   downstream, or the chain feeding a stale asset), with the action's run config, unless their source's
   breaker is open. Reruns of one source falling due together share one run (`_companions`).
4. **Overdue**: incidents open past their deadline are escalated.
5. **Breakers**: an open breaker whose cool-down has passed goes half-open (if no attempt of step 3 took
   it already): from then on the source's runs may try again, the first failure opens it again and the
   first success closes it.

Every decision, attempt and outcome is written to the ledger (`resources/state/healing_store.py`) and alerted
through `alert` (routing, grouping and channels live in `sensors/alerting/routing.py`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from resources.state.database import StateLocation
from resources.state.healing_store import Breaker, HealingStore, Incident
from resources.state.quality_events import EventsPosition, QualityEvent, QualityEventLog
from sensors.healing.classifier import (
    Diagnosis,
    ErrorLink,
    Evidence,
    classify,
    evidence_from_check,
    evidence_from_error,
)
from sensors.healing.graph import HealingGraph
from sensors.healing.policy import Decision, HealingPolicy

INCIDENT_TAG = "healing/incident_id"
ATTEMPT_TAG = "healing/attempt"
COMPANIONS_TAG = "healing/companion_incident_ids"
"""Other incidents of the same source the run is an attempt for too (comma-separated; `_companions`)."""
ACTION_TAG = "healing/action"
SOURCE_TAG = "platform/source"
"""The tag schedules and delivery/change sensors put on a source's runs (`sensors/automation/conditions.py`,
which healing may not import): `dagster.yaml` admits one run per value, so a healing run of a source
waits for the source's scheduled run instead of extracting beside it."""
PRIORITY_TAG = "dagster/priority"
HEALING_PRIORITY = "1"
"""Healing runs leave the run queue before scheduled and delivery runs (priority 0): they repair what those
would fail on again. In a CI chaos soak an approved schema evolution waited 160 s behind two scheduled runs
of its source that each failed on the same drift."""
BATCH_SCALE = "batch_scale"
RATE_SCALE = "rate_scale"
ON_DRIFT = "on_drift"
"""Parameter overrides, as factors of the asset's configured value: `batch_scale` of `batch_rows` (per
asset), `rate_scale` of the source's requests per second (per source)."""
MIN_SCALE = 1 / 64
RERUN_ACTIONS = {"retry_with_backoff", "shrink_batch", "slow_down", "refresh_credentials"}
OPEN_STATUSES = ("open", "healing", "running", "proposed", "approved", "escalated")
"""Incident statuses in which the platform, an approver or a human is still on a failure: another failure
of the same asset and category joins the incident (`_being_handled`), and a run materializing the asset
resolves it (`_resolve_materialized`)."""


@dataclass(frozen=True)
class HealingEvent:
    """What the engine tells the alert channels: an incident and what happened to it."""

    kind: str
    """incident | proposal | escalation | reminder | resolution"""
    incident: Incident
    decision: Decision | None = None


@dataclass
class HealingCursor:
    runs_after: float = 0.0
    """Update time of the last finished run handled."""
    events_position: EventsPosition | None = None
    """How far the quality events were read (`read_new` of `resources/state/quality_events.py`)."""
    legacy_events_read: int = 0
    """Lines of the events file read, as cursors counted before they kept a position: converted once."""

    def dump(self) -> str:
        position = self.events_position.to_json() if self.events_position else None
        return json.dumps({"runs_after": self.runs_after, "events_position": position})

    @classmethod
    def parse(cls, raw: str | None) -> HealingCursor:
        if not raw:
            return cls()
        value = json.loads(raw)
        return cls(
            float(value.get("runs_after", 0.0)),
            EventsPosition.from_json(value.get("events_position")),
            int(value.get("quality_events_read", 0)),
        )


class Healer:
    def __init__(
        self,
        store: HealingStore,
        policy: HealingPolicy,
        graph: HealingGraph,
        *,
        notify: Callable[[HealingEvent], None] = lambda event: None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store, self.policy, self.graph = store, policy, graph
        self.notify, self.clock, self.rng = notify, clock, rng or random.Random()

    def tick(
        self,
        instance: dg.DagsterInstance,
        cursor: HealingCursor,
        quality_events: QualityEventLog | None = None,
    ) -> tuple[list[dg.RunRequest], HealingCursor]:
        """One pass: the runs finished and the quality events appended since `cursor` (read from the
        events file by offset), then the actions due."""
        now = self.clock()
        runs_after, held = cursor.runs_after, False
        for record in _finished_runs(instance, cursor.runs_after):
            finished_at = min(now, record.end_time or now)
            run_id = record.dagster_run.run_id
            human = record.dagster_run.job_name == APPROVAL_JOB_NAME
            claim = "observed" if human else self.store.claim_run(run_id, now)
            if claim == "claimed":
                try:
                    self._observe_run(instance, record.dagster_run, now, finished_at)
                except BaseException:
                    # The tick fails and its cursor stays: the run is observed again by the next tick.
                    self.store.release_run(run_id)
                    raise
                self.store.finish_run(run_id)
            # A run another daemon is still observing holds the cursor: if that daemon dies, this one
            # reads the run again and takes its claim over once the lease has passed.
            held = held or claim == "in_progress"
            if not held:
                runs_after = max(runs_after, record.update_timestamp.timestamp())
        position = cursor.events_position
        if quality_events is not None:
            if position is None and cursor.legacy_events_read:
                position = quality_events.position_after(cursor.legacy_events_read)
            events, position = quality_events.read_new(position)
            for event in events:
                self._observe_quality_event(event, now)
        self._escalate_overdue(now)
        requests = self._due_requests(now)
        self._half_open_cooled_breakers(now)
        return requests, HealingCursor(runs_after, position)

    # 1. Runs

    def _observe_run(
        self, instance: dg.DagsterInstance, run: dg.DagsterRun, now: float, finished_at: float
    ) -> None:
        """`finished_at`: when the run ended, the moment of recovery for the incidents a success resolves."""
        attempted = [found for i in attempt_ids(run.tags) if (found := self.store.incident(i)) is not None]
        if run.status == dg.DagsterRunStatus.SUCCESS:
            for incident in attempted:
                self._resolve(incident, now, finished_at, f"healed by run {run.run_id}", learn=True)
            self._healthy(instance, run, now, finished_at)
            return
        repeated = _repeated_op_config(run)
        evidence = [replace(item, op_config=repeated) for item in _run_evidence(instance, run, self.graph)]
        materialized = self._resolve_materialized(
            instance, run, now, finished_at, failing={e.asset_key for e in evidence}
        )
        unhealthy = [e for e in evidence if classify(e).category.value in SOURCE_HEALTH_CATEGORIES]
        for source in {self.graph.source_of(e.asset_key) for e in unhealthy} - {None}:
            self._breaker_failure(str(source), now)
        if _relaunched_by_dagster(instance, run, evidence[0]):
            return  # the relaunch (with the run's tags, its incidents' too) is observed when it ends
        if attempted:
            self._attempts_failed(attempted, evidence, materialized, run.run_id, now, finished_at)
            return
        for item in evidence:
            self._open(item, f"{item.kind}:{run.run_id}:{item.step_key or ''}", now)

    def _healthy(
        self, instance: dg.DagsterInstance, run: dg.DagsterRun, now: float, finished_at: float
    ) -> None:
        assets = self._resolve_materialized(instance, run, now, finished_at)
        sources = {self.graph.source_of(key) for key in assets} - {None}
        for source in sources:
            self.store.save_breaker(Breaker(str(source), "closed", 0, now))
        for scope in assets | {str(s) for s in sources}:
            self._decay_overrides(scope)

    def _resolve_materialized(
        self,
        instance: dg.DagsterInstance,
        run: dg.DagsterRun,
        now: float,
        finished_at: float,
        failing: set[str | None] | None = None,
    ) -> set[str]:
        """Resolves the incidents of the assets `run` materialized (another incident's attempt aside), and
        returns those assets. A run that failed further down still repaired what it materialized: an
        extraction's escalated login failure is over once the extraction succeeds, though the source's
        staging then fails for a drift of its own (the chaos soak). Not the assets the run failed for
        (`failing`): an asset whose blocking check fails is materialized before its check fails the run,
        and resolving its incident would make every repeat of that failure an incident and alert anew."""
        assets = {key.to_user_string() for key in _materialized(instance, run.run_id)}
        attempted = set(attempt_ids(run.tags))
        resolved = False
        for incident in self.store.incidents(statuses=OPEN_STATUSES):
            if incident.asset_key in assets - (failing or set()) and incident.incident_id not in attempted:
                self._resolve(incident, now, finished_at, f"materialized by run {run.run_id}", learn=False)
                resolved = True
        if resolved:
            self._cancel_settled_attempts(instance, run.run_id)
        return assets

    def _cancel_settled_attempts(self, instance: dg.DagsterInstance, resolved_by: str) -> None:
        """Cancels the healing runs still waiting in the queue whose every incident is resolved: another
        run (the source's schedule, a delivery) repaired the assets first. Left queued, each waited for its
        source's run slot and then redid that work, holding back the next incident's attempt behind it: in
        a 30-minute chaos soak 7 of 24 first attempts started after another run had resolved their
        incident. A run still attempting an open incident (a companion) is left to run. Canceled as
        Dagster's queued run coordinator cancels a queued run, but a run that started meanwhile is left to
        finish (the coordinator would terminate it)."""
        queued = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
        for record in queued:
            ids = attempt_ids(record.dagster_run.tags)
            incidents = [self.store.incident(i) for i in ids]
            if not ids or any(i is None or i.status in OPEN_STATUSES for i in incidents):
                continue
            run = instance.get_run_by_id(record.dagster_run.run_id)
            if run is None or run.status != dg.DagsterRunStatus.QUEUED:
                continue
            instance.report_run_canceling(
                run,
                message=f"Every incident of this healing attempt ({', '.join(ids)}) was resolved by run "
                f"{resolved_by} before it started: canceled in the queue, nothing is left for it to repair.",
            )
            instance.report_run_canceled(run)

    def _attempts_failed(
        self,
        attempted: Sequence[Incident],
        evidence: Sequence[Evidence],
        materialized: set[str],
        run_id: str,
        now: float,
        finished_at: float,
    ) -> None:
        """A failed run that was an attempt for one incident, or for several of one source (`_companions`):
        each failure is the attempt's of the incident it was a retry of (the first whose retry selected the
        failed asset; the run's first incident for a failure of none, such as a crash), so that one failure
        is carried by one incident. An incident that carries none healed when its asset was materialized
        (the run failed on another's), else its attempt failed as the run did (it never got to run)."""
        carried: dict[str, list[Evidence]] = {incident.incident_id: [] for incident in attempted}
        for item in evidence:
            key = dg.AssetKey.from_user_string(item.asset_key) if item.asset_key else None
            owner = next((i for i in attempted if key is not None and key in self._targets(i)), attempted[0])
            carried[owner.incident_id].append(item)
        for incident in attempted:
            if own := carried[incident.incident_id]:
                self._attempt_failed(incident, own[0], now)
            elif incident.asset_key in materialized:
                self._resolve(incident, now, finished_at, f"healed by run {run_id}", learn=True)
            else:
                self._attempt_failed(incident, evidence[0], now)

    def _attempt_failed(self, incident: Incident, evidence: Evidence, now: float) -> None:
        """The failed attempt is claimed (the incident still running that attempt) before it is learned and
        decided on: a daemon reading it after its peer did leaves it alone. The incident takes the attempt's
        failure (kind, diagnosis, evidence): the next decision is about how it fails now, e.g. a crashed run
        whose retry was then rate-limited is slowed down, not escalated for want of an action for crashes.

        Only an action that did not cure what it was for is learned as failing: an attempt failing in the
        same category again, unless the action is the retry, for which that says the outage lasts, not that
        retrying is wrong. An attempt failing in another category got past its incident's failure and met a
        new one (a retry after a database restart rejected by a login that expired meanwhile). Counted, an
        outage or a fault overlapping the retries taught the policy to stop trusting retries, and every
        later blip waited for a human's approval (the 30-minute chaos soak: retry_with_backoff for
        source_unavailable at 0 healed, 5 failed). The attempt still counts towards `max_attempts`."""
        assert incident.action is not None
        diagnosis = classify(evidence)
        claimed = self.store.claim(
            incident.incident_id,
            {"status": "running", "attempts": incident.attempts},
            status="open",
            kind=evidence.kind,
            category=diagnosis.category.value,
            confidence=diagnosis.confidence,
            rule_id=diagnosis.rule_id,
            explanation=diagnosis.explanation,
            evidence_json=json.dumps(evidence.as_dict(), default=str),
            updated_at=now,
        )
        if not claimed:
            return
        if diagnosis.category.value == incident.category and incident.action != WAIT_ACTION:
            self.store.record_outcome(incident.incident_id, incident.category, incident.action, False, now)
        refreshed = self.store.incident(incident.incident_id)
        assert refreshed is not None
        self._decide(refreshed, now)

    # 2. Quality events

    def _observe_quality_event(self, event: QualityEvent, now: float) -> None:
        occurred_at = _timestamp(event.observed_at)
        if event.kind == "freshness":
            if event.severity != "error":
                return
            evidence = Evidence(
                kind="freshness",
                asset_key=event.asset_key,
                run_id=None,
                check_metadata=dict(event.details),
                occurred_at=occurred_at,
            )
        else:
            if event.details.get("blocking") and event.severity == "error":
                return  # a failed blocking check also fails its run's step: handled with the run
            evidence = Evidence(
                kind="check_failure",
                asset_key=event.asset_key,
                run_id=event.details.get("run_id"),
                check_name=event.check_name,
                check_metadata=dict(event.details.get("metadata") or {}),
                occurred_at=occurred_at,
            )
        self._open(evidence, f"quality:{event.event_id}", now)

    # Incidents and decisions

    def _open(self, evidence: Evidence, dedup_key: str, now: float) -> None:
        """The incident is opened at the failure's own time (its evidence's `occurred_at`), so that a failure
        the sensor reads minutes late, or together with the run that already repaired it, still counts
        those minutes in its time to recover. Its deadline counts from now: the escalation deadline is the
        time the platform gets to heal, which starts when it learns of the failure."""
        diagnosis = classify(evidence)
        if (handling := self._being_handled(evidence.asset_key, diagnosis.category.value)) is not None:
            if handling.status == "escalated" and _repeats(handling, evidence):
                self._failed_again(handling, evidence, diagnosis, now)
            return
        incident = Incident(
            incident_id=self.store.new_incident_id(),
            dedup_key=dedup_key,
            opened_at=min(now, evidence.occurred_at or now),
            updated_at=now,
            kind=evidence.kind,
            asset_key=evidence.asset_key,
            source=self.graph.source_of(evidence.asset_key),
            run_id=evidence.run_id,
            category=diagnosis.category.value,
            confidence=diagnosis.confidence,
            rule_id=diagnosis.rule_id,
            explanation=diagnosis.explanation,
            evidence_json=json.dumps(evidence.as_dict(), default=str),
            deadline=now + self.policy.escalate_open_after_minutes * 60,
        )
        if self.store.add_incident(incident):
            self._decide(incident, now)

    def _being_handled(self, asset_key: str | None, category: str) -> Incident | None:
        """The asset's incident of this category that is not resolved (being healed, waiting for approval,
        escalated to a human), if any: another run failing the same way (a schedule's, a sensor's) is the
        same incident, not a second one with retries and alerts of its own. A resolved incident is over: a
        failure after it opens a new one."""
        if asset_key is None:
            return None
        return next(
            (
                incident
                for incident in self.store.incidents(statuses=OPEN_STATUSES)
                if incident.asset_key == asset_key and incident.category == category
            ),
            None,
        )

    def _failed_again(
        self, escalated: Incident, evidence: Evidence, diagnosis: Diagnosis, now: float
    ) -> None:
        """An escalated incident takes the latest failure joining it (its run, evidence, diagnosis and
        `updated_at`): the human working on it sees that it still fails, and how, after what they already
        repaired. Kept as it was, a second login expiry after the first was renewed looked like the old,
        handled one for 20 minutes (the chaos soak). A reminder is alerted: the router sends it only when
        the incident's escalation or last reminder is older than its `remind_every_minutes`, so a source
        failing every minute does not page every minute."""
        refreshed = self.store.claim(
            escalated.incident_id,
            {"status": "escalated"},
            kind=evidence.kind,
            run_id=evidence.run_id,
            confidence=diagnosis.confidence,
            rule_id=diagnosis.rule_id,
            explanation=diagnosis.explanation,
            evidence_json=json.dumps(evidence.as_dict(), default=str),
            updated_at=now,
        )
        if refreshed and (incident := self.store.incident(escalated.incident_id)) is not None:
            self.notify(HealingEvent("reminder", incident))

    def _decide(self, incident: Incident, now: float) -> None:
        decision = self.policy.decide(
            incident.category,
            incident.confidence,
            incident.rule_id,
            incident.kind,
            incident.attempts,
            self.store.outcome_counts(incident.category),
        )
        if decision.mode != "escalate" and not self._targets(incident):
            decision = replace(
                decision,
                action="escalate",
                mode="escalate",
                reason=f"{decision.reason}; but the failure names no asset to {decision.action} (nothing to "
                "run again: a run without a selection would materialize every asset)",
            )
        common = {
            "action": decision.action,
            "risk": decision.risk,
            "decision": decision.mode,
            "decided_by": f"policy: {decision.reason}",
            "updated_at": now,
        }
        if decision.mode == "auto":
            delay = self.policy.backoff.delay(incident.attempts + 1, self.rng)
            if decision.action == "rematerialize_upstream":
                delay = 0.0
            self.store.update_incident(
                incident.incident_id,
                status="healing",
                next_attempt_at=_failed_at(incident, now) + delay,
                **common,
            )
            kind = "incident"
        elif decision.mode == "propose":
            self.store.update_incident(incident.incident_id, status="proposed", **common)
            kind = "proposal"
        else:
            self.store.update_incident(
                incident.incident_id, status="escalated", outcome="escalated", **common
            )
            kind = "escalation"
        updated = self.store.incident(incident.incident_id)
        assert updated is not None
        self.notify(HealingEvent(kind, updated, decision))

    def _resolve(
        self, incident: Incident, now: float, recovered_at: float, outcome: str, *, learn: bool
    ) -> None:
        """`recovered_at`: when the run that repaired it ended; the time to recover runs from the failure's
        timestamp (`opened_at`) to then. An incident read after another daemon resolved it is left as it
        is: its resolution was recorded and announced once, by that daemon."""
        if incident.status not in OPEN_STATUSES:
            return
        resolved_now = self.store.claim(
            incident.incident_id,
            {"status": incident.status},
            status="resolved",
            outcome=outcome,
            resolved_at=recovered_at,
            time_to_recover_s=round(max(0.0, recovered_at - incident.opened_at), 3),
            updated_at=now,
        )
        if not resolved_now:
            return  # another daemon resolved it (or moved it on) since it was read: its outcome is recorded
        if learn and incident.action is not None:
            self.store.record_outcome(incident.incident_id, incident.category, incident.action, True, now)
        resolved = self.store.incident(incident.incident_id)
        assert resolved is not None
        self.notify(HealingEvent("resolution", resolved))

    def _escalate_overdue(self, now: float) -> None:
        for incident in self.store.incidents(statuses=("open", "healing", "proposed")):
            if incident.deadline is not None and now > incident.deadline:
                escalated_now = self.store.claim(
                    incident.incident_id,
                    {"status": incident.status},
                    status="escalated",
                    outcome="escalated: open past its deadline",
                    updated_at=now,
                )
                if not escalated_now:
                    continue
                escalated = self.store.incident(incident.incident_id)
                assert escalated is not None
                self.notify(HealingEvent("escalation", escalated))

    # 3. Due actions

    def _due_requests(self, now: float) -> list[dg.RunRequest]:
        requests = []
        waiting = self.store.incidents(statuses=("healing", "approved"))
        for incident in waiting:
            if incident.status == "healing" and (incident.next_attempt_at or 0) > now:
                continue
            if incident.source is not None and not self._breaker_allows(incident.source, now):
                continue
            if not self._claim_attempt(incident, now):
                continue
            companions = [c for c in self._companions(incident, waiting, now) if self._claim_attempt(c, now)]
            requests.append(self._run_request(incident, companions))
        return requests

    def _claim_attempt(self, incident: Incident, now: float) -> bool:
        """Another daemon reading the same ledger may have launched the incident's attempt since it was
        read (or this tick took it along with another's): one claim wins (the status and attempt it was
        read with), only the winner launches."""
        claimed = self.store.claim(
            incident.incident_id,
            {"status": incident.status, "attempts": incident.attempts},
            status="running",
            attempts=incident.attempts + 1,
            updated_at=now,
        )
        if claimed:
            self._adjust_parameters(incident, now)
        return claimed

    def _companions(self, incident: Incident, waiting: Sequence[Incident], now: float) -> list[Incident]:
        """The source's other incidents whose rerun falls due within a first backoff, retried in the same
        run as `incident`: apart, each waited for the source's one run slot behind the other's attempt (a
        30-minute chaos soak: 8 of 19 first attempts waited 19-57 s so; connections terminated under
        `customers` and `payments` at once, the `payments` attempt started 50 s after the `customers` one).
        Only reruns join (their run config is the source's overrides, no action of their own), and only a
        rerun's: an approved action runs as it was approved."""
        if incident.status != "healing" or incident.source is None or incident.action not in RERUN_ACTIONS:
            return []
        horizon = now + self.policy.backoff.base_seconds
        return [
            other
            for other in waiting
            if other.incident_id != incident.incident_id
            and other.status == "healing"
            and other.source == incident.source
            and other.action in RERUN_ACTIONS
            and (other.next_attempt_at or 0) <= horizon
        ]

    def _run_request(self, incident: Incident, companions: Sequence[Incident] = ()) -> dg.RunRequest:
        attempt = incident.attempts + 1
        targets = set().union(*(self._targets(i) for i in (incident, *companions)))
        repeated: dict[str, dict[str, Any]] = {}
        for each in (*companions, incident):
            for step, config in (each.evidence.get("op_config") or {}).items():
                repeated[step] = {**repeated.get(step, {}), **config}
        tags = {
            INCIDENT_TAG: incident.incident_id,
            ATTEMPT_TAG: str(attempt),
            ACTION_TAG: str(incident.action),
            PRIORITY_TAG: HEALING_PRIORITY,
        }
        if companions:
            tags[COMPANIONS_TAG] = ",".join(c.incident_id for c in companions)
        source = self._source_of_run(incident, targets)
        if source is not None:
            tags[SOURCE_TAG] = source
        return dg.RunRequest(
            run_key=f"healing:{incident.incident_id}:{attempt}",
            asset_selection=sorted(targets, key=lambda k: k.to_user_string()),
            run_config=self._run_config(targets, incident.action, repeated),
            tags=tags,
        )

    def _targets(self, incident: Incident) -> set[dg.AssetKey]:
        """What an attempt for `incident` materializes: the failed step's assets and what is downstream (a
        stale asset: the chain feeding it too)."""
        key = dg.AssetKey.from_user_string(incident.asset_key or "")
        if incident.action == "rematerialize_upstream":
            return self.graph.upstream([key]) | self.graph.downstream([key])
        failed = self.graph.assets_of_step(self._failed_step(incident)) or frozenset({key})
        return self.graph.downstream(failed)

    def _source_of_run(self, incident: Incident, targets: Iterable[dg.AssetKey]) -> str | None:
        """The incident's source, else the one source the run extracts from. A run over several sources
        (the upstream chain of a stale model) or none (models only) carries no tag: a tag holds one value,
        and its raw steps are still held to one at a time per source by the source pools."""
        if incident.source is not None:
            return incident.source
        sources = {source for key in targets if (source := self.graph.source_of(key)) is not None}
        return sources.pop() if len(sources) == 1 else None

    @staticmethod
    def _failed_step(incident: Incident) -> str | None:
        return incident.evidence.get("step_key")

    def _run_config(
        self, targets: Iterable[dg.AssetKey], action: str | None, repeated: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The failed run's own op config (`repeated`), with the healing parameters of now on top."""
        ops: dict[str, Any] = {}
        for key in targets:
            layer = key.path[0]
            if layer not in ("raw", "staged"):
                continue
            config: dict[str, Any] = dict(repeated.get(self.graph.asset_step[key], {}))
            batch = self.store.overrides(key.to_user_string()).get(BATCH_SCALE)
            if batch is not None:
                config[BATCH_SCALE] = batch
            rate = self.store.overrides(str(self.graph.source_of(key))).get(RATE_SCALE)
            if layer == "raw" and rate is not None:
                config[RATE_SCALE] = rate
            if layer == "staged" and action in ("evolve_schema", "quarantine_drift"):
                config[ON_DRIFT] = "evolve" if action == "evolve_schema" else "quarantine"
            if config:
                ops[self.graph.asset_step[key]] = {"config": config}
        return {"ops": ops} if ops else {}

    def _adjust_parameters(self, incident: Incident, now: float) -> None:
        """Before a `shrink_batch` / `slow_down` attempt: halve the override (floor MIN_SCALE)."""
        if incident.action == "shrink_batch" and incident.asset_key is not None:
            self._halve(incident.asset_key, BATCH_SCALE, now)
        elif incident.action == "slow_down" and incident.source is not None:
            self._halve(incident.source, RATE_SCALE, now)

    def _halve(self, scope: str, name: str, now: float) -> None:
        current = self.store.overrides(scope).get(name, 1.0)
        self.store.set_override(scope, name, max(MIN_SCALE, current / 2), 1.0, now)

    def _decay_overrides(self, scope: str) -> None:
        """After a successful run: an override moves halfway back to 1 every `healthy_runs_to_decay` runs,
        and is dropped once back above 0.95."""
        for row in self.store.override_rows():
            if row["scope"] != scope:
                continue
            healthy = row["healthy_runs"] + 1
            if healthy < self.policy.overrides.healthy_runs_to_decay:
                self.store.update_override(scope, row["name"], value=row["value"], healthy_runs=healthy)
                continue
            value = row["value"] + (1.0 - row["value"]) / 2
            if value > 0.95:
                self.store.delete_override(scope, row["name"])
            else:
                self.store.update_override(scope, row["name"], value=value, healthy_runs=0)

    # Circuit breakers

    def _breaker_failure(self, source: str, now: float) -> None:
        """One more consecutive failure of the source: the breaker opens at `failures_to_open`, and each
        half-open probe that fails opens it again for twice as long. A run failing while the breaker is
        open was under way when it opened (queued behind the source's slot, or launched half-open with the
        probe): counted, two such runs had doubled the REST source's cool-down to 480 s (the chaos soak)."""
        breaker = self.store.breaker(source)
        if breaker.state == "open":
            return
        failures = breaker.consecutive_failures + 1
        opens = breaker.state == "half_open" or failures >= self.policy.circuit_breaker.failures_to_open
        state = "open" if opens else breaker.state
        self.store.save_breaker(
            Breaker(source, state, failures, now if state != breaker.state else breaker.changed_at)
        )

    def _breaker_allows(self, source: str, now: float) -> bool:
        """Closed or half-open: yes. Open: no, until the cool-down has passed; then it goes half-open and
        this attempt probes the source (a failure opens it again, a success closes it). Half-open admits
        every attempt, as it admits the source's scheduled and sensed runs (`open_breaker_skip`): one run
        per source at a time (`dagster.yaml`) already keeps them from piling onto an unwell source, and
        refusing healing attempts there kept an incident waiting behind a probe that, failing for another
        reason, never settled the breaker."""
        breaker = self.store.breaker(source)
        if breaker.state == "open" and self._cooled(breaker, now):
            self.store.save_breaker(replace(breaker, state="half_open", changed_at=now))
        return self.store.breaker(source).state != "open"

    def _half_open_cooled_breakers(self, now: float) -> None:
        """An open breaker whose cool-down has passed goes half-open though no healing attempt probes it:
        the source's next scheduled or sensed run is the probe. Left open, a source whose incident was
        escalated (no healing attempt to probe with) was shut for good: its schedule and sensors skip while
        the breaker is open, so nothing ever tried again (the chaos soak: a 429 storm escalated at 5
        minutes, the REST source then never extracted for the remaining 35)."""
        for breaker in self.store.breakers():
            if breaker.state == "open" and self._cooled(breaker, now):
                self.store.save_breaker(replace(breaker, state="half_open", changed_at=now))

    def _cooled(self, breaker: Breaker, now: float) -> bool:
        return now - breaker.changed_at >= self.policy.circuit_breaker.cooldown(breaker.consecutive_failures)


def open_breaker_skip(store_path: StateLocation, source: str, meanwhile: str) -> dg.SkipReason | None:
    """The skip of a schedule or sensor tick that would launch a run against `source` while its circuit
    breaker is open (None when it is not); `meanwhile` says what waits."""
    if HealingStore(store_path).breaker(source).state != "open":
        return None
    return dg.SkipReason(f"Circuit breaker of source {source} is open (repeated failures): {meanwhile}")


SOURCE_HEALTH_CATEGORIES = frozenset({"transient_network", "source_unavailable", "timeout", "rate_limited"})
"""Failures that say the source itself is unwell, the only ones a source's circuit breaker counts: a
delivery refused for its bad rows or a drifted schema says nothing about the source's health, and opening
the breaker for it would hold back every delivery of the source, the good ones too. A rejected login is
escalated, not waited out: the breaker would keep the source shut for its cool-down after a human renewed
the credentials, while the schedule's next run (its failure joining the escalated incident meanwhile)
catches up at once (both seen in the chaos soak)."""
WAIT_ACTION = "retry_with_backoff"
"""The action that only waits for the cause to pass (`_attempt_failed`)."""
WILL_RETRY_TAG = "dagster/will_retry"
"""Dagster's tag on a failed run its run retries relaunch ("true") or not ("false")."""
APPROVAL_JOB_NAME = "apply_healing_action"
"""The job a human approves a proposal with: a run of it that fails (an unknown incident, a blank name)
tells the approver at once and touches no data, so it is no failure to heal: it is not observed."""
HEALING_PARAMETERS = (BATCH_SCALE, RATE_SCALE, ON_DRIFT)
"""Op config the engine sets afresh for each attempt, never copied from the failed run."""


def _repeated_op_config(run: dg.DagsterRun) -> dict[str, dict[str, Any]]:
    """The run's op config minus the healing parameters: what its retries must ask for again."""
    ops = (run.run_config or {}).get("ops") or {}
    repeated = {
        step: {
            name: value
            for name, value in (entry.get("config") or {}).items()
            if name not in HEALING_PARAMETERS
        }
        for step, entry in ops.items()
        if isinstance(entry, Mapping)
    }
    return {step: config for step, config in repeated.items() if config}


def attempt_ids(tags: Mapping[str, str]) -> list[str]:
    """The incidents a run with `tags` is a healing attempt for: its own, then its companions
    (`COMPANIONS_TAG`). Also what the chaos soak's post-mortem groups runs by (`bench/soak_timeline.py`)."""
    if INCIDENT_TAG not in tags:
        return []
    companions = [i for i in tags.get(COMPANIONS_TAG, "").split(",") if i]
    return [tags[INCIDENT_TAG], *companions]


def _failed_at(incident: Incident, now: float) -> float:
    """When the incident's latest failure happened (its evidence's own time; `now` when unknown): the backoff
    counts from there. Counted from when the sensor read it, the 10-s first retry was launched a median 24 s
    after the failure in a 30-minute chaos soak (a tick to read the failure, another after the backoff)."""
    occurred_at = incident.evidence.get("occurred_at")
    return min(now, float(occurred_at)) if occurred_at is not None else now


def _finished_runs(instance: dg.DagsterInstance, after: float) -> Sequence[Any]:
    return instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            updated_after=datetime.fromtimestamp(after, UTC) if after else None,
        ),
        order_by="update_timestamp",
        ascending=True,
        limit=500,
    )


def _relaunched_by_dagster(instance: dg.DagsterInstance, run: dg.DagsterRun, evidence: Evidence) -> bool:
    """Whether Dagster's own run retries (`dagster.yaml`: runs that did not fail in a step of their own)
    relaunch the failed `run`: its `dagster/will_retry` tag, which Dagster adds as it stores the failure.
    A restart of the code server interrupts a run's steps: it fails as an unexpected termination and is
    relaunched, though a step of it failed (interrupted); taken as a failure to heal, it had opened an
    incident whose retry ran beside the relaunch (a 30-minute chaos soak). Read before the tag is written,
    a crash is relaunched while the run's retries last."""
    will_retry = run.tags.get(WILL_RETRY_TAG)
    if will_retry is not None:
        return will_retry == "true"
    retried = int(run.tags.get("dagster/retry_number", "0"))
    return (
        evidence.kind == "run_crash"
        and instance.run_retries_enabled
        and retried < instance.run_retries_max_retries
    )


def _materialized(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {
        entry.dagster_event.asset_key
        for entry in entries
        if entry.dagster_event and entry.dagster_event.asset_key
    }


def _run_evidence(instance: dg.DagsterInstance, run: dg.DagsterRun, graph: HealingGraph) -> list[Evidence]:
    """One piece of evidence per failed step; a run that failed without a failed step (or with none whose
    error is on record) crashed: every failed run is some evidence, the first of which decides. A step that
    failed because a blocking check failed is that check's failure (`_failed_checks`): its name and
    metadata say what is wrong, and its asset which incident it is."""
    entries = instance.all_logs(
        run.run_id,
        of_type={
            dg.DagsterEventType.STEP_FAILURE,
            dg.DagsterEventType.ENGINE_EVENT,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        },
    )
    failures = [e for e in entries if e.dagster_event_type == dg.DagsterEventType.STEP_FAILURE]
    found: list[Evidence] = []
    for entry in failures:
        event = entry.dagster_event
        assert event is not None and event.step_failure_data is not None and event.step_key is not None
        keys = sorted(graph.assets_of_step(event.step_key), key=lambda k: k.to_user_string())
        error = event.step_failure_data.error
        if error is None:
            continue
        if error.cls_name == CHECK_FAILED_ERROR and (checks := _failed_checks(entries, run, entry)):
            found.extend(checks)
            continue
        evidence = evidence_from_error(
            error,
            kind="step_failure",
            asset_key=keys[0] if keys else None,
            run_id=run.run_id,
            step_key=event.step_key,
            occurred_at=entry.timestamp,
        )
        found.append(_with_executor_explanation(evidence, _engine_messages(entries, event.step_key)))
    return found or [_crash_evidence(instance, run, graph)]


def _repeats(incident: Incident, evidence: Evidence) -> bool:
    """Whether `evidence` is the incident's own failure again (its kind, and its check for a check's), not
    another failure of the asset in the same category, which joins it without taking its place: a
    warn-severity `mean_shift` had replaced the evidence of an escalated refused delivery, and reminded of
    it, though nothing about the delivery had changed (the chaos soak)."""
    return incident.kind == evidence.kind and incident.evidence.get("check_name") == evidence.check_name


CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
"""What Dagster raises in a step whose blocking asset check failed."""


def _failed_checks(entries: Sequence[Any], run: dg.DagsterRun, failure: Any) -> list[Evidence]:
    """The failed check evaluations of `failure`'s step, as check evidence at the step's failure time."""
    evaluations = [
        entry.dagster_event.event_specific_data
        for entry in entries
        if entry.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and entry.step_key == failure.step_key
    ]
    return [
        replace(
            evidence_from_check(evaluation, run.run_id),
            step_key=failure.step_key,
            occurred_at=failure.timestamp,
        )
        for evaluation in evaluations
        if not evaluation.passed
    ]


def _crash_evidence(instance: dg.DagsterInstance, run: dg.DagsterRun, graph: HealingGraph) -> Evidence:
    """A dead run worker leaves no failed step: Dagster writes the cause ("terminated by signal 9") as an
    engine event and fails the run. The step it was running is the last one started and never finished."""
    wanted = {
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.ENGINE_EVENT,
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
    }
    entries = instance.all_logs(run.run_id, of_type=wanted)
    events = [entry.dagster_event for entry in entries if entry.dagster_event]
    messages = [
        event.message or ""
        for event in events
        if event.event_type in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.ENGINE_EVENT)
    ]
    finished = {e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_SUCCESS}
    unfinished = [
        e.step_key
        for e in events
        if e.event_type == dg.DagsterEventType.STEP_START
        and e.step_key not in finished
        and graph.assets_of_step(e.step_key)
    ]
    step = unfinished[-1] if unfinished else None
    keys = sorted(
        graph.assets_of_step(step) if step else run.asset_selection or (), key=lambda k: k.to_user_string()
    )
    failed_at = [e.timestamp for e in entries if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE]
    return Evidence(
        kind="run_crash",
        asset_key=keys[0].to_user_string() if keys else None,
        run_id=run.run_id,
        step_key=step,
        errors=tuple(ErrorLink("RunFailure", m) for m in messages or ["run failed without a failed step"]),
        occurred_at=min(failed_at) if failed_at else None,
    )


STEP_PROCESS_CRASH = "ChildProcessCrashException"
"""What Dagster's multiprocess executor records as the error of a step whose process died without a Python
traceback: no message at all. Its cause ("child process for step X was terminated by signal 9 (SIGKILL)",
the out-of-memory killer's signature) is only in the executor's engine event for that step."""


def _engine_messages(entries: Sequence[Any], step_key: str) -> list[str]:
    return [
        entry.dagster_event.message or ""
        for entry in entries
        if entry.dagster_event_type == dg.DagsterEventType.ENGINE_EVENT
        and entry.dagster_event is not None
        and entry.dagster_event.step_key == step_key
    ]


def _with_executor_explanation(evidence: Evidence, engine_messages: Sequence[str]) -> Evidence:
    """A step whose process crashed, its silent `ChildProcessCrashException` given the words of the
    executor's engine events about that step, so the rules can read why it died (rule `step_process_killed`
    in failure_rules.yaml); other evidence as is."""
    explanation = " ".join(message for message in engine_messages if message)
    if not explanation:
        return evidence
    errors = tuple(
        ErrorLink(link.class_name, explanation)
        if link.class_name == STEP_PROCESS_CRASH and not link.message
        else link
        for link in evidence.errors
    )
    return replace(evidence, errors=errors)


def _timestamp(iso: str) -> float | None:
    """An ISO-8601 time as Unix seconds (a naive one read as UTC); None when it cannot be read."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
