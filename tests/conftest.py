"""Shared fixtures: a built dbt manifest (once per session) and a platform on a temporary data directory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from mini_platform import MiniPlatform

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY, DEMO_API_KEY_VAR, DEMO_API_URL_VAR
from demo_shop.world import PRODUCTS_API
from platform_assets.definitions import build_definitions
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR, prepare_manifest
from platform_assets.keys import RAW_ASSETS, STAGED_ASSETS
from resources.environment import PG_PASSWORD_VAR, PlatformEnvironment, PlatformSettings, build_resources
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse

pytest_plugins = [
    "fixtures.postgres_server",
    "fixtures.gcs_emulator",
    "fixtures.bigquery_emulator",
    "fixtures.exports_platform",
    "fixtures.redis_server",
]
"""Session-wide real servers (one PostgreSQL cluster, one GCS emulator, one Redis), started on first use."""

TEST_SCALE = 0.2
"""2,000 orders: enough for several days of revenue, small enough for a fast dbt run."""


@pytest.fixture(autouse=True)
def demo_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped catalog references ${SHOP_API_KEY}; `dagster dev` gets it from .env, tests from here."""
    monkeypatch.setenv(DEMO_API_KEY_VAR, DEMO_API_KEY)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PlatformSettings:
    """Platform settings on `tmp_path / "data"`, once with the embedded DuckDB warehouse and once with a
    fresh database of the session's PostgreSQL server: for tests that must hold on both."""
    settings = PlatformSettings.local(tmp_path / "data")
    if request.param == "duckdb":
        return settings
    # Imported here: a top-level import would load the plugin module before pytest can rewrite its asserts.
    from fixtures.postgres_server import platform_pg_options

    monkeypatch.setenv(PG_PASSWORD_VAR, "")
    options = platform_pg_options(request.getfixturevalue("postgres_database"))
    return PlatformSettings(PlatformEnvironment.POSTGRES, settings.data_dir, options)


@pytest.fixture
def platform(tmp_path: Path, warehouse_settings: PlatformSettings) -> Iterator[MiniPlatform]:
    """The one-entity platform of `mini_platform`, on DuckDB and on PostgreSQL."""
    warehouse = build_resources(warehouse_settings, DBT_PROJECT_DIR)["warehouse"]
    with dg.instance_for_test() as instance:
        yield MiniPlatform(tmp_path / "deliveries", warehouse_settings, instance, warehouse, [])


@pytest.fixture(scope="session")
def dbt_manifest() -> Path:
    return prepare_manifest()


@dataclass
class LocalPlatform:
    settings: PlatformSettings
    definitions: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(path=str(self.settings.warehouse_path))

    @property
    def orders_dir(self) -> Path:
        return self.settings.sources_dir / "files" / "shop" / "orders"

    def materialize_all(self) -> dg.ExecuteInProcessResult:
        job = self.definitions.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    def materialize_ingestion(self) -> dg.ExecuteInProcessResult:
        """Raw and staged assets (and their checks) only: what ingestion tests need, without dbt."""
        job = dg.define_asset_job("raw_and_staged", selection=RAW_ASSETS | STAGED_ASSETS)
        definitions = dg.Definitions.merge(self.definitions, dg.Definitions(jobs=[job]))
        return definitions.resolve_job_def("raw_and_staged").execute_in_process(
            instance=self.instance, raise_on_error=False
        )


@pytest.fixture
def local_platform(
    tmp_path: Path, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalPlatform]:
    """The embedded default on a fresh data directory with a small demo world (its products API served on
    loopback), and a Dagster instance of its own (so that "latest materialization" lookups see only this
    test's runs)."""
    with demo_platform(PlatformSettings.local(tmp_path / "data"), monkeypatch) as platform:
        yield platform


@contextlib.contextmanager
def demo_platform(settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlatform]:
    """A small demo world generated under `settings`, its products API served on loopback, and a Dagster
    instance of its own: what `local_platform` and its variants (another catalog) run on."""
    generate_demo_world(settings.sources_dir, seed=7, scale=TEST_SCALE)
    with (
        serve_products_api(settings.sources_dir / PRODUCTS_API, DEMO_API_KEY) as api_url,
        dg.instance_for_test() as instance,
    ):
        monkeypatch.setenv(DEMO_API_URL_VAR, api_url)
        yield LocalPlatform(settings, build_definitions(settings), instance)


SCOREBOARD = pytest.StashKey[list]()


@pytest.fixture
def scoreboard(request: pytest.FixtureRequest) -> list:
    """Rows (`healing_harness.ScoreboardRow`) a fault-injection scenario records; printed after the run."""
    return request.config.stash.setdefault(SCOREBOARD, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(SCOREBOARD, [])
    if rows:
        from healing_harness import render_scoreboard

        terminalreporter.write_sep("=", "healing scoreboard (fault-injection scenarios)")
        terminalreporter.write_line(render_scoreboard(rows))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with `slow` tests first in the collection, the longest first (`pytest.mark.slow(minutes=N)`,
    1 when unsaid), each file's tests together and in their order, so that the long ones (the chaos soak,
    the Celery workers) are not left to the end of a run. `./dev test` passes `--no-loadscope-reorder`:
    by default xdist's `--dist loadfile` reorders files by their number of tests, which had started the
    chaos soak 13 minutes into a 20-minute clean-clone CI run."""
    minutes: dict[Path, float] = {}
    for item in items:
        if (marker := item.get_closest_marker("slow")) is not None:
            minutes[item.path] = max(minutes.get(item.path, 0.0), float(marker.kwargs.get("minutes", 1)))
    items.sort(key=lambda item: -minutes.get(item.path, 0.0))
