"""The code location: every asset, check and resource of the platform for one environment.

`build_definitions(settings)` is pure (tests call it with a temporary data directory);
`defs` reads the environment when Dagster loads the code location, not at import, and builds once per
process for the same inputs (`definitions_inputs`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import dagster as dg

from platform_assets.catalog.loader import CATALOG_DIR, load_catalog
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR, build_dbt_models
from platform_assets.factories.healing_ops_assets import build_healing_ops_assets
from platform_assets.factories.quality_checks import build_quality_checks
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.reset_job import build_reset_job
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
from resources.environment import PlatformSettings, build_executor, build_resources, load_env_file
from sensors.automation.conditions import apply_automation_conditions, build_automation_sensors
from sensors.healing.quality_events import build_quality_events_sensor
from sensors.healing.sensor import build_approval_job, build_healing_sensor


def build_definitions(settings: PlatformSettings) -> dg.Definitions:
    catalog = load_catalog(settings.catalog_dir or CATALOG_DIR, variables=settings.catalog_vars())
    quality_events = settings.quality_events
    healing_store = settings.healing_store
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
        jobs=[build_approval_job(healing_store), build_reset_job(catalog)],
        asset_checks=[
            *(c for item in catalog for c in build_contract_checks(item)),
            *build_quality_checks(catalog),
        ],
        resources=build_resources(settings, DBT_PROJECT_DIR),
        executor=build_executor(settings),
    )


DefinitionsInputs = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, int, int], ...]]
"""The process environment, and (path, mtime in ns, size) of every catalog file."""


def definitions_inputs(environ: Mapping[str, str]) -> DefinitionsInputs:
    """Everything `build_definitions` depends on besides the code: the whole environment (the catalog's
    `{{ env.X }}` placeholders and `${X}` secret checks may read any variable, not only `PLATFORM_*`) and
    the catalog's files, by modification time and size. The dbt manifest is not in it: under `dagster dev`
    the first build re-parses it (`build_dbt_models`), which would make the second load build again, and
    a reload from the UI starts a new code-server process anyway."""
    settings = PlatformSettings.from_env(environ)
    stats = []
    for path in sorted((settings.catalog_dir or CATALOG_DIR).glob("*.yaml")):
        stat = path.stat()
        stats.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(environ.items())), tuple(stats)


@functools.lru_cache(maxsize=1)
def _definitions_for(inputs: DefinitionsInputs) -> dg.Definitions:
    environ, _files = inputs
    return build_definitions(PlatformSettings.from_env(dict(environ)))


@dg.definitions
def defs() -> dg.Definitions:
    """Built once per process and inputs: Dagster calls this on every load of the code location, and one
    run worker loads it several times (the CLI or launcher, the run, its job subset), which at hundreds of
    entities cost seconds per load before the first step. A changed variable or catalog file builds anew;
    one build is kept, so a long-lived process does not accumulate them. The `.env` file is read first."""
    load_env_file()
    return _definitions_for(definitions_inputs(os.environ))
