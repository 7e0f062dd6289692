"""`dataplatform`: build the dbt manifest and materialize every asset (or a selection) with a summary at
the end; replay an entity's quarantine; reset incremental entities' watermark, or backfill a range of them.

`run` validates the source catalog before dbt parses (seconds to tens of seconds), so a broken catalog
is reported at once. Its exit code: 0 when every step succeeded and no error-severity check failed
(warn-severity failures are listed in the summary; `--strict` makes them fail the run too), 1 otherwise,
2 for a configuration error (environment, catalog).

Commands from other installed packages join through the `dataplatform.commands` entry point group (the
demo shop adds `generate`, `demo` and `serve-api` that way), and services a package must keep running for
the length of `dataplatform run` (the demo's products API) through `dataplatform.run_services`. So the
platform names no package beyond it, and a deployment without the demo has no demo commands.

Heavy modules (the definitions, dbt) are imported by the command that needs them, so that `--help`
answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

import dagster as dg

from platform_assets.catalog.loader import CatalogError
from resources.environment import PlatformConfigError, PlatformSettings, load_env_file

COMMANDS_GROUP = "dataplatform.commands"
"""Entry points `register(commands)`: add subparsers, each with `handler=fn(args, settings) -> int`."""
RUN_SERVICES_GROUP = "dataplatform.run_services"
"""Entry points `service(settings)`: a context manager kept open for the length of `dataplatform run`."""
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

Handler = Callable[[argparse.Namespace, PlatformSettings], int]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataplatform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="build the dbt manifest (dbt parse)").set_defaults(handler=_prepare)
    run = commands.add_parser(
        "run", help="prepare and materialize every asset on the current sources, then summarize"
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a warn-severity check fails, too (default: report it)",
    )
    run.add_argument(
        "--select",
        action="append",
        metavar="SELECTION",
        help="materialize only these (repeatable): SOURCE, SOURCE.ENTITY (raw + staged), dbt:<dbt selection> "
        "(marts, e.g. dbt:fct_orders+), or a Dagster asset selection (e.g. 'key:staged/shop/*+'); "
        "their checks run with them",
    )
    run.set_defaults(handler=_run)
    replay_command = commands.add_parser(
        "replay",
        help="re-stage one entity in full after a rule was relaxed or a source or check fixed, releasing the "
        "quarantined rows it now accepts",
    )
    replay_command.add_argument("entity", metavar="SOURCE.ENTITY", help="e.g. shop.orders")
    replay_command.set_defaults(handler=_replay)
    reset_command = commands.add_parser(
        "reset",
        help="move incremental entities' watermark back (or forget it), so their next run re-extracts the "
        "range; recorded in each raw asset's history, undoable",
    )
    reset_command.add_argument(
        "entities", nargs="+", metavar="SOURCE[.ENTITY]", help="e.g. shop_db.customers"
    )
    reset_command.add_argument(
        "--since",
        help="re-extract rows whose cursor is at or after this (ISO timestamp or key); default: all",
    )
    reset_command.add_argument(
        "--undo", action="store_true", help="restore the state from before the last reset"
    )
    reset_command.add_argument("--by", required=True, help="who asks (kept in the history)")
    reset_command.add_argument("--reason", required=True, help="why (kept in the history)")
    reset_command.set_defaults(handler=_reset)
    backfill_command = commands.add_parser(
        "backfill",
        help="re-extract a range of incremental entities (cursor from --since up to --until) without moving "
        "their watermark, and rebuild what depends on them; the range is upserted, never duplicated",
    )
    backfill_command.add_argument(
        "entities", nargs="+", metavar="SOURCE[.ENTITY]", help="e.g. shop_db.customers"
    )
    backfill_command.add_argument("--since", help="ISO timestamp or key, included; default: the start")
    backfill_command.add_argument("--until", help="ISO timestamp or key, included; default: now")
    backfill_command.set_defaults(handler=_backfill)
    for plugin in entry_points(group=COMMANDS_GROUP):
        plugin.load()(commands)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    load_env_file()
    try:
        return handler(args, PlatformSettings.from_env())
    except (PlatformConfigError, CatalogError) as error:
        print(f"dataplatform: error: {error}", file=sys.stderr)
        return 2


def _prepare(args: argparse.Namespace, settings: PlatformSettings) -> int:
    prepare_dbt(settings)
    return 0


def _run(args: argparse.Namespace, settings: PlatformSettings) -> int:
    with run_services(settings):
        return prepare_and_run(settings, strict=args.strict, select=args.select)


def prepare_and_run(
    settings: PlatformSettings, *, strict: bool = False, select: list[str] | None = None
) -> int:
    """Check the catalog, build the dbt manifest, materialize everything (or what `select` says:
    `platform_assets/selection.py`). Called inside the run services: they may set what the catalog's
    `${SECRET}` references need (the demo's API key)."""
    check_catalog(settings)
    prepare_dbt(settings)
    return run_everything(settings, strict=strict, select=select)


def check_catalog(settings: PlatformSettings) -> None:
    """Raise the catalog's errors (`CatalogError`) before `dbt parse` is started, which takes from seconds
    to half a minute: the definitions load the catalog again, a matter of milliseconds."""
    from platform_assets.catalog.loader import CATALOG_DIR, load_catalog

    load_catalog(settings.catalog_dir or CATALOG_DIR, variables=settings.catalog_vars())


def _replay(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from platform_assets.definitions import build_definitions
    from platform_assets.keys import staged_key
    from platform_assets.quality.quarantine import RELEASED, SUPERSEDED

    source, _, entity = str(args.entity).partition(".")
    key = staged_key(source, entity)
    with run_services(settings):
        check_catalog(settings)
        prepare_dbt(settings)
        definitions = build_definitions(settings)
        if not entity or not definitions.resolve_asset_graph().has(key):
            print(f"dataplatform: error: no staged entity {args.entity!r} in the catalog", file=sys.stderr)
            return 2
        with run_instance(settings) as instance:
            result = replay(definitions, instance, key)
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        released, superseded = (metadata.get(f"quarantine/{s}") for s in (RELEASED, SUPERSEDED))
        print(
            f"{key.to_user_string()}: {released.value if released else 0} quarantined row(s) released, "
            f"{superseded.value if superseded else 0} superseded; "
            f"{metadata['rows_quarantined'].value} still held back"
        )
    return 0 if result.success else 1


def _reset(args: argparse.Namespace, settings: PlatformSettings) -> int:
    """Runs the `reset_extraction` job (`platform_assets/factories/reset_job.py`) in the run instance."""
    from platform_assets.definitions import build_definitions
    from platform_assets.factories.reset_job import RESET_JOB_NAME

    check_catalog(settings)
    job = build_definitions(settings).resolve_job_def(RESET_JOB_NAME)
    config = {
        "entities": list(args.entities),
        "since": args.since,
        "undo": bool(args.undo),
        "requested_by": args.by,
        "reason": args.reason,
    }
    with run_instance(settings) as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={**QUIET_LOGS, "ops": {"reset_extraction_state": {"config": config}}},
        )
    if not result.success:
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        error = failure.step_failure_data.error
        cause = error.cause if error is not None and error.cause is not None else error
        print(f"dataplatform: error: {cause.message.strip() if cause else 'reset failed'}", file=sys.stderr)
        return 2
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        print(
            f"{event.asset_key.to_user_string()}: watermark {metadata['watermark_before'].value} -> "
            f"{metadata['watermark_after'].value}; its next run extracts from there"
        )
    return 0


def _backfill(args: argparse.Namespace, settings: PlatformSettings) -> int:
    """One run of the entities' raw assets, each with the range as its config (`RawConfig.backfill_*`),
    and of everything downstream of them: staged upserts the range, the marts are rebuilt."""
    from platform_assets.catalog.loader import CATALOG_DIR, load_catalog
    from platform_assets.ingestion.backfill import backfill_range
    from platform_assets.ingestion.reset import ResetError, entities_named
    from platform_assets.keys import raw_key

    catalog = load_catalog(settings.catalog_dir or CATALOG_DIR, variables=settings.catalog_vars())
    try:
        items = entities_named(catalog, args.entities)
        for item in items:
            backfill_range(item, args.since, args.until)
    except ResetError as error:
        print(f"dataplatform: error: {error}", file=sys.stderr)
        return 2
    config = {"backfill_since": args.since, "backfill_until": args.until}
    keys = [raw_key(item.source_name, item.name) for item in items]
    with run_services(settings):
        prepare_dbt(settings)
        return run_everything(
            settings,
            select=[f"key:{key.to_user_string()}+" for key in keys],
            asset_config={key: config for key in keys},
        )


def replay(
    definitions: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey
) -> dg.ExecuteInProcessResult:
    """Materialize the staged asset `key` alone, rebuilt in full (`StagingConfig.replay`): every landed row
    is judged again by the rules as they are now, and the quarantine marks what they now accept
    `released`. Raw is not extracted again: a fixed source delivers anew, and its next run supersedes."""
    job = definitions.resolve_implicit_global_asset_job_def()
    op_name = definitions.resolve_assets_def(key).node_def.name
    return job.execute_in_process(
        instance=instance,
        asset_selection=[key],
        raise_on_error=False,
        run_config={**QUIET_LOGS, "ops": {op_name: {"config": {"replay": True}}}},
    )


@contextlib.contextmanager
def run_services(settings: PlatformSettings) -> Iterator[None]:
    """Every installed package's services for this run, opened in entry-point order, closed in reverse."""
    with contextlib.ExitStack() as stack:
        for plugin in entry_points(group=RUN_SERVICES_GROUP):
            service: Callable[[PlatformSettings], contextlib.AbstractContextManager[None]] = plugin.load()
            stack.enter_context(service(settings))
        yield


def prepare_dbt(settings: PlatformSettings) -> None:
    from platform_assets.factories.dbt_models import prepare_manifest

    print(f"dbt manifest: {prepare_manifest(settings.dbt_target, settings.dbt_vars())}")


def run_everything(
    settings: PlatformSettings,
    *,
    strict: bool = False,
    select: list[str] | None = None,
    asset_config: Mapping[dg.AssetKey, Mapping[str, Any]] | None = None,
) -> int:
    """Materialize every asset (or those `select` names) and run their checks in one run, recorded in
    `run_instance`: its history holds each source's extraction state (ledger, watermarks), so the next run
    lands only what is new. `asset_config`: the run config of some assets (a backfill's range). The exit
    code: `run_summary.all_green`; 2 for a selection of nothing."""
    from platform_assets.definitions import build_definitions
    from platform_assets.run_summary import all_green, format_summary
    from platform_assets.selection import SelectionError, selected_keys
    from resources.environment import build_warehouse

    definitions = build_definitions(settings)
    try:
        keys = sorted(selected_keys(definitions, select)) if select else None
    except SelectionError as error:
        print(f"dataplatform: error: {error}", file=sys.stderr)
        return 2
    job = definitions.resolve_implicit_global_asset_job_def()
    ops = {
        definitions.resolve_assets_def(key).node_def.name: {"config": dict(config)}
        for key, config in (asset_config or {}).items()
    }
    with run_instance(settings) as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={**QUIET_LOGS, "ops": ops},
            asset_selection=keys,
        )
    print(format_summary(result, build_warehouse(settings), strict=strict))
    return 0 if all_green(result, strict=strict) else 1


def run_instance(settings: PlatformSettings) -> dg.DagsterInstance:
    """The instance runs are recorded in: DAGSTER_HOME's when it is set (so `dagster dev` on the same home
    shows them), else one kept in the data directory; either way the run history persists between
    invocations, and with it each source's extraction state and each entity's staging history."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(tempdir=str(settings.dagster_home))


if __name__ == "__main__":
    sys.exit(main())
