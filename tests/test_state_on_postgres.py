"""The platform's own state in the Dagster instance's PostgreSQL (issue 22): the healing ledger, breakers,
overrides, alert delivery state and quality events leave the VM's disk when the deployment names its
instance database, and two daemons sharing that ledger act on one failure once.

Real parts: the session's PostgreSQL server, real failed and healing materializations against a REST API on
loopback, the real healing engine ticking in two threads as two daemons would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import sqlalchemy as sa
from fault_api import KEYS, MAX_ATTEMPTS, RECORDS, rest_source
from healing_harness import slice_for
from rest_test_server import PAGE_SIZE, Recorded, Reply, ScriptedServer, json_reply, paged_items

from resources.environment import PlatformSettings
from resources.state.healing_store import HealingStore
from resources.state.quality_events import QualityEvent, QualityEventTable, quality_event_store
from sensors.healing.engine import HealingCursor
from sensors.observability.health import incident_counts

T = TypeVar("T")


def test_the_deployments_instance_database_holds_the_state_its_password_a_reference() -> None:
    deployed = PlatformSettings.from_env(
        {
            "DAGSTER_PG_HOST": "db.internal",
            "DAGSTER_PG_PORT": "6432",
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": "s3cret",
            "DAGSTER_PG_DB": "dagster",
        }
    )
    url = "postgresql+psycopg2://dagster:${DAGSTER_PG_PASSWORD}@db.internal:6432/dagster"
    assert deployed.healing_store == deployed.quality_events == url
    assert "s3cret" not in repr(deployed)
    local = PlatformSettings.from_env({"PLATFORM_DATA_DIR": "/srv/data"})
    assert local.healing_store == Path("/srv/data/ops/healing.sqlite")
    assert local.quality_events == Path("/srv/data/ops/quality_events.jsonl")


class FailsUntilReleased:
    """Serves `RECORDS` by page number; every request fails with a 503 until `released`."""

    def __init__(self) -> None:
        self.serve = paged_items(RECORDS, "page_number", PAGE_SIZE)
        self.released = False

    def __call__(self, request: Recorded) -> Reply:
        if not self.released:
            return json_reply({"error": "down for maintenance"}, 503)
        return self.serve(request)


def _together(*calls: Callable[[], T]) -> list[T]:
    """Run the calls in threads started at one barrier, as two daemons ticking at the same moment."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    raised: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as error:
            raised.append(error)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if raised:
        raise raised[0]
    return [result for result in results if result is not None]


def test_two_daemons_sharing_the_ledger_on_postgres_act_on_one_failure_once(
    tmp_path: Path, postgres_database: str
) -> None:
    handler = FailsUntilReleased()
    with dg.instance_for_test() as instance, ScriptedServer(handler) as server:
        platform = slice_for(tmp_path, instance, rest_source(server.base_url))
        platform.store = HealingStore(postgres_database)
        assert not platform.materialize().success, f"{MAX_ATTEMPTS} 503s exhaust the client's retries"
        daemons = [platform.healer(), platform.healer()]
        cursors = [HealingCursor(), HealingCursor()]

        def tick(index: int) -> Callable[[], list[dg.RunRequest]]:
            def run() -> list[dg.RunRequest]:
                requests, cursors[index] = daemons[index].tick(instance, cursors[index])
                return requests

            return run

        launched: list[dg.RunRequest] = []
        for _ in range(4):  # the first ticks open the incident, a later one launches once the backoff passed
            time.sleep(0.06)
            launched += [request for requests in _together(tick(0), tick(1)) for request in requests]
        assert len(launched) == 1, "both daemons saw the incident due; one claimed it"
        (incident,) = platform.store.incidents()
        assert (incident.status, incident.attempts, incident.category) == ("running", 1, "source_unavailable")
        assert incident_counts(postgres_database) == {"open": 1, "escalated": 0}

        (request,) = launched
        still_down = platform.materialize(
            list(request.asset_selection or ()), run_config=request.run_config, tags=request.tags
        )
        assert not still_down.success
        relaunched = tick(0)()
        relaunched += tick(1)()  # reads the failed attempt its peer has learned from and decided on
        assert platform.store.outcome_counts("source_unavailable") == {}, "the same outage: nothing learned"
        assert platform.store.breaker("api").consecutive_failures == 2, "each failed run counted once"
        decisions = [event.kind for event in platform.events]
        assert decisions == ["incident", "incident"], "opened, then the failed attempt decided on once"

        handler.released = True
        for _ in range(4):  # past the next, longer backoff (unless one of the ticks above launched it)
            time.sleep(0.06)
            relaunched += [request for requests in _together(tick(0), tick(1)) for request in requests]
        (request,) = relaunched
        healed = platform.materialize(
            list(request.asset_selection or ()), run_config=request.run_config, tags=request.tags
        )
        assert healed.success
        tick(0)()
        tick(1)()  # reads the incident its peer resolved a moment ago

    (resolved,) = platform.store.incidents()
    assert resolved.status == "resolved" and resolved.time_to_recover_s is not None
    resolutions = [event for event in platform.events if event.kind == "resolution"]
    assert len(resolutions) == 1, "one daemon resolved it and said so; the other saw it resolved"
    assert {int(row[0]) for row in platform.staged_rows("items", "id")} == KEYS
    with sa.create_engine(postgres_database).connect() as connection:
        tables = set(sa.inspect(connection).get_table_names(schema="platform_ops"))
        outcomes = connection.execute(sa.text("SELECT count(*) FROM platform_ops.outcomes")).scalar()
    assert {"incidents", "outcomes", "breakers", "overrides"} <= tables
    assert outcomes == 1, "the success was learned once (a retry meeting the same outage is not learned)"
    assert incident_counts(postgres_database) == {"open": 0, "escalated": 0}


def _event(event_id: str, observed_at: datetime) -> QualityEvent:
    return QualityEvent(
        event_id, "check", "staged/shop/orders", "schema_contract", "error", observed_at.isoformat()
    )


@pytest.fixture
def events_table(postgres_database: str) -> Iterator[QualityEventTable]:
    store = quality_event_store(postgres_database)
    assert isinstance(store, QualityEventTable)
    yield store


def test_quality_events_in_postgres_are_stored_once_read_by_position_and_expire(
    events_table: QualityEventTable, postgres_database: str
) -> None:
    now = datetime.now(UTC)
    old, first, second = _event("old", now - timedelta(days=100)), _event("a", now), _event("b", now)
    other_daemon = QualityEventTable(postgres_database)
    stored = _together(lambda: events_table.append([old, first]), lambda: other_daemon.append([old, first]))
    assert sorted(event.event_id for events in stored for event in events) == ["a", "old"], "each once"
    events, position = events_table.read_new(None)
    assert [event.event_id for event in events] == ["old", "a"]
    assert other_daemon.append([first, second]) == [second]
    more, position = events_table.read_new(position)
    assert more[-1] == second and {event.event_id for event in more} <= {"old", "a", "b"}
    assert events_table.rotate_if_older_than(90, now)
    assert [event.event_id for event in events_table.read()] == ["a", "b"]
    assert events_table.read_new(position)[0][-1:] == [second], "a position survives the retention"
