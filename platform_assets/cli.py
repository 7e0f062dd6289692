"""`dataplatform`: the commands a newcomer runs: generate the demo world, build the dbt manifest, and
materialize every asset on the embedded default with a summary at the end.

Heavy modules (the definitions, dbt) are imported by the command that needs them, so that `--help` and
`generate` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Iterator

import dagster as dg

from platform_assets.catalog_loader import CatalogError
from resources.environment import PlatformConfigError, PlatformSettings

DEMO_API_KEY_VAR = "SHOP_API_KEY"
DEMO_API_URL_VAR = "SHOP_API_URL"
DEMO_API_KEY = "demo-shop-key"
"""The demo API's key (also in .env for `dagster dev`): guards a loopback demo server, nothing else."""
DEMO_API_PORT = 8765
DEFAULT_SEED = 42
DEFAULT_SCALE = 1.0
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataplatform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write the demo e-commerce world into the data directory")
    demo = commands.add_parser(
        "demo", help="start afresh: generate, prepare and materialize every asset, then summarize"
    )
    for sub in (generate, demo):
        sub.add_argument("--seed", type=int, default=DEFAULT_SEED)
        sub.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    commands.add_parser("prepare", help="build the dbt manifest (dbt parse)")
    commands.add_parser(
        "run", help="prepare and materialize every asset on the current sources, then summarize"
    )
    serve = commands.add_parser(
        "serve-api", help="serve the demo shop's products REST API on loopback (for `dagster dev`)"
    )
    serve.add_argument("--port", type=int, default=DEMO_API_PORT)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (PlatformConfigError, CatalogError) as error:
        print(f"dataplatform: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    settings = PlatformSettings.from_env()
    if args.command == "generate":
        return generate_demo(settings, args.seed, args.scale)
    if args.command == "prepare":
        prepare_dbt(settings)
        return 0
    if args.command == "serve-api":
        return serve_demo_api(settings, args.port)
    if args.command == "demo":
        start_afresh(settings)
        generated = generate_demo(settings, args.seed, args.scale)
        if generated != 0:
            return generated
    prepare_dbt(settings)
    with demo_api(settings):
        return run_everything(settings)


def start_afresh(settings: PlatformSettings) -> None:
    """The demo replaces the outside world, so what the platform remembers of the old one (landed files,
    watermarks and ledgers in the run history, the warehouse) goes with it."""
    stale = [settings.landing_dir, settings.dagster_home, settings.warehouse_path]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    print(f"demo: starting afresh in {settings.data_dir} (landing, run history and warehouse reset)")


def generate_demo(settings: PlatformSettings, seed: int, scale: float) -> int:
    from demo_shop.cli import main as demo_main

    return demo_main(["--out", str(settings.sources_dir), "--seed", str(seed), "--scale", str(scale)])


@contextlib.contextmanager
def demo_api(settings: PlatformSettings) -> Iterator[None]:
    """Serve the demo products API for the length of a run, unless SHOP_API_URL points at another one."""
    if os.environ.get(DEMO_API_URL_VAR):
        yield
        return
    from demo_shop.api_server import serve_products_api
    from demo_shop.world import PRODUCTS_API

    os.environ.setdefault(DEMO_API_KEY_VAR, DEMO_API_KEY)
    with serve_products_api(settings.sources_dir / PRODUCTS_API, os.environ[DEMO_API_KEY_VAR]) as url:
        os.environ[DEMO_API_URL_VAR] = url
        try:
            yield
        finally:
            del os.environ[DEMO_API_URL_VAR]


def serve_demo_api(settings: PlatformSettings, port: int) -> int:
    from demo_shop.api_server import serve_products_api
    from demo_shop.world import PRODUCTS_API

    key = os.environ.get(DEMO_API_KEY_VAR, DEMO_API_KEY)
    with serve_products_api(settings.sources_dir / PRODUCTS_API, key, port=port) as url:
        print(f"Demo shop API at {url} (header X-API-Key: ${DEMO_API_KEY_VAR}); Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


def prepare_dbt(settings: PlatformSettings) -> None:
    from platform_assets.dbt_models import prepare_manifest

    print(f"dbt manifest: {prepare_manifest(settings.dbt_target, settings.dbt_vars())}")


def run_everything(settings: PlatformSettings) -> int:
    """Materialize every asset and run every check in one run, recorded in DAGSTER_HOME when it is set
    (so `dagster dev` on the same home shows it), else in an instance kept in the data directory. Either
    way the run history persists between invocations: it holds each source's extraction state (ledger,
    watermarks), so the next run lands only what is new."""
    from platform_assets.definitions import build_definitions
    from platform_assets.run_summary import all_green, format_summary
    from resources.environment import build_warehouse

    definitions = build_definitions(settings)
    job = definitions.resolve_implicit_global_asset_job_def()
    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        instance = dg.DagsterInstance.local_temp(tempdir=str(settings.dagster_home))
    with instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET_LOGS)
    print(format_summary(result, build_warehouse(settings)))
    return 0 if all_green(result) else 1


if __name__ == "__main__":
    sys.exit(main())
