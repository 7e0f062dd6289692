"""The soak's three outside worlds, each real and each one a fault can reach: the shop database copied into
a PostgreSQL database (the `shop_db` source through `SHOP_DB_URL`), the demo products API served on
loopback with a switch that turns it into a 429 storm, a 5xx burst or a stall, and the soak's catalog.

The catalog is the shipped one (`platform_assets/catalog/sources/`) with two changes, both settings a team
would make, not code: `shop_db` and `shop_api` run every minute (the shipped `shop_db` runs hourly and
`shop_api` has no trigger, so nothing would reach them within a short soak), and `shop_db.customers`
reconciles deletes on every run (without `deletes:`, an incremental extraction never sees a deleted row,
and the soak deletes rows).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import yaml

from demo_shop.api_server import ProductsApiHandler, serving

CATALOG_DIR = Path(__file__).resolve().parent.parent / "platform_assets" / "catalog" / "sources"
EVERY_MINUTE = {"cron": "* * * * *", "timezone": "UTC"}
SHOP_TABLES = {
    "customers": """customer_id bigint PRIMARY KEY, email text NOT NULL, first_name text NOT NULL,
        last_name text NOT NULL, country text NOT NULL, created_at timestamp NOT NULL,
        updated_at timestamp NOT NULL""",
    "payments": """payment_id bigint PRIMARY KEY, order_id bigint NOT NULL, method text NOT NULL,
        amount double precision NOT NULL, status text NOT NULL, paid_at timestamp NOT NULL,
        updated_at timestamp NOT NULL""",
}


def write_catalog(target: Path) -> Path:
    """The shipped catalog with the soak's triggers and delete reconciliation (module docstring)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in CATALOG_DIR.glob("*.yaml"):
        source = yaml.safe_load(path.read_text())
        if source["source"] in ("shop_db", "shop_api"):
            source["schedule"] = EVERY_MINUTE
        if source["source"] == "shop_db":
            source["entities"]["customers"]["deletes"] = {"mode": "reconcile", "every_minutes": 0}
        (target / path.name).write_text(yaml.safe_dump(source, sort_keys=False))
    return target


def load_shop_database(sqlite_path: Path, dsn: str) -> None:
    """The demo world's shop database (SQLite) copied into PostgreSQL, the tables typed as a shop's are."""
    with (
        contextlib.closing(sqlite3.connect(sqlite_path)) as lite,
        contextlib.closing(psycopg2.connect(dsn)) as pg,
        pg,
        pg.cursor() as cursor,
    ):
        for table, columns in SHOP_TABLES.items():
            cursor.execute(f"CREATE TABLE {table} ({columns})")
            names = [line.split()[0] for line in columns.replace("\n", " ").split(", ")]
            rows = lite.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall()
            psycopg2.extras.execute_values(
                cursor, f"INSERT INTO {table} ({', '.join(names)}) VALUES %s", rows
            )


@dataclass
class ApiSwitch:
    """What the products API does instead of serving pages for a while: answer a status (a 429 storm, a 5xx
    burst) or stall each request for `stall_s` (longer than the client's timeout). Armed, it starts with
    the next request, so a fault always meets the extraction it is meant for."""

    status: HTTPStatus | None = None
    stall_s: float = 0.0
    seconds: float = 0.0
    until: float = 0.0
    armed: bool = False
    refused: int = 0
    fired: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, seconds: float, *, status: HTTPStatus | None = None, stall_s: float = 0.0) -> None:
        with self.lock:
            self.status, self.stall_s, self.seconds = status, stall_s, seconds
            self.armed, self.until = True, 0.0
            self.fired.clear()

    def disarm(self) -> None:
        with self.lock:
            self.armed, self.until = False, 0.0

    def current(self) -> tuple[HTTPStatus | None, float]:
        """The status to answer and the seconds to stall before answering, for one request."""
        with self.lock:
            now = time.time()
            if self.armed and not self.until:
                self.until = now + self.seconds
                self.fired.set()
            if self.armed and now < self.until:
                self.refused += 1
                return self.status, self.stall_s
            return None, 0.0


class FaultyProductsHandler(ProductsApiHandler):
    """The demo products API, except while its switch is on: then every request stalls, or gets the
    switch's status (with `Retry-After: 1` on a 429, as a rate-limited API sends)."""

    def __init__(self, *args: Any, switch: ApiSwitch, **kwargs: Any) -> None:
        self.switch = switch
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        status, stall_s = self.switch.current()
        time.sleep(stall_s)
        if status is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                super().do_GET()
            return
        body = b'{"error": "injected by the soak"}'
        self.send_response(status)
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serve_faulty_api(products_json: Path, api_key: str, switch: ApiSwitch) -> Iterator[str]:
    """Serve on a free loopback port in a daemon thread; yields the base URL, stops on exit."""
    handler = partial(
        FaultyProductsHandler, switch=switch, products_json=products_json, api_key=api_key, page_size=50
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with serving(server, "soak-products-api") as url:
        yield url


@contextlib.contextmanager
def own_filesystem(directory: Path, size_bytes: int) -> Iterator[list[Path]]:
    """`directory` on a tmpfs of its own of `size_bytes`, so that a fault can fill it without filling the
    machine's disk: yields `[directory]`, or `[]` where mounting is not allowed (not root), and then the
    disk-full fault is recorded as not injected. Unmounted on the way out."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        yield []
        return
    try:
        yield [directory]
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], capture_output=True, check=False)


@dataclass
class AlertInbox:
    """What the on-call's JSON webhook received: every (kind, incident id) an alert names (a grouped
    follow-up names several)."""

    received: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: object) -> None:
        found: list[tuple[str, str]] = []
        pending = [body]
        while pending:
            value = pending.pop()
            if isinstance(value, dict):
                if isinstance(value.get("kind"), str) and isinstance(value.get("incident_id"), str):
                    found.append((value["kind"], value["incident_id"]))
                pending.extend(value.values())
            elif isinstance(value, list):
                pending.extend(value)
        with self.lock:
            self.received.extend(found)


class AlertInboxHandler(BaseHTTPRequestHandler):
    def __init__(self, *args: Any, inbox: AlertInbox, **kwargs: Any) -> None:
        self.inbox = inbox
        super().__init__(*args, **kwargs)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.inbox.take(json.loads(self.rfile.read(length) or b"null"))
        self.send_response(HTTPStatus.NO_CONTENT)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the soak counts the alerts, it does not log them."""


@contextlib.contextmanager
def serve_alert_inbox(inbox: AlertInbox) -> Iterator[str]:
    """The webhook the deployment's `PLATFORM_ALERT_WEBHOOK_URL` names, on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(AlertInboxHandler, inbox=inbox))
    server.daemon_threads = True
    with serving(server, "soak-alert-inbox") as url:
        yield f"{url}/alerts"
