"""How the chaos soak (`bench/soak.py`) scores and repairs: which incidents a fault is credited with
(`soak_measure.match`) and which faults the soak's operator repairs for an escalation
(`soak_operator.Operator`). Both decide the report's goals, and both were wrong in a 30-minute run before
these tests: a drift fault claimed its entity's later login failures, and a drift's escalation had the
operator renew an expired login no extraction had met yet. Pure functions over recorded faults and ledger
rows: no server is started."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT / "bench"), str(REPO_ROOT / "tests")]

from deployment import Deployment  # noqa: E402
from soak_faults import Fault  # noqa: E402
from soak_measure import RunLimits, match, stuck_runs  # noqa: E402
from soak_operator import Operator  # noqa: E402
from soak_timeline import healed_incidents, timeline_lines  # noqa: E402

T0 = 1_800_000_000.0


def incident(category: str, asset_key: str, source: str, opened_s: float, **changes: Any) -> dict[str, Any]:
    row = {
        "incident_id": f"{category}-{opened_s:.0f}",
        "category": category,
        "asset_key": asset_key,
        "source": source,
        "opened_at": T0 + opened_s,
        "updated_at": T0 + opened_s,
        "resolved_at": T0 + opened_s + 30,
        "status": "resolved",
        "decision": "auto",
        "approved_by": None,
        "evidence_json": "{}",
    }
    return {**row, **changes}


def fault(kind: str, expected: str, source: str | None, at_s: float, **changes: Any) -> Fault:
    return Fault(kind, at_s, expected, source, started_at=T0 + at_s, ended_at=T0 + at_s + 5, **changes)


def test_a_drift_fault_takes_its_entitys_drift_incidents_and_not_its_later_login_failures() -> None:
    drift = fault("schema_drift_added_column", "schema_drift", "shop_db", 0, asset="staged/shop_db/customers")
    login = fault("credentials_expired", "auth_permission", "shop_db", 10)
    drifted = incident("schema_drift", "raw/shop_db/customers", "shop_db", 20, status="escalated")
    rejected = incident("auth_permission", "raw/shop_db/customers", "shop_db", 30, status="escalated")

    matches, unmatched = match([drift, login], [drifted, rejected])

    assert unmatched == []
    by_kind = {m.fault.kind: m for m in matches}
    assert by_kind["schema_drift_added_column"].incidents == [drifted], "met in the raw layer all the same"
    assert by_kind["credentials_expired"].incidents == [rejected]
    assert by_kind["credentials_expired"].escalated_as == {"auth_permission"}


def test_a_healable_fault_healed_through_its_incident_recovers_from_the_faults_start() -> None:
    burst = fault("rest_5xx_burst", "heal", "shop_api", 100)
    retried = incident("source_unavailable", "raw/shop_api/products", "shop_api", 110)

    (scored,), _ = match([burst], [retried])

    assert scored.outcome == "healed"
    assert scored.recover_s == 40, "resolved 30 s after it opened, 10 s after the fault began"


def test_an_incident_near_several_faults_is_the_ones_that_can_cause_its_category() -> None:
    """The landing disk fills, then connections to the shop database are terminated: the database's
    extraction failing on the full disk is the disk's, though the termination is later and of its source."""
    disk = fault("landing_disk_full", "heal", None, 0)
    terminated = fault("pg_source_connections_terminated", "heal", "shop_db", 10)
    full = incident("resource_exhausted", "raw/shop_db/customers", "shop_db", 20)
    dropped = incident("source_unavailable", "raw/shop_db/payments", "shop_db", 21)
    killed = incident("interrupted", "raw/shop_db/orders", "shop_db", 22)

    matches, unmatched = match([disk, terminated], [full, dropped, killed])

    assert unmatched == []
    assert [m.incidents for m in matches] == [[full], [dropped, killed]], (
        "a category neither causes goes to the latest fault of its source, as before"
    )


def test_a_refused_files_incident_is_its_faults_however_late_the_file_is_met() -> None:
    refused = fault("malformed_delivery", "data_quality", "shop", 60, marker="orders_soak_refused_7.csv")
    bad_row = fault("malformed_row", "heal", "shop", 200)
    late = incident(
        "data_quality", "staged/shop/orders", "shop", 370, status="escalated",
        evidence_json='{"errors": [{"message": "3 of 3 rows (orders/orders_soak_refused_7.csv)"}]}',
    )  # fmt: skip

    matches, _ = match([refused, bad_row], [late])

    assert [m.incidents for m in matches] == [[late], []], "not the malformed row's, though it came closer"


def test_a_volume_verdict_is_no_nearby_faults_escalation() -> None:
    """A check flagging the catch-up run after an expired login is the check's own (a false positive, shown
    as matched to no fault), not the login's escalation."""
    login = fault("credentials_expired", "auth_permission", "shop_db", 0, hit=True)
    flagged = incident("volume_anomaly", "staged/shop_db/customers", "shop_db", 60, decision="escalate")

    (scored,), unmatched = match([login], [flagged])

    assert scored.incidents == [] and unmatched == [flagged]


