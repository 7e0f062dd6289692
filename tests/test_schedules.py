"""Schedules from the catalog's cron and time zone, targeting a source's raw assets and what reads them;
a tick of a source whose circuit breaker is open is skipped."""

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.schedule_definition import ScheduleExecutionData

from platform_assets.catalog.loader import CatalogEntity, load_catalog
from platform_assets.catalog.model import Schedule
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.staged_assets import build_staged_asset
from platform_assets.policies.triggers import build_schedules
from resources.environment import PlatformSettings, build_resources
from resources.state.healing_store import Breaker, HealingStore
from sensors.automation.conditions import SOURCE_TAG, TRIGGER_TAG


@pytest.fixture
def catalog(tmp_path: Path) -> list[CatalogEntity]:
    return load_catalog(variables=PlatformSettings.local(tmp_path).catalog_vars())


def with_entity_schedule(items: list[CatalogEntity], entity: str, schedule: Schedule) -> list[CatalogEntity]:
    return [
        CatalogEntity(i.source, i.name, i.entity.model_copy(update={"schedule": schedule}))
        if i.name == entity
        else i
        for i in items
    ]


def definitions(
    catalog: list[CatalogEntity], schedules: list[dg.ScheduleDefinition], settings: PlatformSettings
) -> dg.Definitions:
    """Raw and staged assets (the dbt project is left out: it only adds downstream keys)."""
    assets = [*(build_raw_asset(i) for i in catalog), *(build_staged_asset(i, "duckdb") for i in catalog)]
    return dg.Definitions(
        assets=assets, schedules=schedules, resources=build_resources(settings, DBT_PROJECT_DIR)
    )


def test_one_schedule_per_source_schedule_with_cron_and_timezone(
    catalog: list[CatalogEntity], tmp_path: Path
) -> None:
    berlin = Schedule(cron="30 6 * * 1-5", timezone="Europe/Berlin")
    catalog = with_entity_schedule(catalog, "web_events", berlin)
    schedules = {
        s.name: s
        for s in build_schedules(catalog, tmp_path / "healing.sqlite", dg.DefaultScheduleStatus.STOPPED)
    }
    assert {name: (s.cron_schedule, s.execution_timezone) for name, s in schedules.items()} == {
        "shop_schedule": ("0 * * * *", "UTC"),
        "shop_web_events_schedule": ("30 6 * * 1-5", "Europe/Berlin"),
        "shop_db_schedule": ("15 * * * *", "UTC"),
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())
    repository = definitions(
        catalog, list(schedules.values()), PlatformSettings.local(tmp_path)
    ).get_repository_def()
    assert {s.job_name for s in schedules.values()} == {"ingestion"}, "one shared job, no implicit job each"
    with dg.instance_for_test() as instance:
        requests = {name: tick(s, instance, repository).run_requests[0] for name, s in schedules.items()}
    targets = {name: {k.to_user_string() for k in r.asset_selection or ()} for name, r in requests.items()}
    assert targets["shop_schedule"] == {
        "raw/shop/orders",
        "raw/shop/order_items",
        "staged/shop/orders",
        "staged/shop/order_items",
    }
    assert targets["shop_web_events_schedule"] == {"raw/shop/web_events", "staged/shop/web_events"}


def tick(
    schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, repository: dg.RepositoryDefinition
) -> ScheduleExecutionData:
    context = dg.build_schedule_context(
        instance, scheduled_execution_time=datetime(2026, 1, 5, 6, tzinfo=UTC), repository_def=repository
    )
    return schedule.evaluate_tick(context)


def test_tick_requests_a_tagged_run(catalog: list[CatalogEntity], tmp_path: Path) -> None:
    schedules = build_schedules(catalog, tmp_path / "h.sqlite", dg.DefaultScheduleStatus.STOPPED)
    repository = definitions(catalog, schedules, PlatformSettings.local(tmp_path)).get_repository_def()
    schedule = next(s for s in schedules if s.name == "shop_schedule")
    with dg.instance_for_test() as instance:
        result = tick(schedule, instance, repository)
    [request] = result.run_requests
    assert request.tags[SOURCE_TAG] == "shop"
    assert request.tags[TRIGGER_TAG] == "schedule"
    assert request.run_key == "shop_schedule:2026-01-05T06:00:00+00:00"


def test_breaker_open_skips_the_tick(catalog: list[CatalogEntity], tmp_path: Path) -> None:
    store_path = tmp_path / "ops" / "healing.sqlite"
    schedules = {s.name: s for s in build_schedules(catalog, store_path, dg.DefaultScheduleStatus.STOPPED)}
    repository = definitions(catalog, list(schedules.values()), PlatformSettings.local(tmp_path))
    HealingStore(store_path).save_breaker(Breaker("shop_db", "open", 3, time.time()))
    with dg.instance_for_test() as instance:
        skipped = tick(schedules["shop_db_schedule"], instance, repository.get_repository_def())
        other = tick(schedules["shop_schedule"], instance, repository.get_repository_def())
    assert not skipped.run_requests
    assert "breaker" in (skipped.skip_message or "")
    assert len(other.run_requests) == 1, "other sources are not held back"


def test_a_tick_launches_nothing_while_its_previous_run_waits_in_the_queue(
    catalog: list[CatalogEntity], tmp_path: Path
) -> None:
    """The waiting run lands what is new when it starts: a source slower than its cron would otherwise pile
    up runs. Another source's waiting run, or a run that has started, holds nothing back."""
    schedules = build_schedules(catalog, tmp_path / "h.sqlite", dg.DefaultScheduleStatus.STOPPED)
    repository = definitions(catalog, schedules, PlatformSettings.local(tmp_path)).get_repository_def()
    schedule = next(s for s in schedules if s.name == "shop_schedule")
    with dg.instance_for_test() as instance:
        [first] = tick(schedule, instance, repository).run_requests
        queued = instance.add_run(
            dg.DagsterRun(job_name="ingestion", status=dg.DagsterRunStatus.NOT_STARTED, tags=first.tags)
        )
        instance.add_run(
            dg.DagsterRun(
                job_name="ingestion", status=dg.DagsterRunStatus.NOT_STARTED, tags={SOURCE_TAG: "shop_db"}
            )
        )
        skipped = tick(schedule, instance, repository)
        instance.handle_run_event(
            queued.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="ingestion")
        )
        after_start = tick(schedule, instance, repository)
    assert not skipped.run_requests
    assert queued.run_id in (skipped.skip_message or "")
    assert len(after_start.run_requests) == 1
