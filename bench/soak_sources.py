"""The soak's three outside worlds, each real and each one a fault can reach: the shop database copied into
a PostgreSQL database (the `shop_db` source through `SHOP_DB_URL`), the demo products API served on
loopback with a switch that turns it into a 429 storm or a 5xx burst, and the soak's catalog.

The catalog is the shipped one (`platform_assets/catalog/sources/`) with two changes, both settings a team
would make, not code: `shop_db` and `shop_api` run every minute (the shipped `shop_db` runs hourly and
`shop_api` has no trigger, so nothing would reach them within a short soak), and `shop_db.customers`
reconciles deletes on every run (without `deletes:`, an incremental extraction never sees a deleted row,
and the soak deletes rows).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import yaml

from demo_shop.api_server import ProductsApiHandler

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
    """What the products API answers instead of pages until `until` (a 429 storm, a 5xx burst)."""

    status: HTTPStatus | None = None
    until: float = 0.0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def turn(self, status: HTTPStatus, seconds: float) -> None:
        with self.lock:
            self.status, self.until = status, time.time() + seconds

    def current(self) -> HTTPStatus | None:
        with self.lock:
            if self.status is not None and time.time() < self.until:
                self.refused += 1
                return self.status
            return None


class FaultyProductsHandler(ProductsApiHandler):
    """The demo products API, except while its switch is on: then every request gets that status (with
    `Retry-After: 1` on a 429, as a rate-limited API sends)."""

    def __init__(self, *args: Any, switch: ApiSwitch, **kwargs: Any) -> None:
        self.switch = switch
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        status = self.switch.current()
        if status is None:
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
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="soak-products-api", daemon=True
    )
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
