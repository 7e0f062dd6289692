"""The code location: every asset, check and resource of the platform for one environment.

`build_definitions(settings)` is pure (tests call it with a temporary data directory);
`defs` reads the environment when Dagster loads the code location, not at import.
"""

from __future__ import annotations

import dagster as dg

from platform_assets.catalog_loader import load_catalog
from platform_assets.dbt_models import DBT_PROJECT_DIR, build_dbt_models
from platform_assets.raw_assets import build_raw_asset
from platform_assets.staged_assets import build_contract_check, build_staged_asset
from resources.environment import PlatformSettings, build_executor, build_resources


def build_definitions(settings: PlatformSettings) -> dg.Definitions:
    catalog = load_catalog(variables=settings.catalog_vars())
    return dg.Definitions(
        assets=[
            *(build_raw_asset(item) for item in catalog),
            *(build_staged_asset(item, settings.warehouse_kind) for item in catalog),
            build_dbt_models(warehouse_kind=settings.warehouse_kind),
        ],
        asset_checks=[build_contract_check(item) for item in catalog],
        resources=build_resources(settings, DBT_PROJECT_DIR),
        executor=build_executor(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(PlatformSettings.from_env())
