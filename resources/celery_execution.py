"""Steps of one run spread over Celery workers on other machines: dagster-celery's executor, Redis the broker.

The run worker submits each step as a Celery task to the queue `dagster`; any worker (`celery -A
resources.celery_worker worker`, deploy/README.md) takes it, loads the code location and runs the step
against the same Dagster instance (PostgreSQL). The executor and the workers are built from the one
configuration below, so that both sides agree on what a lost worker means:

- `task_acks_late`: a task is acknowledged when its step has finished, not when a worker took it. A worker
  that dies mid-step (SIGKILL, a lost machine) leaves the message unacknowledged in Redis, and Redis hands
  it to another worker once the visibility timeout has passed since it was taken: the step runs again
  there. Steps are written to be re-run (landing resumes from its checkpoint, loads are atomic and keyed),
  so nothing is lost or doubled.
- `task_reject_on_worker_lost`: a step process killed under a living worker (out of memory) is
  re-queued at once instead of being recorded as failed.
- `visibility_timeout`: how long Redis waits before it gives an unacknowledged task to another worker. It
  must exceed the longest step: a step still running after it is handed out a second time (Celery's Redis
  transport has no heartbeat). It is also how long a run waits before a lost worker's step runs again (plus
  up to `RESTORE_SWEEP_S`, how often the workers look for such tasks).

The broker URL may hold a password: the executor reads it from the environment when the run starts
(`{"env": ...}`), so it is never part of the job's definition or a run's configuration, and errors print it
with the password masked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dagster_celery.defaults import broker_transport_options

BROKER_VAR = "PLATFORM_CELERY_BROKER"
VISIBILITY_TIMEOUT_VAR = "PLATFORM_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_VISIBILITY_TIMEOUT_S = 3600
"""Celery's own default for Redis: an hour, longer than any step of the platform is expected to take."""
RESTORE_SWEEP_S = 5
BROKER_SCHEMES = ("redis", "rediss")


def celery_executor_config(visibility_timeout_s: int) -> dict[str, Any]:
    """The config of dagster-celery's `celery_executor`, for the run worker (as `{"env": ...}` references)
    and for the workers (resolved by `celery_worker`): one Redis for broker and results."""
    return {
        "broker": {"env": BROKER_VAR},
        "backend": {"env": BROKER_VAR},
        "config_source": {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "broker_transport_options": {
                **broker_transport_options,
                "visibility_timeout": visibility_timeout_s,
                # Every worker looks for tasks past their visibility timeout every few seconds; kombu's
                # default (every 10th sweep of 10 s) would add up to 100 s to a lost worker's recovery.
                "unacked_restore_interval": RESTORE_SWEEP_S,
                "unacked_restore_throttle": 1,
            },
        },
    }


def broker_problem(url: str) -> str | None:
    """Why `url` cannot be the broker (None when it can): only Redis is installed and documented."""
    parts = urlsplit(url)
    if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
        return f"{masked(url)!r} is not a redis://[:password@]host[:port][/db] (or rediss://) URL"
    try:
        parts.port  # noqa: B018  (parsing the port is the check)
    except ValueError:
        return f"{masked(url)!r} has a port that is not a number"
    return None


def masked(url: str) -> str:
    """The URL with its password replaced by `***`, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
