"""The delivery sensor of a file source, over a real directory: new files start one run per entity and
batch (raw and downstream) with a de-duplicating run_key; files seen before start nothing; an open circuit
breaker holds new files back."""

import json
import time
from pathlib import Path

import dagster as dg
import pytest

from resources.files.readiness import Readiness
from resources.files.store import FileStore
from resources.state.healing_store import Breaker, HealingStore
from sensors.automation.conditions import SOURCE_TAG, TRIGGER_TAG
from sensors.automation.delivery_sensor import WatchedEntity, build_delivery_sensor

RAW = dg.AssetKey(["raw", "drops", "orders"])
STAGED = dg.AssetKey(["staged", "drops", "orders"])
OTHER_RAW = dg.AssetKey(["raw", "drops", "refunds"])


SHARED_JOB = dg.define_asset_job("ingestion", selection=dg.AssetSelection.all())
"""The one job every trigger launches a subset of (`sensors/automation/targets.py`)."""


@dg.asset(key=RAW)
def raw() -> None: ...


@dg.asset(key=STAGED, deps=[RAW])
def staged() -> None: ...


@dg.asset(key=OTHER_RAW)
def other_raw() -> None: ...


class Deliveries:
    def __init__(self, root: Path, store: Path, *, stable_after_seconds: float = 0) -> None:
        self.root = root
        self.store = store
        self.sensor = build_delivery_sensor(
            "drops_deliveries",
            source="drops",
            root=str(root),
            entities=[
                WatchedEntity(
                    "orders",
                    "orders/*.csv",
                    dg.AssetSelection.assets(RAW).downstream(),
                    Readiness(stable_after_seconds=stable_after_seconds),
                ),
                WatchedEntity("refunds", "refunds/*.csv", dg.AssetSelection.assets(OTHER_RAW).downstream()),
            ],
            job=SHARED_JOB,
            healing_store=store,
        )
        self.definitions = dg.Definitions(assets=[raw, staged, other_raw], sensors=[self.sensor])
        self.cursor: str | None = None

    def deliver(self, name: str, text: str = "id\n1\n") -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def tick(self, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(instance, cursor=self.cursor, definitions=self.definitions)
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor
        return list(result.run_requests or [])


@pytest.fixture
def deliveries(tmp_path: Path) -> Deliveries:
    return Deliveries(tmp_path / "files", tmp_path / "ops" / "healing.sqlite")


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        yield instance


def test_new_files_start_one_run_per_entity_and_batch(
    deliveries: Deliveries, instance: dg.DagsterInstance
) -> None:
    deliveries.deliver("orders/2026-01-01.csv")
    deliveries.deliver("orders/2026-01-02.csv")
    deliveries.deliver("orders/notes.txt")
    [first] = deliveries.tick(instance)
    assert set(first.asset_selection) == {RAW, STAGED}
    assert first.run_key and first.run_key.startswith("drops.orders:")
    assert first.tags[SOURCE_TAG] == "drops" and first.tags[TRIGGER_TAG] == "delivery"

    assert deliveries.tick(instance) == [], "the same files again start nothing"

    deliveries.deliver("orders/2026-01-03.csv")
    deliveries.deliver("refunds/2026-01-03.csv")
    requests = {tuple(r.asset_selection): r for r in deliveries.tick(instance)}
    assert set(requests) == {(RAW, STAGED), (OTHER_RAW,)}
    assert requests[(RAW, STAGED)].run_key != first.run_key

    deliveries.deliver("orders/2026-01-03.csv", "id\n1\n2\n")  # re-delivered with new content
    [rewritten] = deliveries.tick(instance)
    assert rewritten.asset_selection == [RAW, STAGED]


def test_new_files_join_the_entitys_run_waiting_in_the_queue(
    deliveries: Deliveries, instance: dg.DagsterInstance
) -> None:
    """The waiting run lands every new file when it starts (the raw asset's ledger), so files delivered
    meanwhile queue no run of their own; another entity's files, or files after that run started, do."""
    deliveries.deliver("orders/2026-01-01.csv")
    [first] = deliveries.tick(instance)
    queued = instance.add_run(
        dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.NOT_STARTED, tags=first.tags)
    )
    deliveries.deliver("orders/2026-01-02.csv")
    deliveries.deliver("refunds/2026-01-02.csv")
    [refunds] = deliveries.tick(instance)
    assert refunds.asset_selection == [OTHER_RAW]
    instance.handle_run_event(
        queued.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="ingestion")
    )
    assert deliveries.tick(instance) == [], "the joined files count as seen"
    deliveries.deliver("orders/2026-01-03.csv")
    [later] = deliveries.tick(instance)
    assert later.asset_selection == [RAW, STAGED]


