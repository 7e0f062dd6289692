"""A job whose one step kills its own process with SIGKILL at the full batch, as the out-of-memory killer
does, for `test_healing_step_killed.py`. A module of its own, importing nothing but Dagster: the multiprocess
executor's step processes import it by file, and each would otherwise pay for the test's imports."""

import os
import signal

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob

RAW = dg.AssetKey(["raw", "killed", "orders"])
JOB = "killed_step_job"


class BatchConfig(dg.Config):
    batch_scale: float = 1.0
    """What the healing engine's `shrink_batch` passes to a raw step."""


@dg.asset(key=RAW)
def raw_orders(config: BatchConfig) -> None:
    if config.batch_scale >= 1:
        os.kill(os.getpid(), signal.SIGKILL)


def killed_step_job() -> dg.JobDefinition:
    job = dg.define_asset_job(JOB, executor_def=dg.multiprocess_executor)
    return dg.Definitions(assets=[raw_orders], jobs=[job]).resolve_job_def(JOB)


def reconstructable_job() -> ReconstructableJob:
    """By file, so a step process finds it without the test runner's `sys.path`."""
    return ReconstructableJob.for_file(__file__, killed_step_job.__name__)
