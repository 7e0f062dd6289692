"""The demo shop's `dataplatform` commands and run service, joined to the platform's CLI through entry
points (`pyproject.toml`), so the platform never imports the simulated outside world.

- `dataplatform generate`: write the demo e-commerce world into the data directory's `sources/`.
- `dataplatform demo`: start afresh (landing, run history and warehouse reset), generate, prepare and
  materialize every asset with the demo API served, then summarize.
- `dataplatform serve-api`: the products REST API on loopback, for `dagster dev`.
- run service: `dataplatform run` serves the products API for the length of the run, unless
  `SHOP_API_URL` points at another one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import threading
from collections.abc import Iterator

from demo_shop.api_server import serve_products_api
from demo_shop.cli import main as generate_main
from demo_shop.world import PRODUCTS_API
from platform_assets.cli import prepare_and_run
from resources.environment import PlatformSettings

DEMO_API_KEY_VAR = "SHOP_API_KEY"
DEMO_API_URL_VAR = "SHOP_API_URL"
DEMO_API_KEY = "demo-shop-key"
"""The demo API's key (also in .env for `dagster dev`): guards a loopback demo server, nothing else."""
DEMO_API_PORT = 8765
DEFAULT_SEED = 42
DEFAULT_SCALE = 1.0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the demo's commands to `dataplatform` (entry point `dataplatform.commands`)."""
    generate = commands.add_parser("generate", help="write the demo e-commerce world into the data directory")
    generate.set_defaults(handler=_generate)
    demo = commands.add_parser(
        "demo", help="start afresh: generate, prepare and materialize every asset, then summarize"
    )
    demo.set_defaults(handler=_demo)
    for sub in (generate, demo):
        sub.add_argument("--seed", type=int, default=DEFAULT_SEED)
        sub.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    serve = commands.add_parser(
        "serve-api", help="serve the demo shop's products REST API on loopback (for `dagster dev`)"
    )
    serve.add_argument("--port", type=int, default=DEMO_API_PORT)
    serve.set_defaults(handler=_serve)


def _generate(args: argparse.Namespace, settings: PlatformSettings) -> int:
    return generate_demo(settings, args.seed, args.scale)


def _demo(args: argparse.Namespace, settings: PlatformSettings) -> int:
    start_afresh(settings)
    generated = generate_demo(settings, args.seed, args.scale)
    if generated != 0:
        return generated
    with demo_api(settings):
        return prepare_and_run(settings)


def _serve(args: argparse.Namespace, settings: PlatformSettings) -> int:
    key = os.environ.get(DEMO_API_KEY_VAR, DEMO_API_KEY)
    with serve_products_api(settings.sources_dir / PRODUCTS_API, key, port=args.port) as url:
        print(f"Demo shop API at {url} (header X-API-Key: ${DEMO_API_KEY_VAR}); Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


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
    return generate_main(["--out", str(settings.sources_dir), "--seed", str(seed), "--scale", str(scale)])


@contextlib.contextmanager
def demo_api(settings: PlatformSettings) -> Iterator[None]:
    """Serve the demo products API for the length of a run, unless SHOP_API_URL points at another one
    (entry point `dataplatform.run_services`)."""
    if os.environ.get(DEMO_API_URL_VAR):
        yield
        return
    os.environ.setdefault(DEMO_API_KEY_VAR, DEMO_API_KEY)
    with serve_products_api(settings.sources_dir / PRODUCTS_API, os.environ[DEMO_API_KEY_VAR]) as url:
        os.environ[DEMO_API_URL_VAR] = url
        try:
            yield
        finally:
            del os.environ[DEMO_API_URL_VAR]
