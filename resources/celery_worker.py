"""The Celery app a platform worker runs: `celery -A resources.celery_worker worker -Q dagster`.

dagster-celery's own `dagster_celery.app` reads its settings from a generated `dagster_celery_config` module
(`dagster-celery worker start -y <yaml>` writes one into `$DAGSTER_HOME`); this app is built instead from
the same environment variables as the executor the runs use (`resources/celery_execution.py`), so a worker
and the runs it serves cannot disagree on the broker or on acknowledging late. The code location's module is
imported when the worker starts, before Celery forks its pool, so no step pays the imports (seconds); each
pool process builds the definitions once, at its first step.
"""

from __future__ import annotations

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from resources.celery_execution import BROKER_VAR, celery_executor_config
from resources.environment import (
    CODE_LOCATION_MODULE,
    EXECUTOR_VAR,
    PlatformConfigError,
    PlatformExecutor,
    PlatformSettings,
    load_env_file,
)


def _worker_app_args() -> dict[str, object]:
    """The Celery app's arguments, the `{"env": ...}` references of the executor's config resolved here."""
    load_env_file()
    settings = PlatformSettings.from_env()
    if settings.executor is not PlatformExecutor.CELERY:
        raise PlatformConfigError(
            f"a Celery worker serves runs whose {EXECUTOR_VAR} is celery: set {EXECUTOR_VAR}=celery and "
            f"{BROKER_VAR} as on the machines that launch the runs."
        )
    config = celery_executor_config(settings.celery_visibility_timeout_s)
    broker = os.environ[BROKER_VAR].strip()
    executor = CeleryExecutor.for_cli(
        broker=broker, backend=broker, include=[CODE_LOCATION_MODULE], config_source=config["config_source"]
    )
    return executor.app_args()


app = make_app(_worker_app_args())
execute_plan = create_task(app)
