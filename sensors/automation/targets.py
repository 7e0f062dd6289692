"""What a launching trigger's run materializes: a subset of one shared job, named when the tick runs.

A schedule or sensor whose target is an asset selection makes Dagster build an implicit job for it, and
every job is part of the code location's snapshot and is resolved whenever a run looks up its job. With a
schedule and a delivery sensor per source, a catalog of 50 file sources made 107 jobs and a 26 MiB
snapshot. So schedules, delivery and change sensors all target the one job they are given (`ingestion`,
built in `platform_assets/policies/triggers.py`), and each run request names the assets of its own target,
resolved against the code location's asset graph at tick time.
"""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

SharedJob = UnresolvedAssetJobDefinition
"""What `dg.define_asset_job` returns (not exported by name from `dagster`): the job triggers share."""


class UnresolvedTargetError(RuntimeError):
    """A trigger was evaluated without the code location's definitions, so its assets cannot be named."""


def selected_keys(
    repository_def: dg.RepositoryDefinition | None, target: dg.AssetSelection, trigger: str
) -> list[dg.AssetKey]:
    """The assets of `target`, sorted. Without them a run request would fall back to the whole shared job
    (every source at once), so a missing repository is an error, not a default."""
    if repository_def is None:
        raise UnresolvedTargetError(
            f"{trigger} needs the code location's definitions to name the assets of its run (the daemon "
            f"passes them; in a test, build the context with `definitions=`)."
        )
    return sorted(target.resolve(repository_def.asset_graph))
