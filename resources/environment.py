"""The one environment switch: which world the platform runs against, read in this module only.

`PLATFORM_ENV` selects the warehouse (default `local`, the embedded default: one DuckDB file):

- `local`: DuckDB at `<data dir>/warehouse.duckdb`; dbt target `duckdb`.
- `postgres`: a PostgreSQL database from `PLATFORM_PG_HOST`, `PLATFORM_PG_PORT`, `PLATFORM_PG_USER`,
  `PLATFORM_PG_DATABASE` and the optional secret `PLATFORM_PG_PASSWORD` (unset or empty: no password, for
  `.pgpass`, trust or peer authentication); dbt target `postgres` reads the same variables
  (dbt_project/profiles.yml).
- `bigquery`: project `PLATFORM_BQ_PROJECT` in `PLATFORM_BQ_LOCATION`, load files staged under
  `PLATFORM_BQ_STAGING_URI` (`gs://bucket/prefix`); credentials are application default credentials, or a
  service-account key JSON in the variable named by `PLATFORM_BQ_CREDENTIALS_ENV`; `PLATFORM_BQ_API_ENDPOINT`
  points at an emulator. dbt target `bigquery`.

The platform's own state (the healing ledger, breakers, overrides, quality events) is kept in the Dagster
instance's PostgreSQL database when the deployment has one, named by the variables `deploy/dagster.yaml`
reads (`DAGSTER_PG_HOST`, `DAGSTER_PG_PORT`, `DAGSTER_PG_USER`, `DAGSTER_PG_DB` and the secret
`DAGSTER_PG_PASSWORD`), in schema `platform_ops`; else in files under `<data dir>/ops/`
(`PlatformSettings.healing_store`, `PlatformSettings.quality_events`).

Python assets' values (the default `io_manager`) are Parquet files under `PLATFORM_STAGING_URI` (a
directory or `gs://bucket/prefix`; default `<data dir>/staging`). The landing zone (landed files, the
processed-file ledger, the landed index, quarantined records) is under `PLATFORM_LANDING_URI`: a directory
(default `<data dir>/landing`, `PLATFORM_DATA_DIR` defaulting to `./.platform_data`), or `gs://bucket/prefix`,
which every machine of a deployment sees, each keeping a working cache in `<data dir>/landing_cache`
(`resources/landing/published.py`).
With `postgres`, `PLATFORM_LANDING=bronze` lands database and REST sources in the warehouse database's
bronze layer instead (`resources/landing/bronze.py`; `files`, the default, lands them as Parquet files in
the landing zone).
`PLATFORM_EXECUTOR` says where a run's steps execute: `local` (default) on the machine that runs the run, or
`celery`: on Celery workers on any number of machines, through the Redis broker `PLATFORM_CELERY_BROKER`
(`resources/celery_execution.py`; `PLATFORM_CELERY_VISIBILITY_TIMEOUT`: seconds before a lost worker's step
is handed to another).
Every setting of the chosen warehouse is validated by `PlatformSettings.from_env()`, when the code location
loads: a port that is not a number or a staging URI that is not `gs://bucket` fails there, naming the
variable, not in the first run after its raw step has landed. A variable an empty value is set to counts as
unset (its default applies).
Nothing here runs at import time: callers ask for `PlatformSettings.from_env()` when they build definitions,
so tests build settings for a temporary directory without touching the process environment. Secrets are
kept as `${NAME}` references and resolved by the client at connect time, never stored in settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from dotenv import find_dotenv, load_dotenv

from resources.celery_execution import (
    BROKER_VAR,
    DEFAULT_VISIBILITY_TIMEOUT_S,
    VISIBILITY_TIMEOUT_VAR,
    broker_problem,
    celery_executor_config,
)
from resources.landing.bronze_zone import BronzeLandingZone
from resources.landing.parquet_io_manager import ParquetIOManager
from resources.landing.sharing import is_gcs_uri
from resources.landing.zone import LandingZone
from resources.warehouses.base import Warehouse
from resources.warehouses.dbt_warehouse import DbtWarehouse, dbt_beside_python
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
from resources.warehouses.io_manager import WarehouseIOManager
from resources.warehouses.postgres_warehouse import PostgresWarehouse

ENV_VAR = "PLATFORM_ENV"
DATA_DIR_VAR = "PLATFORM_DATA_DIR"
DELIVERY_POLL_VAR = "PLATFORM_DELIVERY_POLL_SECONDS"
CATALOG_DIR_VAR = "PLATFORM_CATALOG_DIR"
LANDING_VAR = "PLATFORM_LANDING"
LANDING_CHOICES = ("files", "bronze")
DEFAULT_DELIVERY_POLL_SECONDS = 60
DEFAULT_DATA_DIR = ".platform_data"
ENV_FILE = ".env"
CODE_LOCATION_MODULE = "platform_assets.definitions"


class PlatformEnvironment(StrEnum):
    """Deployment environments, named after the warehouse they write to (`local` is embedded DuckDB)."""

    LOCAL = "local"
    POSTGRES = "postgres"
    BIGQUERY = "bigquery"


class PlatformExecutor(StrEnum):
    """Where a run's steps execute: on the run's own machine, or on Celery workers (any machine)."""

    LOCAL = "local"
    CELERY = "celery"


EXECUTOR_VAR = "PLATFORM_EXECUTOR"
CELERY_OPTIONS = (BROKER_VAR, VISIBILITY_TIMEOUT_VAR)
PG_PASSWORD_VAR = "PLATFORM_PG_PASSWORD"
STAGING_URI_VAR = "PLATFORM_STAGING_URI"
LANDING_URI_VAR = "PLATFORM_LANDING_URI"
BQ_REQUIRED = ("PLATFORM_BQ_PROJECT", "PLATFORM_BQ_STAGING_URI")
PG_OPTIONS = ("PLATFORM_PG_HOST", "PLATFORM_PG_PORT", "PLATFORM_PG_USER", "PLATFORM_PG_DATABASE")
BQ_OPTIONS = (
    *BQ_REQUIRED,
    "PLATFORM_BQ_LOCATION",
    "PLATFORM_BQ_CREDENTIALS_ENV",
    "PLATFORM_BQ_API_ENDPOINT",
    "PLATFORM_BQ_KEYFILE",
)
"""Every `PLATFORM_PG_*` / `PLATFORM_BQ_*` variable the platform reads (`PLATFORM_BQ_KEYFILE`: dbt's key
file, dbt_project/profiles.yml); any other name of those families is a typo, refused at load."""


class PlatformConfigError(ValueError):
    """The environment asks for something the platform cannot run: names the variable and the fix."""


@dataclass(frozen=True)
class PlatformSettings:
    """Where everything lives for one environment. Paths are absolute so that subprocesses (dbt) started
    from another working directory see the same files."""

    environment: PlatformEnvironment
    data_dir: Path
    warehouse_options: Mapping[str, str] = field(default_factory=dict)
    """`PLATFORM_STAGING_URI`, `PLATFORM_LANDING_URI` and the `PLATFORM_PG_*` / `PLATFORM_BQ_*` variables (no
    secret values)."""
    delivery_poll_seconds: int = DEFAULT_DELIVERY_POLL_SECONDS
    """How often the delivery sensors look for new files (their minimum interval between ticks)."""
    catalog_dir: Path | None = None
    """`PLATFORM_CATALOG_DIR`: a directory of source YAML files kept elsewhere (a team's own repository);
    None means the catalog shipped in `platform_assets/catalog/sources/`."""
    state_database: str | None = None
    """SQLAlchemy URL of the instance's PostgreSQL database (its password a `${DAGSTER_PG_PASSWORD}`
    reference) when `DAGSTER_PG_HOST` is set; None: the platform's state is kept in files."""
    bronze_landing: bool = False
    """`PLATFORM_LANDING=bronze`: database and REST sources land in the PostgreSQL bronze layer."""
    executor: PlatformExecutor = PlatformExecutor.LOCAL
    celery_visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S
    """With `executor` celery: seconds before Redis hands a lost worker's step to another worker."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlatformSettings:
        env = os.environ if environ is None else environ
        environment = _choice(
            PlatformEnvironment,
            ENV_VAR,
            env.get(ENV_VAR, PlatformEnvironment.LOCAL.value),
            "environment",
            "to run on the embedded default (local)",
        )
        data_dir = Path(env.get(DATA_DIR_VAR) or DEFAULT_DATA_DIR)
        options = {
            name: value.strip()
            for name, value in env.items()
            if (
                name.startswith(("PLATFORM_PG_", "PLATFORM_BQ_"))
                or name in (STAGING_URI_VAR, LANDING_URI_VAR)
            )
            and name != PG_PASSWORD_VAR
            and value.strip()
        }
        _validate_warehouse_options(environment, options, env)
        executor = _executor(env, environment)
        return cls(
            environment=environment,
            data_dir=data_dir.expanduser().resolve(),
            warehouse_options=options,
            delivery_poll_seconds=_poll_seconds(env.get(DELIVERY_POLL_VAR)),
            catalog_dir=_catalog_dir(env.get(CATALOG_DIR_VAR)),
            state_database=_instance_database(env),
            bronze_landing=_bronze_landing(environment, env.get(LANDING_VAR)),
            executor=executor,
            celery_visibility_timeout_s=_visibility_timeout(env.get(VISIBILITY_TIMEOUT_VAR)),
        )

    @classmethod
    def local(cls, data_dir: Path) -> PlatformSettings:
        return cls(environment=PlatformEnvironment.LOCAL, data_dir=data_dir.resolve())

    @property
    def sources_dir(self) -> Path:
        """The simulated outside world of the embedded default: demo files and the demo database."""
        return self.data_dir / "sources"

    @property
    def landing_dir(self) -> Path:
        """The landing zone's directory: where it is on local disk, or this machine's cache of it on GCS."""
        if self.landing_on_gcs is not None:
            return self.data_dir / "landing_cache"
        return Path(self.warehouse_options.get(LANDING_URI_VAR) or self.data_dir / "landing")

    @property
    def landing_on_gcs(self) -> str | None:
        """`PLATFORM_LANDING_URI` when it is `gs://bucket/prefix`, else None (the landing is local)."""
        uri = self.warehouse_options.get(LANDING_URI_VAR)
        return uri if uri is not None and is_gcs_uri(uri) else None

    @property
    def dagster_home(self) -> Path:
        """Dagster run history of the `dataplatform` command when DAGSTER_HOME is not set."""
        return self.data_dir / "dagster_home"

    @property
    def healing_store(self) -> Path | str:
        """Where the healing ledger, breakers and overrides are (`resources/state/healing_store.py`)."""
        return self.state_database or self.data_dir / "ops" / "healing.sqlite"

    @property
    def quality_events(self) -> Path | str:
        """Where the quality events are (`sensors/healing/quality_events.py`)."""
        return self.state_database or self.data_dir / "ops" / "quality_events.jsonl"

    @property
    def staging_uri(self) -> str:
        """Where the default IO manager keeps Python assets' values as Parquet."""
        return self.warehouse_options.get(STAGING_URI_VAR) or str(self.data_dir / "staging")

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def warehouse_kind(self) -> str:
        """The Dagster `kind` of the warehouse, shown on every table asset in the UI."""
        return {"local": "duckdb"}.get(self.environment.value, self.environment.value)

    @property
    def dbt_target(self) -> str:
        """The output of dbt_project/profiles.yml for this environment."""
        return self.warehouse_kind

    def postgres_url(self) -> str:
        """SQLAlchemy URL of the PostgreSQL warehouse; the password stays a reference until connect time
        (and may be unset: `build_warehouse` reads it as empty then)."""
        option = self.warehouse_options.get
        user = option("PLATFORM_PG_USER", "postgres")
        host = option("PLATFORM_PG_HOST", "127.0.0.1")
        port = option("PLATFORM_PG_PORT", "5432")
        database = option("PLATFORM_PG_DATABASE", "warehouse")
        return f"postgresql+psycopg2://{user}:${{{PG_PASSWORD_VAR}}}@{host}:{port}/{database}"

    def catalog_vars(self) -> dict[str, str]:
        """Values of the platform's `{{ placeholders }}` in catalog files."""
        return {"sources_dir": str(self.sources_dir), "data_dir": str(self.data_dir)}

    def dbt_vars(self) -> dict[str, str]:
        """dbt `--vars` that point the dbt profile at this environment's warehouse."""
        return {"duckdb_path": str(self.warehouse_path)}