def test_the_operator_repairs_only_the_faults_the_escalations_category_names() -> None:
    repaired: list[str] = []

    def repair(what: str) -> Callable[[], str]:
        def done() -> str:
            repaired.append(what)
            return f"{what} repaired"

        return done

    login = fault("credentials_expired", "auth_permission", "shop_db", 0, repair=repair("login"))
    refused = fault("malformed_delivery", "data_quality", "shop", 0, repair=repair("file"))
    operator = Operator(cast(Deployment, None), [login, refused])

    drift = incident("schema_drift", "raw/shop_db/customers", "shop_db", 20, status="escalated")
    assert operator._causes(drift) == [], "a drift names no login to renew"

    expired = incident("auth_permission", "raw/shop_db/customers", "shop_db", 20, status="escalated")
    for cause in operator._causes(expired):
        operator.repair(cause)
    assert repaired == ["login"]
    assert login.repaired == "login repaired" and not refused.repaired


class RecordedRuns:
    """A deployment's GraphQL answers for `stuck_runs`: the runs, and the timestamps of each run's events."""

    def __init__(self, runs: list[dict[str, Any]], events: dict[str, list[float]]) -> None:
        self.runs, self.events = runs, events
        self.server = self

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        if variables is None:
            return {"runsOrError": {"results": self.runs}}
        stamps = self.events[variables["runId"]]
        return {"logsForRun": {"events": [{"timestamp": str(int(t * 1000))} for t in stamps]}}


def run(run_id: str, status: str, created_s: float, **tags: str) -> dict[str, Any]:
    return {
        "runId": run_id,
        "status": status,
        "creationTime": T0 + created_s,
        "jobName": "ingestion",
        "tags": [{"key": k.replace("_", "/", 1), "value": v} for k, v in tags.items()],
    }


def test_a_run_is_stuck_when_it_makes_no_progress_not_when_it_waits_its_turn() -> None:
    """Started runs progress while they log events; a queued run waits its turn while a run in progress holds
    its source's slot (`deploy/dagster.yaml`), and is stuck when none does. A young run is never stuck."""
    now_s = 600.0
    runs = [
        run("working", "STARTED", 100, platform_source="shop_db"),
        run("behind-working", "QUEUED", 200, platform_source="shop_db"),
        run("silent", "STARTED", 100, platform_source="shop_api"),
        run("behind-silent", "QUEUED", 150, platform_source="shop_api"),
        run("forgotten", "QUEUED", 300, platform_source="shop"),
        run("young", "QUEUED", 550, platform_source="shop"),
        run("done", "SUCCESS", 0, platform_source="shop"),
    ]
    events = {"working": [T0 + 110, T0 + 590], "silent": [T0 + 110, T0 + 300]}
    recorded = cast(Deployment, RecordedRuns(runs, events))

    stuck = stuck_runs(recorded, T0 + now_s, RunLimits.deployed())

    assert [(r["run_id"], r["age_s"]) for r in stuck] == [("silent", 500), ("forgotten", 300)]
    assert stuck[0]["tags"] == {"platform/source": "shop_api"}


def test_the_deployed_queue_limits_hold_a_healing_run_behind_two_others() -> None:
    limits = RunLimits.deployed()
    healing = {"healing/action": "retry_with_backoff"}
    assert limits.holding({**healing, "platform/source": "a"}, [healing, healing])
    assert not limits.holding({**healing, "platform/source": "a"}, [healing, {"platform/source": "b"}])
    assert limits.holding({}, [{}] * limits.max_concurrent)


def test_the_time_to_recover_is_split_at_the_first_attempt_each_incident_of_a_shared_run_counted() -> None:
    def run(created_s: float, started_s: float, ended_s: float, **tags: str) -> dict[str, Any]:
        return {
            "creationTime": T0 + created_s,
            "startTime": T0 + started_s,
            "endTime": T0 + ended_s,
            "tags": tags,
        }

    healed = {"outcome": "healed by run r", "time_to_recover_s": 40.0}
    ledger = [
        incident("transient_network", "raw/shop/a", "shop", 0, **healed),
        incident("transient_network", "raw/shop/b", "shop", 1, **healed),
        incident("schema_drift", "staged/shop/a", "shop", 2, decision="approved", **healed),
        incident(
            "transient_network", "raw/api/p", "api", 3, outcome="materialized by run s", time_to_recover_s=9.0
        ),
    ]
    runs = [
        run(14, 22, 35, **{"healing/incident_id": ledger[0]["incident_id"],
                           "healing/companion_incident_ids": ledger[1]["incident_id"]}),
        run(50, 80, 90, **{"healing/incident_id": ledger[0]["incident_id"]}),
        run(5, 6, 7, **{"platform/source": "shop"}),
    ]  # fmt: skip
    by_id = {h.incident_id: h for h in healed_incidents(runs, ledger)}

    assert set(by_id) == {ledger[0]["incident_id"], ledger[1]["incident_id"], ledger[3]["incident_id"]}, (
        "a human's approval is not an automatic healing"
    )
    first, companion, other = (by_id[ledger[i]["incident_id"]] for i in (0, 1, 3))
    assert (first.attempts, first.to_first_attempt_s, first.first_attempt_queued_s) == (2, 14.0, 8.0)
    assert first.first_attempt_ran_s == 13.0 and first.shared_first_attempt
    assert (companion.attempts, companion.to_first_attempt_s, companion.shared_first_attempt) == (
        1,
        13.0,
        True,
    )
    assert (other.attempts, other.to_first_attempt_s, other.by_another_run) == (0, None, True)
    lines = timeline_lines(list(by_id.values()))
    assert "| failure -> first attempt created (ticks, backoff) | 14 s | 13-14 s | 2 |" in lines
    assert lines[-1].startswith("Attempts per incident: 0 attempts: 1, 1 attempt: 1, 2 attempts: 1;")
    assert "waited more than 20 s to start: 0" in lines[-1]
