"""Fault-injection scenarios: each injects one real fault into a real source (a loopback HTTP server, a
real PostgreSQL, files), materializes through Dagster, lets the healing engine diagnose and act, and
asserts the category, the action, the outcome and the data (every source key staged once). Each records a
scoreboard row, printed at the end of the session (`./dev scoreboard` runs only these)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from fault_api import KEYS, RECORDS, record, rest_source
from healing_harness import slice_for
from rest_test_server import PAGE_SIZE, Recorded, Reply, ScriptedServer, json_reply, paged_items

from sensors.healing.engine import ACTION_TAG

pytestmark = pytest.mark.faults


class FirstRequestsFail:
    """Serves `RECORDS` page by page, except that the first `count` requests get `reply`."""

    def __init__(self, count: int, reply: Reply) -> None:
        self.serve = paged_items(RECORDS, "page_number", PAGE_SIZE)
        self.left, self.reply = count, reply
        self.lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        with self.lock:
            if self.left > 0:
                self.left -= 1
                return self.reply
        return self.serve(request)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def test_api_429_storm_with_retry_after_slows_down_and_heals(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list
) -> None:
    storm = Reply(429, b'{"error": "slow down"}', {"Retry-After": "1", "Content-Type": "application/json"})
    with ScriptedServer(FirstRequestsFail(5, storm)) as server:
        platform = slice_for(tmp_path, instance, rest_source(server.base_url))
        assert not platform.materialize().success, "three 429s exhaust the client's retries"
        launched = platform.heal()
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.action) == (
        "rate_limited",
        "rate_limited",
        "slow_down",
    )
    assert incident.status == "resolved" and incident.attempts == 1
    assert [request.tags[ACTION_TAG] for request in launched] == ["slow_down"]
    assert launched[0].run_config["ops"]["raw__api__items"]["config"]["rate_scale"] == 0.5
    assert platform.store.overrides("api") == {"rate_scale": 0.5}, "the slow-down stays until it decays"
    row = record(scoreboard, "api_429_storm", True, platform, KEYS)
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed", 0, 0)
    assert [event.kind for event in platform.events] == ["incident", "resolution"]


def test_wrong_credentials_are_escalated_not_retried(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAULT_API_TOKEN", "wrong-token")
    with ScriptedServer(lambda request: json_reply({"error": "invalid token"}, 401)) as server:
        source = rest_source(server.base_url, auth={"kind": "bearer", "token": "${FAULT_API_TOKEN}"})
        platform = slice_for(tmp_path, instance, source)
        assert not platform.materialize().success
        launched = platform.heal()
        requests_seen = len(server.requests)
    assert launched == [], "no run is launched against a source that rejects our credentials"
    assert requests_seen == 1, "a 401 is never retried"
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.status) == (
        "auth_permission",
        "auth_rejected",
        "escalated",
    )
    assert "wrong-token" not in incident.evidence_json
    record(scoreboard, "wrong_credentials", False, platform, KEYS)
    assert [event.kind for event in platform.events] == ["escalation"]


def test_configuration_error_is_escalated_not_retried(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAULT_UNSET_TOKEN", raising=False)
    with ScriptedServer(paged_items(RECORDS, "page_number")) as server:
        source = rest_source(server.base_url, auth={"kind": "bearer", "token": "${FAULT_UNSET_TOKEN}"})
        platform = slice_for(tmp_path, instance, source)
        assert not platform.materialize().success
        assert platform.heal() == []
        assert server.requests == []
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.status) == (
        "configuration_error",
        "missing_secret",
        "escalated",
    )
    record(scoreboard, "configuration_error", False, platform, KEYS)