def build_warehouse(settings: PlatformSettings) -> Warehouse:
    """The warehouse client of the environment."""
    if settings.environment is PlatformEnvironment.POSTGRES:
        return PostgresWarehouse(url=settings.postgres_url(), optional_env=[PG_PASSWORD_VAR])
    if settings.environment is PlatformEnvironment.BIGQUERY:
        # Imported here: the Google client libraries take a second to import, and only this environment
        # needs them (every code-location load and run worker would pay otherwise).
        from resources.warehouses.bigquery_warehouse import BigQueryWarehouse

        option = settings.warehouse_options.get
        return BigQueryWarehouse(
            project=option("PLATFORM_BQ_PROJECT", ""),
            location=option("PLATFORM_BQ_LOCATION", "US"),
            staging_uri=option("PLATFORM_BQ_STAGING_URI", ""),
            credentials_json_env=option("PLATFORM_BQ_CREDENTIALS_ENV"),
            api_endpoint=option("PLATFORM_BQ_API_ENDPOINT"),
        )
    return DuckDBWarehouse(path=str(settings.warehouse_path))


def build_executor(settings: PlatformSettings) -> dg.ExecutorDefinition:
    """How a run's steps execute. Locally, in the run's own process: DuckDB admits one writer anyway, and a
    subprocess per step would re-import the code location (5-20 s each, minutes for the whole graph). In
    production, one process per step started from a forkserver that has the code location preloaded, so
    steps run in parallel without paying the imports again. With `PLATFORM_EXECUTOR=celery`, each step is a
    task on the Redis broker that any Celery worker may run (`resources/celery_execution.py`)."""
    if settings.executor is PlatformExecutor.CELERY:
        # Imported here: only this executor needs Celery, and every other process would pay its import.
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_executor_config(settings.celery_visibility_timeout_s))
    if settings.environment is PlatformEnvironment.LOCAL:
        return dg.in_process_executor
    return dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": [CODE_LOCATION_MODULE]}}}
    )


