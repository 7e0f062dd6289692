"""The quality-events sensor against a real Dagster instance: real materializations with failing checks,
materializations older than a freshness policy, ticks with and without the saved cursor.

No `from __future__ import annotations`: Dagster reads the config annotation of the test asset at runtime."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData

from platform_assets.definitions import build_definitions
from resources.environment import PlatformSettings
from resources.state.quality_events import QualityEvent, QualityEventStore
from sensors.healing.engine import HealingCursor
from sensors.healing.quality_events import SENSOR_NAME, build_quality_events_sensor, freshness_state

SAVED = object()
"""Tick with the cursor saved by the previous tick."""
HOURLY = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=60), warn_window=timedelta(minutes=30))


class Outcome(dg.Config):
    passed: bool = True
    rows: int = 10


@dg.asset(
    freshness_policy=HOURLY,
    check_specs=[
        dg.AssetCheckSpec("has_rows", asset="orders"),
        dg.AssetCheckSpec("total_not_negative", asset="orders"),
    ],
)
def orders(config: Outcome) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(
        check_name="has_rows",
        passed=config.passed,
        metadata={"rows": config.rows},
        description="orders has at least one row",
    )
    yield dg.AssetCheckResult(
        check_name="total_not_negative",
        passed=config.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"total": -3.5 if not config.passed else 3.5},
    )


@dg.asset(freshness_policy=HOURLY)
def customers() -> None:
    return None


@dataclass
class Harness:
    instance: dg.DagsterInstance
    events_path: Path
    cursor: str | None = None

    def definitions(self) -> dg.Definitions:
        """Built afresh on every tick, as a restarted code server would."""
        return dg.Definitions(
            assets=[orders, customers], sensors=[build_quality_events_sensor(self.events_path)]
        )

    def tick(self, cursor: str | object | None = SAVED) -> list[QualityEvent]:
        """One sensor tick (with the saved cursor unless one is given); returns the events it appended."""
        definitions = self.definitions()
        sensor = definitions.resolve_sensor_def(SENSOR_NAME)
        before = len(self.recorded())
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor if cursor is SAVED else cursor,  # type: ignore[arg-type]
            definitions=definitions,
        )
        result = sensor.evaluate_tick(context)
        assert result.run_requests == []
        self.cursor = result.cursor
        return self.recorded()[before:]

    def recorded(self) -> list[QualityEvent]:
        return QualityEventStore(self.events_path).read()

    def materialize_orders(self, passed: bool, rows: int = 0) -> None:
        config = {"ops": {"orders": {"config": {"passed": passed, "rows": rows}}}}
        result = dg.materialize([orders], instance=self.instance, run_config=config)
        assert result.success

    def backdated_materialization(self, key: str, age_seconds: float) -> None:
        """A materialization recorded `age_seconds` ago (as if the asset last ran then): the event log
        entry carries that timestamp, which is what freshness is measured from."""
        self.instance.report_dagster_event(
            DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name="",
                event_specific_data=StepMaterializationData(dg.AssetMaterialization(key)),
            ),
            run_id="",
            timestamp=time.time() - age_seconds,
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with dg.instance_for_test() as instance:
        yield Harness(instance, tmp_path / "ops" / "quality_events.jsonl")


def test_a_failed_check_evaluation_is_recorded_once(harness: Harness) -> None:
    assert harness.tick() == []  # nothing has run yet: no events, but a cursor
    assert harness.cursor is not None

    harness.materialize_orders(passed=True, rows=10)
    assert harness.tick() == []  # passing evaluations are not quality events

    harness.materialize_orders(passed=False, rows=0)
    events = harness.tick()
    assert sorted((e.kind, e.asset_key, e.check_name, e.severity) for e in events) == [
        ("check", "orders", "has_rows", "error"),
        ("check", "orders", "total_not_negative", "warn"),
    ]
    has_rows = next(e for e in events if e.check_name == "has_rows")
    assert has_rows.details["metadata"] == {"rows": 0}
    assert has_rows.details["description"] == "orders has at least one row"
    assert has_rows.details["run_id"]
    assert has_rows.observed_at.endswith("+00:00")

    assert harness.tick() == []  # the next tick: nothing twice
    assert harness.tick() == []

    harness.materialize_orders(passed=False, rows=0)
    harness.materialize_orders(passed=False, rows=0)
    again = harness.tick()
    assert len([e for e in again if e.check_name == "has_rows"]) == 2  # one per failed evaluation
    assert len({e.event_id for e in harness.recorded()}) == len(harness.recorded()) == 6

    # The file is one JSON object a line, readable without this module.
    lines = harness.events_path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["check"] * 6


def test_restart_with_the_saved_cursor_records_nothing_twice(harness: Harness) -> None:
    harness.tick()
    harness.materialize_orders(passed=False)
    assert len(harness.tick()) == 2
    saved = harness.cursor

    # A new sensor object (restarted code server) resumes from the cursor the daemon kept.
    assert harness.tick(cursor=saved) == []
    harness.materialize_orders(passed=False)
    assert len(harness.tick(cursor=saved)) == 2

    # The cursor was lost (or the tick died after writing): the first tick without one reports what
    # fails now, which is already in the file, so nothing is appended.
    assert harness.tick(cursor=None) == []
    assert len(harness.recorded()) == 4


def test_a_first_tick_reports_what_fails_now_not_the_history(harness: Harness) -> None:
    for _ in range(2):
        harness.materialize_orders(passed=False)
    first = harness.tick(cursor=None)  # two failed evaluations per check: only the latest is reported
    assert sorted(e.check_name for e in first) == ["has_rows", "total_not_negative"]

    harness.materialize_orders(passed=True, rows=3)
    assert harness.tick(cursor=None) == []  # the latest evaluations pass: nothing fails now


def test_an_asset_going_stale_is_recorded_once_per_transition(harness: Harness) -> None:
    harness.backdated_materialization("orders", age_seconds=2 * 3600)  # older than its 60-minute window
    events = harness.tick()
    assert [(e.kind, e.asset_key, e.check_name, e.severity) for e in events] == [
        ("freshness", "orders", None, "error")
    ]
    details = events[0].details
    assert details["state"] == "FAIL"
    assert details["policy"] == {"kind": "time_window", "fail_window_minutes": 60, "warn_window_minutes": 30}
    assert 119 <= details["lag_minutes"] <= 121
    stale_since = datetime.fromisoformat(details["stale_since"])
    last = datetime.fromisoformat(details["last_materialized_at"])
    assert stale_since - last == timedelta(minutes=60)
    # customers was never materialized: its state is UNKNOWN (as in Dagster), not an event.
    assert json.loads(harness.cursor)["freshness"] == {"customers": "UNKNOWN", "orders": "FAIL"}

    assert harness.tick() == []  # still stale: not one event per tick
    assert harness.tick() == []

    harness.materialize_orders(passed=True, rows=5)  # a fresh materialization re-arms it
    assert harness.tick() == []
    assert json.loads(harness.cursor)["freshness"]["orders"] == "PASS"

    harness.backdated_materialization("orders", age_seconds=45 * 60)  # past the warn window only
    warned = harness.tick()
    assert [(e.asset_key, e.severity, e.details["state"]) for e in warned] == [("orders", "warn", "WARN")]

    harness.backdated_materialization("orders", age_seconds=3 * 3600)
    failed = harness.tick()
    assert [(e.asset_key, e.severity, e.details["previous_state"]) for e in failed] == [
        ("orders", "error", "WARN")
    ]
    assert harness.tick() == []

    # Restart without a cursor: the asset is still stale on the same materialization: same event id.
    assert harness.tick(cursor=None) == []
    assert len(harness.recorded()) == 3


def test_freshness_state_follows_dagsters_time_window_semantics() -> None:
    now = 1_800_000_000.0
    assert freshness_state(HOURLY, None, now) == "UNKNOWN"
    assert freshness_state(HOURLY, now - 29 * 60, now) == "PASS"
    assert freshness_state(HOURLY, now - 30 * 60, now) == "WARN"
    assert freshness_state(HOURLY, now - 60 * 60, now) == "FAIL"
    daily_at_9 = dg.FreshnessPolicy.cron(deadline_cron="0 9 * * *", lower_bound_delta=timedelta(hours=1))
    nine = 1_800_000_000 - 1_800_000_000 % 86400 + 9 * 3600  # 09:00 UTC of that day
    assert freshness_state(daily_at_9, nine - 1800, nine + 60) == "PASS"  # ran 08:30, deadline 09:00
    assert freshness_state(daily_at_9, nine - 7200, nine + 60) == "FAIL"  # ran 07:00: before the window


def test_explicit_policies_and_checks_limit_what_is_watched(harness: Harness) -> None:
    harness.backdated_materialization("customers", age_seconds=2 * 3600)
    harness.materialize_orders(passed=False)
    sensor = build_quality_events_sensor(
        harness.events_path,
        freshness_policies={dg.AssetKey("customers"): HOURLY},
        check_keys=[dg.AssetCheckKey(dg.AssetKey("orders"), "has_rows")],
    )
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=harness.instance))
    assert result.cursor
    assert sorted((e.kind, e.asset_key, e.check_name) for e in harness.recorded()) == [
        ("check", "orders", "has_rows"),
        ("freshness", "customers", None),
    ]


def test_a_line_cut_short_by_a_crash_is_skipped_and_ended(tmp_path: Path) -> None:
    store = QualityEventStore(tmp_path / "events.jsonl")
    event = QualityEvent("check:a:c:1", "check", "a", "c", "error", "2026-11-23T00:00:00+00:00", {})
    store.append([event])
    with store.path.open("a") as file:
        file.write('{"event_id": "check:a:c:2", "ki')  # torn append
    other = QualityEvent("check:a:c:3", "check", "a", "c", "warn", "2026-11-23T00:01:00+00:00", {"x": 1})
    assert store.append([event, other]) == [other]
    assert store.read() == [event, other]


def test_the_platform_registers_the_sensor_running_and_writing_under_the_data_dir(
    tmp_path: Path, dbt_manifest: Path
) -> None:
    settings = PlatformSettings.local(tmp_path)
    definitions = build_definitions(settings)
    sensor = definitions.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert settings.quality_events == settings.data_dir / "ops" / "quality_events.jsonl"
    assert str(settings.data_dir / "ops" / "quality_events.jsonl") in (sensor.description or "")

    # A tick on a fresh instance watches every policy of the code location (all UNKNOWN: nothing ran).
    graph = definitions.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=definitions))
    watched = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).freshness_policy}
    assert {"staged/shop/orders", "fct_daily_revenue"} <= watched
    assert json.loads(result.cursor)["freshness"] == dict.fromkeys(watched, "UNKNOWN")
    assert not (settings.data_dir / "ops" / "quality_events.jsonl").exists()


def test_on_the_platform_a_duplicated_key_delivery_becomes_a_schema_contract_event(local_platform) -> None:
    """The real ingestion of the demo shop: after a delivery with a duplicated key, exactly the check
    evaluations that failed in that run are recorded, the blocking schema contract among them."""
    events_path = local_platform.settings.quality_events
    sensor = local_platform.definitions.resolve_sensor_def(SENSOR_NAME)

    def tick(cursor: str | None) -> str:
        context = dg.build_sensor_context(
            instance=local_platform.instance, cursor=cursor, definitions=local_platform.definitions
        )
        return sensor.evaluate_tick(context).cursor

    local_platform.materialize_ingestion()
    cursor = tick(None)
    before = QualityEventStore(events_path).read()

    header = "order_id,customer_id,order_ts,status,currency,amount,updated_at\n"
    duplicated = (
        "900001,15,2026-01-03 10:00:00,paid,EUR,1.00,2026-01-03 10:00:00\n"
        "900001,16,2026-01-03 11:00:00,paid,EUR,2.00,2026-01-03 11:00:00\n"
    )
    (local_platform.orders_dir / "orders_duplicated.csv").write_text(header + duplicated)
    result = local_platform.materialize_ingestion()
    cursor = tick(cursor)

    new = QualityEventStore(events_path).read()[len(before) :]
    failed = {
        (e.asset_key.to_user_string(), e.check_name)
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }
    assert ("staged/shop/orders", "schema_contract") in failed
    assert {(e.asset_key, e.check_name) for e in new if e.kind == "check"} == failed
    contract = next(e for e in new if e.check_name == "schema_contract")
    assert contract.severity == "error"
    assert contract.details["blocking"] is True
    assert contract.details["run_id"] == result.run_id
    assert contract.details["metadata"], "the contract's metadata (counts per rule, offending rows) is kept"

    tick(cursor)
    assert len(QualityEventStore(events_path).read()) == len(before) + len(new)


def _events(*numbers: int) -> list[QualityEvent]:
    return [
        QualityEvent(f"check:a:c:{n}", "check", "a", "c", "error", "2026-11-23T00:00:00+00:00", {})
        for n in numbers
    ]


def _ids(events: list[QualityEvent]) -> list[str]:
    return [event.event_id.rsplit(":", 1)[1] for event in events]


def test_readers_follow_the_events_file_by_offset_through_rotation_truncation_and_torn_lines(
    tmp_path: Path,
) -> None:
    """The healing sensor reads only what was appended since its last tick (a byte offset, not a line
    count: the file of a long-running platform is large, and a count would skip the first lines of a
    rotated file). A file renamed away is read to its end, then the new one from its start; a file
    truncated in place is read anew; a line still being written waits for its newline."""
    path = tmp_path / "quality_events.jsonl"
    store = QualityEventStore(path)
    store.append(_events(1, 2, 3))
    events, position = store.read_new(None)
    assert _ids(events) == ["1", "2", "3"]
    store.append(_events(4))
    events, position = store.read_new(position)
    assert _ids(events) == ["4"]

    store.append(_events(5))
    path.rename(tmp_path / "quality_events.jsonl.1")  # logrotate: the file moves, a new one starts
    store.append(_events(6, 7))
    events, position = store.read_new(position)
    assert _ids(events) == ["5", "6", "7"], "the rotated file's tail first, then the new file"

    with path.open("a") as file:
        file.write(_events(8)[0].to_json()[:20])  # torn: no newline yet
    events, position = store.read_new(position)
    assert events == []
    with path.open("a") as file:
        file.write(_events(8)[0].to_json()[20:] + "\n")
    events, position = store.read_new(position)
    assert _ids(events) == ["8"]

    path.write_text("")  # copytruncate
    store.append(_events(9))
    events, position = store.read_new(position)
    assert _ids(events) == ["9"]
    assert store.read_new(position)[0] == []


def test_a_healing_cursor_that_counted_lines_goes_on_from_the_same_line(tmp_path: Path) -> None:
    store = QualityEventStore(tmp_path / "quality_events.jsonl")
    store.append(_events(1, 2, 3))
    cursor = HealingCursor.parse('{"runs_after": 5.0, "quality_events_read": 2}')
    events, _ = store.read_new(store.position_after(cursor.legacy_events_read))
    assert _ids(events) == ["3"]
    assert HealingCursor.parse(cursor.dump()).runs_after == 5.0


def test_events_older_than_the_retention_are_rotated_away_once_read(tmp_path: Path) -> None:
    """The file is rotated to `.1` once its first event is older than the retention (the `.1` before it
    goes): a reader still finishes the rotated file, and the file does not grow for ever."""
    path = tmp_path / "quality_events.jsonl"
    store = QualityEventStore(path)
    store.append(_events(1, 2))
    _, position = store.read_new(None)
    store.append(_events(3))
    observed = datetime.fromisoformat("2026-11-23T00:00:00+00:00")
    assert not store.rotate_if_older_than(90, observed + timedelta(days=89))
    assert store.rotate_if_older_than(90, observed + timedelta(days=91))
    assert not path.exists() and (tmp_path / "quality_events.jsonl.1").exists()
    store.append(_events(4))
    events, _ = store.read_new(position)
    assert _ids(events) == ["3", "4"], "nothing lost across the rotation"
