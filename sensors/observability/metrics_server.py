"""The metrics endpoint Prometheus scrapes: `python -m sensors.observability.metrics_server --port 9464` (or
the `dataplatform-metrics` command), one small process beside the webserver and the daemon.

Why its own process: the webserver and the daemon are Dagster's, and neither serves custom HTTP routes; a
process that opens the same instance (`$DAGSTER_HOME/dagster.yaml`) and the same data directory
(`PLATFORM_DATA_DIR`, as `resources/environment.py` reads it) sees exactly what they see, and can be
restarted without touching runs. It loads no code location, so it starts in a second or two and keeps
answering when the code location fails to load, which is when it is needed most.

Bound to 127.0.0.1 by default: metrics name assets and sources; expose them to a remote Prometheus on a
private address only (`--host`).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server

from resources.environment import PlatformSettings
from sensors.observability.metrics import PlatformCollector

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
HEALING_STORE_FILE = ("ops", "healing.sqlite")
"""Under the data directory, as the code location places the ledger (`platform_assets/definitions.py`)."""


def build_registry(instance: dg.DagsterInstance, healing_store_path: Path) -> CollectorRegistry:
    """A registry holding only the platform's collector (no process metrics of this small server)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(instance, healing_store_path))
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serves `/metrics` on a daemon thread; port 0 picks a free port (`server.server_port`)."""
    return start_http_server(port, addr=host, registry=registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataplatform-metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--healing-store", type=Path, default=None, help="the ledger (default <data dir>/ops/healing.sqlite)"
    )
    args = parser.parse_args(argv)
    store = args.healing_store or PlatformSettings.from_env().data_dir.joinpath(*HEALING_STORE_FILE)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with dg.DagsterInstance.get() as instance:
        server, thread = serve(build_registry(instance, store), args.host, args.port)
        print(f"dataplatform-metrics: serving http://{args.host}:{server.server_port}/metrics", flush=True)
        stop.wait()
        server.shutdown()
        thread.join(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