def build_resources(settings: PlatformSettings, dbt_project_dir: Path) -> dict[str, Any]:
    """The resources every asset sees, for the given environment. Asset code names resources by key
    (`io_manager`, `landing`, `warehouse`, `warehouse_io_manager`, `dbt`) and never learns which backend is
    behind them."""
    warehouse = build_warehouse(settings)
    return {
        "io_manager": ParquetIOManager(base_path=settings.staging_uri),
        "landing": BronzeLandingZone(
            root=str(settings.landing_dir),
            durable_uri=settings.landing_on_gcs,
            bronze_url=settings.postgres_url(),
            optional_env=[PG_PASSWORD_VAR],
        )
        if settings.bronze_landing
        else LandingZone(root=str(settings.landing_dir), durable_uri=settings.landing_on_gcs),
        "warehouse": warehouse,
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
        "dbt": DbtWarehouse(
            project_dir=str(dbt_project_dir),
            target=settings.dbt_target,
            dbt_executable=dbt_beside_python(),
            dbt_vars=settings.dbt_vars(),
        ),
    }


def _validate_warehouse_options(
    environment: PlatformEnvironment, options: Mapping[str, str], env: Mapping[str, str]
) -> None:
    """Refuse, naming the variable and the fix, every setting the chosen warehouse could only fail on later
    (at its first connection or load, after a run's raw step has landed): unknown variable names (typos),
    a port that is not one, a staging or landing URI that is neither a directory nor `gs://bucket[/prefix]`
    (or a relative landing directory), a missing BigQuery project or staging bucket, a credentials variable
    that is not set, a key file that is absent.
    Secrets are checked for presence only, never read."""
    known = {*PG_OPTIONS, *BQ_OPTIONS, STAGING_URI_VAR, LANDING_URI_VAR}
    unknown = sorted(name for name in options if name not in known)
    if unknown:
        raise PlatformConfigError(
            f"{', '.join(unknown)}: not a setting of the platform; the known ones are "
            f"{', '.join(sorted(known))} (and the secret {PG_PASSWORD_VAR}). Fix the name or unset it."
        )
    for variable in (STAGING_URI_VAR, LANDING_URI_VAR):
        uri = options.get(variable)
        if uri is not None and "://" in uri and not is_gcs_uri(uri):
            raise PlatformConfigError(
                f"{variable}={uri!r} is neither a local directory nor gs://bucket[/prefix]."
            )
    landing = options.get(LANDING_URI_VAR)
    if landing is not None and "://" not in landing and not Path(landing).is_absolute():
        raise PlatformConfigError(
            f"{LANDING_URI_VAR}={landing!r} is a relative path; set an absolute directory or "
            f"gs://bucket/prefix (subprocesses such as dbt run from other working directories)."
        )
    if environment is PlatformEnvironment.POSTGRES:
        port = options.get("PLATFORM_PG_PORT", "5432")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise PlatformConfigError(
                f"PLATFORM_PG_PORT={port!r} is not a TCP port (1-65535); set the PostgreSQL warehouse's "
                f"port, or unset it for 5432."
            )
    if environment is PlatformEnvironment.BIGQUERY:
        missing = [name for name in BQ_REQUIRED if not options.get(name)]
        if missing:
            raise PlatformConfigError(
                f"{ENV_VAR}=bigquery needs {', '.join(missing)} (the GCP project, and a "
                f"gs://bucket/prefix where load files are staged); set them or choose another {ENV_VAR}."
            )
        bucket = options["PLATFORM_BQ_STAGING_URI"]
        if not is_gcs_uri(bucket):
            raise PlatformConfigError(
                f"PLATFORM_BQ_STAGING_URI={bucket!r} is not gs://bucket[/prefix]: BigQuery loads Parquet "
                f"files staged on Cloud Storage."
            )
        credentials = options.get("PLATFORM_BQ_CREDENTIALS_ENV")
        if credentials is not None and not env.get(credentials, "").strip():
            raise PlatformConfigError(
                f"PLATFORM_BQ_CREDENTIALS_ENV names {credentials}, which is not set or empty: put the "
                f"service-account key JSON in {credentials}, or unset PLATFORM_BQ_CREDENTIALS_ENV for "
                f"application default credentials."
            )
        keyfile = options.get("PLATFORM_BQ_KEYFILE")
        if keyfile is not None and not Path(keyfile).expanduser().is_file():
            raise PlatformConfigError(
                f"PLATFORM_BQ_KEYFILE={keyfile!r} is not a file; point it at dbt's service-account key file, "
                f"or unset it for application default credentials."
            )
        endpoint = options.get("PLATFORM_BQ_API_ENDPOINT")
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise PlatformConfigError(
                f"PLATFORM_BQ_API_ENDPOINT={endpoint!r} is not an http(s):// URL; unset it to use Google's."
            )


