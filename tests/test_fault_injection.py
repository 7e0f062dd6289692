"""Fault-injection scenarios: each injects one real fault into a real source (a loopback HTTP server, a
real PostgreSQL, files), materializes through Dagster, lets the healing engine diagnose and act, and
asserts the category, the action, the outcome and the data (every source key staged once). Each records a
scoreboard row, printed at the end of the session (`./dev scoreboard` runs only these)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from healing_harness import HealingSlice, ScoreboardRow, key_counts, slice_for
from rest_test_server import PAGE_SIZE, Recorded, Reply, ScriptedServer, items, json_reply, paged_items

from sensors.healing import ACTION_TAG

pytestmark = pytest.mark.faults

RECORDS = items(23)
KEYS = {record["id"] for record in RECORDS}
STAGED_ITEMS = dg.AssetKey(["staged", "api", "items"])


def rest_source(base_url: str, **connection: Any) -> dict[str, Any]:
    return {
        "source": "api",
        "connection": {
            "kind": "rest",
            "base_url": base_url,
            "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 1},
            **connection,
        },
        "entities": {
            "items": {
                "endpoint": {
                    "path": "/items",
                    "record_path": "data",
                    "pagination": {"kind": "page_number", "page_param": "page", "start": 1},
                },
                "primary_key": ["id"],
                "columns": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "updated_at": {"type": "timestamp"},
                },
            }
        },
    }


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


def record(scoreboard: list, name: str, healable: bool, platform: HealingSlice) -> ScoreboardRow:
    """The scenario's scoreboard row from the ledger and the staged table."""
    incidents = platform.incidents()
    first = incidents[0] if incidents else None
    rows = platform.staged_rows("items", "id") if platform.results[-1].success else []
    lost, duplicated = key_counts(rows, KEYS) if rows else (len(KEYS), 0)
    outcome = "open"
    if first is not None and first.status == "resolved":
        outcome = "healed"
    elif first is not None and first.status == "escalated":
        outcome = "escalated"
    row = ScoreboardRow(
        scenario=name,
        healable=healable,
        category=first.category if first else "-",
        action=str(first.action) if first else "-",
        outcome=outcome,
        seconds_to_recover=first.time_to_recover_s if first else None,
        rows_lost=lost if healable else 0,
        rows_duplicated=duplicated,
    )
    scoreboard.append(row)
    return row


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
    row = record(scoreboard, "api_429_storm", True, platform)
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
    record(scoreboard, "wrong_credentials", False, platform)
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
    record(scoreboard, "configuration_error", False, platform)
