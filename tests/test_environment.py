"""The one environment switch: defaults, overrides and a clear error for an unknown environment."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from resources.celery_execution import celery_executor_config
from resources.environment import (
    PG_PASSWORD_VAR,
    PlatformConfigError,
    PlatformEnvironment,
    PlatformSettings,
    build_executor,
    build_resources,
)
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


def test_a_landing_on_gcs_is_cached_under_the_data_dir_and_a_local_one_is_where_it_says(
    tmp_path: Path,
) -> None:
    on_gcs = PlatformSettings.from_env(
        {"PLATFORM_DATA_DIR": str(tmp_path), "PLATFORM_LANDING_URI": "gs://bucket/landing"}
    )
    landing = build_resources(on_gcs, DBT_PROJECT_DIR)["landing"]
    assert (landing.root, landing.durable_uri) == (str(tmp_path / "landing_cache"), "gs://bucket/landing")
    elsewhere = PlatformSettings.from_env({"PLATFORM_LANDING_URI": str(tmp_path / "bronze")})
    landing = build_resources(elsewhere, DBT_PROJECT_DIR)["landing"]
    assert (landing.root, landing.durable_uri) == (str(tmp_path / "bronze"), None)


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


@pytest.mark.parametrize("password", [None, ""], ids=["unset", "empty"])
def test_the_postgres_password_is_optional_and_empty_means_none(
    password: str | None, postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's PostgreSQL server trusts local connections: no password must reach it as none, not
    fail as a missing secret at the first write."""
    from fixtures.postgres_server import platform_pg_options

    if password is None:
        monkeypatch.delenv(PG_PASSWORD_VAR, raising=False)
    else:
        monkeypatch.setenv(PG_PASSWORD_VAR, password)
    environ = {"PLATFORM_ENV": "postgres", **platform_pg_options(postgres_database)}
    settings = PlatformSettings.from_env(environ)
    warehouse = build_resources(settings, DBT_PROJECT_DIR)["warehouse"]
    assert warehouse.query("SELECT current_user") == [("postgres",)]


BAD_WAREHOUSE_SETTINGS = {
    "pg_port": ({"PLATFORM_ENV": "postgres", "PLATFORM_PG_PORT": "5432x"}, "PLATFORM_PG_PORT='5432x' is not"),
    "typo": ({"PLATFORM_ENV": "postgres", "PLATFORM_PG_PASWORD": "s3cret"}, "PLATFORM_PG_PASWORD: not a"),
    "staging_uri": ({"PLATFORM_STAGING_URI": "s3://bucket/values"}, "PLATFORM_STAGING_URI='s3://bucket/"),
    "landing_uri": ({"PLATFORM_LANDING_URI": "s3://bucket/landing"}, "PLATFORM_LANDING_URI='s3://bucket/"),
    "landing_dir": ({"PLATFORM_LANDING_URI": "landing"}, "PLATFORM_LANDING_URI='landing' is a relative path"),
    "bq_bucket": (
        {"PLATFORM_ENV": "bigquery", "PLATFORM_BQ_PROJECT": "p", "PLATFORM_BQ_STAGING_URI": "bucket/x"},
        "PLATFORM_BQ_STAGING_URI='bucket/x' is not gs://",
    ),
    "bq_credentials": (
        {
            "PLATFORM_ENV": "bigquery",
            "PLATFORM_BQ_PROJECT": "p",
            "PLATFORM_BQ_STAGING_URI": "gs://b/x",
            "PLATFORM_BQ_CREDENTIALS_ENV": "BQ_KEY_JSON_UNSET",
        },
        "PLATFORM_BQ_CREDENTIALS_ENV names BQ_KEY_JSON_UNSET, which is not set",
    ),
    "bq_keyfile": (
        {
            "PLATFORM_ENV": "bigquery",
            "PLATFORM_BQ_PROJECT": "p",
            "PLATFORM_BQ_STAGING_URI": "gs://b/x",
            "PLATFORM_BQ_KEYFILE": "/nonexistent/key.json",
        },
        "PLATFORM_BQ_KEYFILE='/nonexistent/key.json' is not a file",
    ),
    "bq_endpoint": (
        {
            "PLATFORM_ENV": "bigquery",
            "PLATFORM_BQ_PROJECT": "p",
            "PLATFORM_BQ_STAGING_URI": "gs://b/x",
            "PLATFORM_BQ_API_ENDPOINT": "localhost:9050",
        },
        "PLATFORM_BQ_API_ENDPOINT='localhost:9050' is not an http",
    ),
}


@pytest.mark.parametrize(("environ", "message"), BAD_WAREHOUSE_SETTINGS.values(), ids=BAD_WAREHOUSE_SETTINGS)
def test_every_warehouse_setting_is_validated_when_the_code_location_loads(
    environ: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded as a run worker loads it (its code pointer), the code location refuses the setting, naming
    the variable, before any asset runs; the secret's value is never in the message."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    pointer = ReconstructableRepository.for_module(
        "platform_assets.definitions", "defs", working_directory=str(Path(__file__).parent.parent)
    )
    with pytest.raises(PlatformConfigError, match=re.escape(message)) as raised:
        pointer.get_definition()
    assert "s3cret" not in str(raised.value)


