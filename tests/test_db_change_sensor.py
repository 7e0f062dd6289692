"""The change probe of a database source, over a real SQLite database: a run when max(cursor column) of
an incremental table advanced, none when it did not, none while the source's breaker is open."""

import sqlite3
import time
from pathlib import Path

import dagster as dg
import pytest

from resources.databases.config import DatabaseConnection
from resources.state.healing_store import Breaker, HealingStore
from sensors.automation.conditions import TRIGGER_TAG
from sensors.automation.db_change_sensor import ProbedTable, advanced, build_db_change_sensor, comparable

RAW = dg.AssetKey(["raw", "crm", "customers"])
STAGED = dg.AssetKey(["staged", "crm", "customers"])


SHARED_JOB = dg.define_asset_job("ingestion", selection=dg.AssetSelection.all())
"""The one job every trigger launches a subset of (`sensors/automation/targets.py`)."""


@dg.asset(key=RAW)
def raw() -> None: ...


@dg.asset(key=STAGED, deps=[RAW])
def staged() -> None: ...


class Probe:
    def __init__(self, tmp_path: Path) -> None:
        self.database = tmp_path / "crm.sqlite"
        with sqlite3.connect(self.database) as con:
            con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, updated_at TEXT)")
        self.store = tmp_path / "ops" / "healing.sqlite"
        self.sensor = build_db_change_sensor(
            "crm_changes",
            source="crm",
            connection=DatabaseConnection(url=f"sqlite:///{self.database}"),
            tables=[
                ProbedTable(
                    "customers", "customers", "updated_at", dg.AssetSelection.assets(RAW).downstream()
                )
            ],
            job=SHARED_JOB,
            healing_store=self.store,
        )
        self.definitions = dg.Definitions(assets=[raw, staged], sensors=[self.sensor])
        self.cursor: str | None = None

    def insert(self, id_: int, updated_at: str) -> None:
        with sqlite3.connect(self.database) as con:
            con.execute("INSERT INTO customers VALUES (?, ?)", (id_, updated_at))

    def tick(self, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(instance, cursor=self.cursor, definitions=self.definitions)
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor
        return list(result.run_requests or [])


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    return Probe(tmp_path)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        yield instance


def test_runs_when_the_cursor_column_advances(probe: Probe, instance: dg.DagsterInstance) -> None:
    assert probe.tick(instance) == [], "an empty table has nothing to load"
    probe.insert(1, "2026-01-01 10:00:00")
    [first] = probe.tick(instance)
    assert first.asset_selection == [RAW, STAGED]
    assert first.run_key == "crm.customers:2026-01-01 10:00:00"
    assert first.tags[TRIGGER_TAG] == "change"

    assert probe.tick(instance) == [], "no change, no run"
    probe.insert(2, "2025-12-31 00:00:00")
    assert probe.tick(instance) == [], "a row below the maximum does not move it"

    probe.insert(3, "2026-01-02 08:00:00")
    [second] = probe.tick(instance)
    assert second.run_key == "crm.customers:2026-01-02 08:00:00"


def test_a_change_joins_the_entitys_run_waiting_in_the_queue(
    probe: Probe, instance: dg.DagsterInstance
) -> None:
    """The waiting run extracts from the watermark when it starts, so it takes the change too; the cursor
    moves on, and once that run has started a later change launches a run again."""
    probe.insert(1, "2026-01-01 10:00:00")
    [first] = probe.tick(instance)
    queued = instance.add_run(
        dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.NOT_STARTED, tags=first.tags)
    )
    probe.insert(2, "2026-01-01 11:00:00")
    assert probe.tick(instance) == [], "joins the queued run"
    instance.handle_run_event(
        queued.run_id,
        dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="ingestion"),
    )
    assert probe.tick(instance) == [], "the change it joined launches nothing later"
    probe.insert(3, "2026-01-01 12:00:00")
    [again] = probe.tick(instance)
    assert again.run_key == "crm.customers:2026-01-01 12:00:00"


def test_breaker_open_probes_nothing(probe: Probe, instance: dg.DagsterInstance) -> None:
    probe.insert(1, "2026-01-01 10:00:00")
    HealingStore(probe.store).save_breaker(Breaker("crm", "open", 3, time.time()))
    assert probe.tick(instance) == []
    HealingStore(probe.store).save_breaker(Breaker("crm", "closed", 0, time.time()))
    assert len(probe.tick(instance)) == 1, "the change is picked up once the breaker closed"


def test_unreachable_database_skips_the_tick(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    sensor = build_db_change_sensor(
        "gone_changes",
        source="gone",
        connection=DatabaseConnection(url=f"sqlite:///{tmp_path}/missing/dir/db.sqlite"),
        tables=[ProbedTable("customers", "customers", "updated_at", dg.AssetSelection.assets(RAW))],
        job=SHARED_JOB,
        healing_store=tmp_path / "healing.sqlite",
    )
    result = sensor.evaluate_tick(dg.build_sensor_context(instance))
    assert not result.run_requests
    assert "Cannot probe gone" in (result.skip_message or "")


def test_numbers_compare_as_numbers() -> None:
    assert advanced(comparable(10), comparable(9))
    assert not advanced(comparable(9), comparable(10))
    assert advanced(comparable(5), None)
    assert not advanced(None, comparable(5))