def _executor(env: Mapping[str, str], environment: PlatformEnvironment) -> PlatformExecutor:
    """`PLATFORM_EXECUTOR`, refused with the fix when Celery workers could not run the steps: an unknown
    name, a missing or malformed broker, a broker setting without the Celery executor (a forgotten switch),
    or the embedded DuckDB warehouse (a file on one machine's disk that workers elsewhere cannot open)."""
    executor = _choice(
        PlatformExecutor,
        EXECUTOR_VAR,
        env.get(EXECUTOR_VAR) or PlatformExecutor.LOCAL.value,
        "executor",
        "to run a run's steps on the machine that runs the run",
    )
    celery_names = (name for name in env if name.startswith("PLATFORM_CELERY_"))
    unknown = sorted(name for name in celery_names if name not in CELERY_OPTIONS)
    if unknown:
        raise PlatformConfigError(
            f"{', '.join(unknown)}: not a setting of the platform; the Celery ones are "
            f"{', '.join(CELERY_OPTIONS)}. Fix the name or unset it."
        )
    broker = (env.get(BROKER_VAR) or "").strip()
    if executor is PlatformExecutor.LOCAL:
        if broker:
            raise PlatformConfigError(
                f"{BROKER_VAR} is set but {EXECUTOR_VAR} is not celery: set {EXECUTOR_VAR}=celery to run "
                f"steps on the Celery workers, or unset {BROKER_VAR}."
            )
        return executor
    if not broker:
        raise PlatformConfigError(
            f"{EXECUTOR_VAR}=celery needs {BROKER_VAR}, the Redis broker the workers listen on "
            f"(redis://[:password@]host:6379/0)."
        )
    problem = broker_problem(broker)
    if problem is not None:
        raise PlatformConfigError(f"{BROKER_VAR}: {problem}.")
    if environment is PlatformEnvironment.LOCAL:
        raise PlatformConfigError(
            f"{EXECUTOR_VAR}=celery needs a warehouse every worker reaches: set {ENV_VAR}=postgres or "
            f"bigquery (the local DuckDB file lives on one machine's disk)."
        )
    return executor