def test_empty_warehouse_variables_count_as_unset() -> None:
    settings = PlatformSettings.from_env(
        {"PLATFORM_ENV": "postgres", "PLATFORM_PG_PORT": " ", "PLATFORM_PG_HOST": ""}
    )
    assert (
        settings.postgres_url()
        == "postgresql+psycopg2://postgres:${PLATFORM_PG_PASSWORD}@127.0.0.1:5432/warehouse"
    )


def test_bronze_landing_is_chosen_for_postgres_only_and_a_bad_choice_names_the_fix(tmp_path: Path) -> None:
    postgres = {"PLATFORM_ENV": "postgres", "PLATFORM_DATA_DIR": str(tmp_path)}
    assert not PlatformSettings.from_env(postgres).bronze_landing, "files unless asked"
    settings = PlatformSettings.from_env({**postgres, "PLATFORM_LANDING": "Bronze"})
    landing = build_resources(settings, DBT_PROJECT_DIR)["landing"]
    assert landing.bronze_url == settings.postgres_url() and landing.root == str(tmp_path / "landing")
    with pytest.raises(PlatformConfigError, match=r"PLATFORM_LANDING=bronze .* PLATFORM_ENV=local; set"):
        PlatformSettings.from_env({"PLATFORM_LANDING": "bronze"})
    with pytest.raises(PlatformConfigError, match=r"PLATFORM_LANDING='s3' is not a landing; choose files or"):
        PlatformSettings.from_env({**postgres, "PLATFORM_LANDING": "s3"})


BAD_EXECUTOR_SETTINGS = {
    "unknown executor": (
        {"PLATFORM_EXECUTOR": "dask"},
        "PLATFORM_EXECUTOR='dask' is not a known executor; supported: local, celery",
    ),
    "no broker": ({"PLATFORM_EXECUTOR": "celery"}, "PLATFORM_EXECUTOR=celery needs PLATFORM_CELERY_BROKER"),
    "not redis": (
        {"PLATFORM_EXECUTOR": "celery", "PLATFORM_CELERY_BROKER": "amqp://u:s3cret@mq:5672//"},
        "PLATFORM_CELERY_BROKER: 'amqp://u:***@mq:5672//' is not a redis://",
    ),
    "bad port": (
        {"PLATFORM_EXECUTOR": "celery", "PLATFORM_CELERY_BROKER": "redis://:s3cret@redis:63x9/0"},
        "PLATFORM_CELERY_BROKER: 'redis://:***@redis:63x9/0' has a port that is not a number",
    ),
    "broker without the executor": (
        {"PLATFORM_CELERY_BROKER": "redis://redis:6379/0"},
        "PLATFORM_CELERY_BROKER is set but PLATFORM_EXECUTOR is not celery",
    ),
    "misspelt": (
        {"PLATFORM_EXECUTOR": "celery", "PLATFORM_CELERY_BROKER_URL": "redis://redis:6379/0"},
        "PLATFORM_CELERY_BROKER_URL: not a setting of the platform",
    ),
    "visibility timeout": (
        {
            "PLATFORM_EXECUTOR": "celery",
            "PLATFORM_CELERY_BROKER": "redis://redis:6379/0",
            "PLATFORM_CELERY_VISIBILITY_TIMEOUT": "1h",
        },
        "PLATFORM_CELERY_VISIBILITY_TIMEOUT='1h' is not a whole number of seconds",
    ),
}


@pytest.mark.parametrize(("environ", "message"), BAD_EXECUTOR_SETTINGS.values(), ids=BAD_EXECUTOR_SETTINGS)
def test_every_executor_setting_is_validated_without_printing_the_broker_password(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(PlatformConfigError, match=re.escape(message)) as raised:
        PlatformSettings.from_env({"PLATFORM_ENV": "postgres", **environ})
    assert "s3cret" not in str(raised.value)


def test_celery_workers_cannot_share_the_embedded_duckdb_file() -> None:
    environ = {"PLATFORM_EXECUTOR": "celery", "PLATFORM_CELERY_BROKER": "redis://redis:6379/0"}
    with pytest.raises(PlatformConfigError, match="set PLATFORM_ENV=postgres or bigquery"):
        PlatformSettings.from_env(environ)


def test_the_executor_is_unchanged_by_default_and_celery_reads_its_broker_at_run_time() -> None:
    assert build_executor(PlatformSettings.from_env({})) is dg.in_process_executor
    assert build_executor(PlatformSettings.from_env({"PLATFORM_ENV": "postgres"})).name == "multiprocess"
    broker = "redis://:s3cret@redis:6379/0"
    environ = {"PLATFORM_ENV": "postgres", "PLATFORM_EXECUTOR": "celery", "PLATFORM_CELERY_BROKER": broker}
    settings = PlatformSettings.from_env(environ)
    assert build_executor(settings).name == "celery"
    config = celery_executor_config(settings.celery_visibility_timeout_s)
    assert config["broker"] == {"env": "PLATFORM_CELERY_BROKER"} and "s3cret" not in str(config)
    assert config["config_source"]["task_acks_late"] is True
    assert config["config_source"]["broker_transport_options"]["visibility_timeout"] == 3600
