"""The code location: every asset, check and resource of the platform for one environment.

`build_definitions(settings)` is pure (tests call it with a temporary data directory);
`defs` reads the environment when Dagster loads the code location, not at import.
"""

from __future__ import annotations

import dagster as dg

from platform_assets.catalog.loader import CATALOG_DIR, load_catalog
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR, build_dbt_models
from platform_assets.factories.healing_ops_assets import build_healing_ops_assets
from platform_assets.factories.quality_checks import build_quality_checks
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.schema_registry_asset import build_schema_registry_asset
from platform_assets.factories.staged_assets import build_contract_checks, build_staged_asset
from platform_assets.policies.freshness import apply_freshness_policies
from platform_assets.policies.triggers import (
    DBT_SELECTION,
    INGESTION_SELECTION,
    build_change_sensors,
    build_delivery_sensors,
    build_schedules,
    condition_for,
    launch_status,
)
from resources.environment import PlatformSettings, build_executor, build_resources
from sensors.automation.conditions import apply_automation_conditions, build_automation_sensors
from sensors.healing.quality_events import build_quality_events_sensor
from sensors.healing.sensor import build_approval_job, build_healing_sensor

QUALITY_EVENTS_FILE = ("ops", "quality_events.jsonl")
"""Under the data directory: the quality events the healing layer and alert channels read."""
HEALING_STORE_FILE = ("ops", "healing.sqlite")
"""Under the data directory: the healing ledger, circuit breakers and parameter overrides."""


def build_definitions(settings: PlatformSettings) -> dg.Definitions:
    catalog = load_catalog(settings.catalog_dir or CATALOG_DIR, variables=settings.catalog_vars())
    quality_events = settings.data_dir.joinpath(*QUALITY_EVENTS_FILE)
    healing_store = settings.data_dir.joinpath(*HEALING_STORE_FILE)
    assets = [
        *(build_raw_asset(item) for item in catalog),
        *(build_staged_asset(item, settings.warehouse_kind) for item in catalog),
        build_dbt_models(settings.warehouse_kind, settings.dbt_target, settings.dbt_vars()),
        build_schema_registry_asset(catalog, settings.warehouse_kind),
        *build_healing_ops_assets(healing_store, settings.warehouse_kind),
    ]
    schedule_status, sensor_status = launch_status(settings)
    # Freshness policies and automation conditions from the catalog, applied here at the root, in one place
    # each (platform_assets/policies/freshness.py, platform_assets/policies/triggers.py and
    # sensors/automation/conditions.py).
    assets = apply_automation_conditions(apply_freshness_policies(assets, catalog), condition_for)
    return dg.Definitions(
        assets=assets,
        # Records failed checks and stale assets of this whole code location
        # (sensors/healing/quality_events.py).
        sensors=[
            build_quality_events_sensor(quality_events),
            # Classifies failures, heals what is safe, proposes or escalates the rest
            # (sensors/healing/engine.py).
            build_healing_sensor(healing_store, quality_events),
            # Evaluate the automation conditions, split by kind (sensors/automation/conditions.py).
            *build_automation_sensors(INGESTION_SELECTION, DBT_SELECTION),
            # New files of file sources, changed incremental tables of database sources.
            *build_delivery_sensors(catalog, healing_store, sensor_status, settings.delivery_poll_seconds),
            *build_change_sensors(catalog, healing_store, sensor_status),
        ],
        # The catalog's cron schedules, skipped while a source's circuit breaker is open.
        schedules=build_schedules(catalog, healing_store, schedule_status),
        jobs=[build_approval_job(healing_store)],
        asset_checks=[
            *(c for item in catalog for c in build_contract_checks(item)),
            *build_quality_checks(catalog),
        ],
        resources=build_resources(settings, DBT_PROJECT_DIR),
        executor=build_executor(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(PlatformSettings.from_env())