def _visibility_timeout(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_VISIBILITY_TIMEOUT_S
    if not raw.strip().isdigit() or int(raw) < 1:
        raise PlatformConfigError(
            f"{VISIBILITY_TIMEOUT_VAR}={raw!r} is not a whole number of seconds of at least 1; set it above "
            f"the longest step, or unset it for {DEFAULT_VISIBILITY_TIMEOUT_S}."
        )
    return int(raw)


def _instance_database(env: Mapping[str, str]) -> str | None:
    """The instance's PostgreSQL database as `deploy/dagster.yaml` names it, or None without one."""
    host = (env.get("DAGSTER_PG_HOST") or "").strip()
    if not host:
        return None
    port = (env.get("DAGSTER_PG_PORT") or "5432").strip()
    if not port.isdigit():
        raise PlatformConfigError(
            f"DAGSTER_PG_PORT={port!r} is not a TCP port: set the port of the Dagster instance's PostgreSQL"
        )
    user = (env.get("DAGSTER_PG_USER") or "dagster").strip()
    database = (env.get("DAGSTER_PG_DB") or "dagster").strip()
    credentials = f"{user}:${{DAGSTER_PG_PASSWORD}}" if env.get("DAGSTER_PG_PASSWORD") else user
    return f"postgresql+psycopg2://{credentials}@{host}:{port}/{database}"


def _bronze_landing(environment: PlatformEnvironment, raw: str | None) -> bool:
    """Whether `PLATFORM_LANDING` asks for the bronze layer, which lives in the PostgreSQL warehouse."""
    choice = (raw or "files").strip().lower() or "files"
    if choice not in LANDING_CHOICES:
        raise PlatformConfigError(
            f"{LANDING_VAR}={raw!r} is not a landing; choose {' or '.join(LANDING_CHOICES)} (files: Parquet "
            f"files under the data directory; bronze: the PostgreSQL bronze layer), or unset it for files."
        )
    if choice == "bronze" and environment is not PlatformEnvironment.POSTGRES:
        raise PlatformConfigError(
            f"{LANDING_VAR}=bronze lands in the PostgreSQL warehouse's bronze schema, but "
            f"{ENV_VAR}={environment.value}; set {ENV_VAR}=postgres (with the PLATFORM_PG_* variables), or "
            f"unset {LANDING_VAR} to land as files."
        )
    return choice == "bronze"


Choice = TypeVar("Choice", bound=StrEnum)


def _choice(kind: type[Choice], variable: str, raw: str, what: str, unset_means: str) -> Choice:
    """The member of `kind` that `raw` names (case and spaces ignored), or an error naming the variable,
    the members and what unsetting it does."""
    value = raw.strip().lower()
    try:
        return kind(value)
    except ValueError:
        supported = ", ".join(member.value for member in kind)
        raise PlatformConfigError(
            f"{variable}={value!r} is not a known {what}; supported: {supported}. "
            f"Unset {variable} {unset_means}."
        ) from None


def _poll_seconds(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_DELIVERY_POLL_SECONDS
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise PlatformConfigError(
            f"{DELIVERY_POLL_VAR}={raw!r} is not a whole number of seconds of at least 1; set it to how "
            f"often the delivery sensors should look for new files, or unset it for "
            f"{DEFAULT_DELIVERY_POLL_SECONDS}."
        )
    return seconds


def _catalog_dir(raw: str | None) -> Path | None:
    if not raw:
        return None
    directory = Path(raw).expanduser().resolve()
    if not directory.is_dir():
        raise PlatformConfigError(
            f"{CATALOG_DIR_VAR}={raw!r} is not a directory; point it at the directory that holds your "
            f"source YAML files, or unset it to use the catalog shipped in platform_assets/catalog/sources/."
        )
    return directory


def load_env_file() -> Path | None:
    """Read the `.env` file of the working directory (or its nearest parent) into the environment, never
    over a variable that is already set; the file read, None when there is none. `dagster dev` reads it
    for its code server, `dagster asset materialize` and `dg launch` did not: the code location calls this
    when it loads, and `dataplatform` when it starts, so every command sees the same variables."""
    found = find_dotenv(ENV_FILE, usecwd=True)
    if not found:
        return None
    load_dotenv(found, override=False)
    return Path(found)
