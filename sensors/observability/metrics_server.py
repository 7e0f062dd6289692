"""The metrics endpoint Prometheus scrapes: `python -m sensors.observability.metrics_server --port 9464` (or
the `dataplatform-metrics` command), one small process beside the webserver and the daemon. It serves
`/metrics` (Prometheus text) and `/health` (JSON, HTTP 200 when every check passes, 503 otherwise; the
checks are in `sensors/observability/health.py`).

Why its own process: the webserver and the daemon are Dagster's, and neither serves custom HTTP routes; a
process that opens the same instance (`$DAGSTER_HOME/dagster.yaml`) and the same data directory
(`PLATFORM_DATA_DIR`, as `resources/environment.py` reads it) sees exactly what they see, and can be
restarted without touching runs. It loads no code location, so it starts in a second or two and keeps
answering when the code location fails to load or the daemon dies, which is when it is needed most: it
asks the code server over gRPC (the servers of `--workspace`) instead.

Bound to 127.0.0.1 by default: metrics name assets and sources; expose them to a remote Prometheus on a
private address only (`--host`).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import dagster as dg
from prometheus_client import CollectorRegistry, make_wsgi_app

from resources.environment import PlatformSettings
from resources.state.database import StateLocation
from sensors.observability.health import CodeServer, HealthProbe, HealthThresholds, code_servers
from sensors.observability.metrics import PlatformCollector

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
"""Under the data directory, as the code location places the ledger (`platform_assets/definitions.py`)."""
DEFAULT_WORKSPACE = Path("deploy/workspace.yaml")
"""The workspace the daemon and the webserver load on the VM, relative to the app directory (the units'
working directory)."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def build_registry(
    instance: dg.DagsterInstance,
    healing_store: StateLocation,
    data_dir: Path,
    *,
    servers: list[CodeServer] | None = None,
) -> CollectorRegistry:
    """A registry holding only the platform's collector (no process metrics of this small server)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(instance, healing_store, data_dir, code_servers=servers))
    return registry


def build_app(
    registry: CollectorRegistry, health: HealthProbe | None = None
) -> Callable[..., Iterable[bytes]]:
    """`/health` answered by the probe (404 without one), everything else by Prometheus' exposition."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/") != "/health":
            return metrics(environ, start_response)
        if health is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no health probe configured\n"]
        report = health.report()
        body = json.dumps(report, indent=2, sort_keys=True, default=str).encode() + b"\n"
        status = "200 OK" if report["healthy"] else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow `/health` (a hung code server) never blocks a scrape."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape in the journal."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(
    registry: CollectorRegistry, host: str, port: int, health: HealthProbe | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Serves `/metrics` and `/health` on a daemon thread; port 0 picks a free port (`server.server_port`)."""
    server = make_server(
        host, port, build_app(registry, health), _ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataplatform-metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--healing-store",
        default=None,
        help="the ledger: a SQLite file or a database URL (default: the platform's, from its environment)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=DEFAULT_WORKSPACE,
        help=f"workspace file whose gRPC code servers are checked (default {DEFAULT_WORKSPACE})",
    )
    parser.add_argument(
        "--heartbeat-max-age",
        type=float,
        default=HealthThresholds.heartbeat_max_age_s,
        help="seconds without a daemon heartbeat before /health fails",
    )
    parser.add_argument(
        "--sensor-tick-max-age",
        type=float,
        default=HealthThresholds.sensor_tick_max_age_s,
        help="seconds since a running sensor's last tick before /health fails",
    )
    parser.add_argument(
        "--disk-min-free",
        type=float,
        default=HealthThresholds.disk_min_free_ratio,
        help="free fraction of the data directory's filesystem below which /health fails",
    )
    args = parser.parse_args(argv)
    settings = PlatformSettings.from_env()
    data_dir = settings.data_dir
    store = args.healing_store or settings.healing_store
    servers: list[CodeServer] | None
    try:
        servers, workspace_error = code_servers(args.workspace), ""
    except (OSError, ValueError, KeyError) as error:  # reported by /health, never fatal: metrics go on
        servers, workspace_error = None, f"workspace {args.workspace}: {type(error).__name__}: {error}"
        print(f"dataplatform-metrics: {workspace_error}", flush=True)
    thresholds = HealthThresholds(
        heartbeat_max_age_s=args.heartbeat_max_age,
        sensor_tick_max_age_s=args.sensor_tick_max_age,
        disk_min_free_ratio=args.disk_min_free,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with dg.DagsterInstance.get() as instance:
        registry = build_registry(instance, store, data_dir, servers=servers)
        health = HealthProbe(instance, store, data_dir, servers, workspace_error, thresholds)
        server, thread = serve(registry, args.host, args.port, health)
        print(
            f"dataplatform-metrics: serving http://{args.host}:{server.server_port}/metrics and /health",
            flush=True,
        )
        stop.wait()
        server.shutdown()
        thread.join(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