def test_new_files_join_no_waiting_retry_of_an_earlier_run(
    deliveries: Deliveries, instance: dg.DagsterInstance
) -> None:
    """A retry re-runs the failed steps with what its parent landed: files joined to it would never land."""
    deliveries.deliver("orders/2026-01-01.csv")
    [first] = deliveries.tick(instance)
    parent = instance.add_run(
        dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.FAILURE, tags=first.tags)
    )
    instance.add_run(
        dg.DagsterRun(
            job_name="ingestion",
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={**first.tags, "dagster/parent_run_id": parent.run_id, "dagster/root_run_id": parent.run_id},
            parent_run_id=parent.run_id,
            root_run_id=parent.run_id,
        )
    )
    deliveries.deliver("orders/2026-01-01.csv", "id\n1\n2\n")  # the corrected re-delivery
    [corrected] = deliveries.tick(instance)
    assert corrected.asset_selection == [RAW, STAGED]


def test_an_entity_waiting_for_stable_files_joins_no_queued_run(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Its run is told when each file was first listed: a file it was not told of would not be landed."""
    deliveries = Deliveries(
        tmp_path / "files", tmp_path / "ops" / "healing.sqlite", stable_after_seconds=0.01
    )
    deliveries.deliver("orders/2026-01-01.csv")
    deliveries.tick(instance)
    time.sleep(0.05)
    [first] = deliveries.tick(instance)
    instance.add_run(
        dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.NOT_STARTED, tags=first.tags)
    )
    deliveries.deliver("orders/2026-01-02.csv")
    deliveries.tick(instance)
    time.sleep(0.05)
    [second] = deliveries.tick(instance)
    assert second.run_key != first.run_key


def test_breaker_open_holds_new_files_back(deliveries: Deliveries, instance: dg.DagsterInstance) -> None:
    deliveries.tick(instance)
    deliveries.deliver("orders/2026-01-01.csv")
    HealingStore(deliveries.store).save_breaker(Breaker("drops", "open", 3, time.time()))
    assert deliveries.tick(instance) == []
    HealingStore(deliveries.store).save_breaker(Breaker("drops", "closed", 0, time.time()))
    [request] = deliveries.tick(instance)
    assert request.asset_selection == [RAW, STAGED]


def test_a_cursor_stored_before_readiness_was_tracked_keeps_its_files_seen(
    deliveries: Deliveries, instance: dg.DagsterInstance
) -> None:
    """After an upgrade the stored cursor is the old `{entity: [path|size|version]}`: its files start no
    run again, and a new file still does."""
    deliveries.deliver("orders/2026-01-01.csv")
    [seen] = FileStore(root=str(deliveries.root)).list("orders/*.csv")
    deliveries.cursor = json.dumps({"orders": [seen.ledger_key()], "refunds": []})
    assert deliveries.tick(instance) == []
    deliveries.deliver("orders/2026-01-02.csv")
    [request] = deliveries.tick(instance)
    assert request.asset_selection == [RAW, STAGED]


def test_same_batch_has_the_same_run_key(deliveries: Deliveries, instance: dg.DagsterInstance) -> None:
    """A tick evaluated twice (cursor not stored) asks for the same run_key: Dagster launches it once."""
    deliveries.deliver("orders/2026-01-01.csv")
    [first] = deliveries.tick(instance)
    deliveries.cursor = None
    [again] = deliveries.tick(instance)
    assert again.run_key == first.run_key


def test_the_delivery_sensors_poll_as_often_as_the_environment_says(tmp_path: Path) -> None:
    from platform_assets.definitions import build_definitions
    from resources.environment import PlatformSettings

    settings = PlatformSettings.from_env(
        {"PLATFORM_DATA_DIR": str(tmp_path), "PLATFORM_DELIVERY_POLL_SECONDS": "7"}
    )
    sensors = [s for s in build_definitions(settings).sensors or [] if s.name.endswith("_deliveries")]
    assert sensors and {sensor.minimum_interval_seconds for sensor in sensors} == {7}
