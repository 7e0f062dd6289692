"""The one environment switch: defaults, overrides and a clear error for an unknown environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from resources.environment import PlatformConfigError, PlatformEnvironment, PlatformSettings, build_resources
from resources.warehouses.postgres_warehouse import PostgresWarehouse


def test_defaults_to_the_embedded_local_environment_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = PlatformSettings.from_env({})
    assert settings.environment is PlatformEnvironment.LOCAL
    assert settings.data_dir == tmp_path / ".platform_data"
    assert settings.warehouse_path == tmp_path / ".platform_data" / "warehouse.duckdb"


def test_data_dir_is_overridable_and_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = PlatformSettings.from_env({"PLATFORM_ENV": "LOCAL", "PLATFORM_DATA_DIR": "elsewhere"})
    assert settings.data_dir == tmp_path / "elsewhere"
    assert settings.dbt_vars() == {"duckdb_path": str(tmp_path / "elsewhere" / "warehouse.duckdb")}


def test_unknown_environment_names_the_variable_and_the_choices() -> None:
    with pytest.raises(
        PlatformConfigError,
        match=r"PLATFORM_ENV='staging' is not a known environment; supported: local, postgres, bigquery",
    ):
        PlatformSettings.from_env({"PLATFORM_ENV": "staging"})


def test_delivery_poll_interval_is_read_and_a_bad_one_is_refused_with_the_fix() -> None:
    assert PlatformSettings.from_env({}).delivery_poll_seconds == 60
    assert PlatformSettings.from_env({"PLATFORM_DELIVERY_POLL_SECONDS": "5"}).delivery_poll_seconds == 5
    for bad in ("0", "soon"):
        with pytest.raises(PlatformConfigError, match=r"PLATFORM_DELIVERY_POLL_SECONDS=.* at least 1"):
            PlatformSettings.from_env({"PLATFORM_DELIVERY_POLL_SECONDS": bad})


def test_resources_point_at_the_settings_paths(tmp_path: Path) -> None:
    settings = PlatformSettings.local(tmp_path)
    resources = build_resources(settings, DBT_PROJECT_DIR)
    assert resources["warehouse"].path == str(tmp_path / "warehouse.duckdb")
    assert resources["landing"].root == str(tmp_path / "landing")
    assert resources["dbt"].target == "duckdb"
    assert resources["dbt"].dbt_vars == {"duckdb_path": str(tmp_path / "warehouse.duckdb")}


def test_postgres_environment_builds_a_postgres_warehouse_without_storing_the_password(
    tmp_path: Path,
) -> None:
    settings = PlatformSettings.from_env(
        {
            "PLATFORM_ENV": "postgres",
            "PLATFORM_DATA_DIR": str(tmp_path),
            "PLATFORM_PG_HOST": "db.internal",
            "PLATFORM_PG_DATABASE": "analytics",
            "PLATFORM_PG_PASSWORD": "s3cret",
        }
    )
    resources = build_resources(settings, DBT_PROJECT_DIR)
    warehouse = resources["warehouse"]
    assert isinstance(warehouse, PostgresWarehouse)
    assert (
        warehouse.url == "postgresql+psycopg2://postgres:${PLATFORM_PG_PASSWORD}@db.internal:5432/analytics"
    )
    assert "s3cret" not in repr(settings)
    assert resources["warehouse_io_manager"].warehouse is warehouse
    assert resources["dbt"].target == "postgres"
    assert settings.warehouse_kind == "postgres"


def test_bigquery_environment_names_the_variables_it_misses() -> None:
    with pytest.raises(PlatformConfigError, match="PLATFORM_BQ_PROJECT, PLATFORM_BQ_STAGING_URI"):
        PlatformSettings.from_env({"PLATFORM_ENV": "bigquery"})


def test_catalog_dir_points_the_code_location_at_a_teams_own_catalog(tmp_path: Path) -> None:
    from platform_assets.catalog.loader import CATALOG_DIR
    from platform_assets.definitions import build_definitions

    own = tmp_path / "team_catalog"
    own.mkdir()
    (own / "shop_api.yaml").write_text((CATALOG_DIR / "shop_api.yaml").read_text())
    environ = {"PLATFORM_CATALOG_DIR": str(own), "PLATFORM_DATA_DIR": str(tmp_path)}
    settings = PlatformSettings.from_env(environ)
    assert settings.catalog_dir == own.resolve()
    graph = build_definitions(settings).resolve_asset_graph()
    raw = {key.path[1] for key in graph.get_all_asset_keys() if key.path[0] == "raw"}
    assert raw == {"shop_api"}, "only the team's catalog is loaded"
    assert PlatformSettings.from_env({}).catalog_dir is None, "unset: the catalog shipped with the platform"


def test_a_catalog_dir_that_is_not_a_directory_names_the_variable_and_the_fix(tmp_path: Path) -> None:
    message = r"PLATFORM_CATALOG_DIR=.*missing.*is not a directory.*unset it"
    with pytest.raises(PlatformConfigError, match=message):
        PlatformSettings.from_env({"PLATFORM_CATALOG_DIR": str(tmp_path / "missing")})
