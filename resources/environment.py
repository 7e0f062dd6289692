"""The one environment switch: which world the platform runs against, read in this module only.

`PLATFORM_ENV` selects the environment (default `local`, the embedded default: files on disk, one DuckDB
warehouse file). `PLATFORM_DATA_DIR` moves the data directory (default `./.platform_data`). Nothing here
runs at import time: callers ask for `PlatformSettings.from_env()` when they build definitions, so tests
build settings for a temporary directory without touching the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from resources.dbt_warehouse import DbtWarehouse, dbt_beside_python
from resources.duckdb_warehouse import DuckDBWarehouse
from resources.landing import LandingZone

ENV_VAR = "PLATFORM_ENV"
DATA_DIR_VAR = "PLATFORM_DATA_DIR"
DEFAULT_DATA_DIR = ".platform_data"


class PlatformEnvironment(StrEnum):
    """Deployment environments. Only `local` is wired today; production targets arrive with the warehouse
    IO managers (BigQuery, Postgres, GCS staging)."""

    LOCAL = "local"


class PlatformConfigError(ValueError):
    """The environment asks for something the platform cannot run: names the variable and the fix."""


@dataclass(frozen=True)
class PlatformSettings:
    """Where everything lives for one environment. Paths are absolute so that subprocesses (dbt) started
    from another working directory see the same files."""

    environment: PlatformEnvironment
    data_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlatformSettings:
        env = os.environ if environ is None else environ
        raw_env = env.get(ENV_VAR, PlatformEnvironment.LOCAL.value).strip().lower()
        try:
            environment = PlatformEnvironment(raw_env)
        except ValueError:
            supported = ", ".join(e.value for e in PlatformEnvironment)
            raise PlatformConfigError(
                f"{ENV_VAR}={raw_env!r} is not a known environment; supported: {supported}. "
                f"Unset {ENV_VAR} to run on the embedded default (local)."
            ) from None
        data_dir = Path(env.get(DATA_DIR_VAR) or DEFAULT_DATA_DIR)
        return cls(environment=environment, data_dir=data_dir.expanduser().resolve())

    @classmethod
    def local(cls, data_dir: Path) -> PlatformSettings:
        return cls(environment=PlatformEnvironment.LOCAL, data_dir=data_dir.resolve())

    @property
    def sources_dir(self) -> Path:
        """The simulated outside world of the embedded default: demo files and the demo database."""
        return self.data_dir / "sources"

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def dagster_home(self) -> Path:
        """Dagster run history of the `dataplatform` command when DAGSTER_HOME is not set."""
        return self.data_dir / "dagster_home"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def warehouse_kind(self) -> str:
        """The Dagster `kind` of the warehouse, shown on every table asset in the UI."""
        return "duckdb"

    @property
    def dbt_target(self) -> str:
        return "duckdb"

    def catalog_vars(self) -> dict[str, str]:
        """Values of the platform's `{{ placeholders }}` in catalog files."""
        return {"sources_dir": str(self.sources_dir), "data_dir": str(self.data_dir)}

    def dbt_vars(self) -> dict[str, str]:
        """dbt `--vars` that point the dbt profile at this environment's warehouse."""
        return {"duckdb_path": str(self.warehouse_path)}


def build_resources(settings: PlatformSettings, dbt_project_dir: Path) -> dict[str, Any]:
    """The resources every asset sees, for the given environment. Asset code names resources by key
    (`landing`, `warehouse`, `dbt`) and never learns which backend is behind them."""
    return {
        "landing": LandingZone(root=str(settings.landing_dir)),
        "warehouse": DuckDBWarehouse(path=str(settings.warehouse_path)),
        "dbt": DbtWarehouse(
            project_dir=str(dbt_project_dir),
            target=settings.dbt_target,
            dbt_executable=dbt_beside_python(),
            dbt_vars=settings.dbt_vars(),
        ),
    }
