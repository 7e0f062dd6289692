"""Deployment smoke test: the `deploy/` configuration, run as the VM runs it, picks up a file delivery on its
own and survives a daemon crash.

The other Dagster tests use the repository's `dagster.yaml` (SQLite storage, `dagster dev`). This one starts
what `deploy/systemd/` starts: the code server (`dagster code-server start` on 127.0.0.1:4266, the checkout
as its working directory), `dagster-webserver` and `dagster-daemon run` with `-w deploy/workspace.yaml`, on
an instance whose `dagster.yaml` is a copy of `deploy/dagster.yaml` with its storage on a throwaway
PostgreSQL database (`DAGSTER_PG_*`). The warehouse is the embedded DuckDB file of the demo world
(`PLATFORM_ENV=local`), so the test can read what the runs built.

Nothing is launched by the test except a first load (the state a deployment is in after its first day):
the delivery sensor is switched on over GraphQL as the UI does, and from then on the daemon alone turns a
dropped CSV into a run (land, validate, stage, dbt build). The second test SIGKILLs the daemon's whole
process group while such a run is in progress, restarts it, and checks what the deployment promises:
the run (a child of the code server) succeeds, the delivered rows are staged exactly once, and the
sensor's cursor (in PostgreSQL) neither re-launches the batch nor forgets the file.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster_processes import REPO_ROOT, DagsterServer, free_port, stop_group
from fixtures.postgres_server import PostgresCluster

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY, DEMO_API_KEY_VAR, DEMO_API_URL_VAR
from demo_shop.world import PRODUCTS_API
from resources.files.store import FileStore
from sensors.automation.delivery_sensor import parse_cursor

pytestmark = pytest.mark.slow

DEMO_SCALE = 0.1
"""1,000 orders: a dbt build of the marts in well under a minute."""
LOCATION = "self_healing_platform"
SENSOR = "shop_deliveries"
ENTITY_PATTERNS = {"orders": "orders/*.csv", "web_events": "web_events/*.jsonl.gz",
                   "order_items": "order_items/*.parquet"}  # fmt: skip
"""The shop source's entities as `platform_assets/catalog/sources/shop.yaml` declares them (the sensor's
cursor keys)."""
FIRST_LOAD = [
    "raw/shop/orders", "staged/shop/orders", "stg_shop__orders",
    "raw/shop/order_items", "staged/shop/order_items", "stg_shop__order_items", "int_order_items_summary",
    "raw/shop_db/customers", "staged/shop_db/customers", "stg_shop_db__customers",
    "raw/shop_db/payments", "staged/shop_db/payments", "stg_shop_db__payments", "int_order_payments",
    "int_customer_orders", "dim_customers", "fct_orders", "fct_daily_revenue", "fct_customer_lifetime_value",
]  # fmt: skip
"""What a delivery run of orders targets (raw orders and its downstream models) and every input those
models read: the orders run's dbt build (with its relationship tests) needs them in the warehouse."""

SERVER_DEADLINE_S = 240.0
POLL_SECONDS = 5
"""`PLATFORM_DELIVERY_POLL_SECONDS` of the deployment: its delivery sensor ticks every 5 s, not every 60."""
TICK_DEADLINE_S = 150.0
RUN_DEADLINE_S = 300.0
RECOVERY_DEADLINE_S = 240.0
POLL_S = 0.5

SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": SENSOR}
START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
SET_CURSOR = """
mutation SetCursor($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) {
    __typename
    ... on PythonError { message }
  }
}
"""
SENSOR_STATE = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        typeSpecificData { ... on SensorData { lastCursor } }
        ticks(limit: 50) { tickId status timestamp runIds runKeys skipReason error { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""
IN_PROGRESS = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]


@dataclass
class Deployment:
    """The running deployment: webserver and daemon (restartable), and where its data lives."""

    server: DagsterServer
    env: dict[str, str]
    tmp: Path
    data_dir: Path
    stack: ExitStack
    restarts: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def orders_dir(self) -> Path:
        return self.data_dir / "sources" / "files" / "shop" / "orders"

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def sensor(self) -> dict[str, Any]:
        found = self.server.graphql(SENSOR_STATE, {"selector": SELECTOR})["sensorOrError"]
        if found["__typename"] != "Sensor":
            self.server.fail(f"sensor {SENSOR} not found: {found}")
        return found["sensorState"]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        filter_ = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        found = self.server.graphql(RUNS, {"filter": filter_})["runsOrError"]
        if found["__typename"] != "Runs":
            self.server.fail(f"listing runs failed: {found}")
        return [{**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} for run in found["results"]]

    def sensor_runs(self) -> list[dict[str, Any]]:
        return self.runs({"dagster/sensor_name": SENSOR})

    def wait_for_sensor_run(self, known: set[str], deadline_s: float = TICK_DEADLINE_S) -> dict[str, Any]:
        """The first run of the delivery sensor not in `known`: launched by a daemon tick, not by the test."""
        deadline = time.monotonic() + deadline_s
        while True:
            self.server.check_running(
                deadline, f"a tick of {SENSOR} to launch a run (ticks: {self._ticks()})"
            )
            new = [run for run in self.sensor_runs() if run["runId"] not in known]
            if new:
                return new[-1]
            time.sleep(POLL_S)

    def wait_for_status(self, run_id: str, statuses: set[str], deadline_s: float = RUN_DEADLINE_S) -> str:
        deadline = time.monotonic() + deadline_s
        while True:
            self.server.check_running(deadline, f"run {run_id} to reach {sorted(statuses)}")
            status = self.server.graphql(
                "query R($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )["runOrError"]["status"]
            if status in statuses:
                return status
            time.sleep(POLL_S)

    def wait_until_idle(self, deadline_s: float = RUN_DEADLINE_S) -> None:
        """No run in progress (automation may follow a delivery run with its own): only then is the DuckDB
        file free for this process to read."""
        deadline = time.monotonic() + deadline_s
        while True:
            busy = [r for r in self.runs() if r["status"] in IN_PROGRESS]
            if not busy:
                return
            self.server.check_running(
                deadline, f"runs to finish: {[(r['runId'], r['status']) for r in busy]}"
            )
            time.sleep(POLL_S)

    def _ticks(self) -> list[tuple[str, str | None]]:
        return [
            (t["status"], t["skipReason"] or (t["error"] or {}).get("message"))
            for t in self.sensor()["ticks"][:5]
        ]

    def kill_daemon(self) -> None:
        """SIGKILL the daemon's whole process group: a crash, not a shutdown, so nothing gets to clean up or
        record anything. Run workers are the code server's children (deploy/workspace.yaml), not its."""
        daemon = self.server.processes["dagster-daemon"]
        with suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(daemon.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        pytest.fail(f"daemon process group {daemon.pid} still alive 30 s after SIGKILL", pytrace=False)

    def start_daemon(self) -> None:
        self.restarts += 1
        name = "dagster-daemon"
        log = self.tmp / f"{name}.{self.restarts}.log"
        self.server.processes[name] = self.stack.enter_context(
            ServerProcess([_bin(name), "run", "-w", "deploy/workspace.yaml"], self.env, log)
        )
        self.server.log_paths[name] = log


CODE_SERVER_PORT = 4266
"""deploy/workspace.yaml's code server port."""


def _wait_for_port(port: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(POLL_S)
    pytest.fail(
        f"the code server did not listen on 127.0.0.1:{port} within {deadline_s:.0f} s", pytrace=False
    )


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class ServerProcess:
    """One server from the repository root in a session of its own (so its code server and run workers are
    stopped with it), output to a log file; stopped by process group on exit. A class rather than
    `dagster_processes._started` so that the daemon can be started again into the same ExitStack."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command, self.env, self.log_path = command, env, log_path

    def __enter__(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self.process

    def __exit__(self, *_: object) -> None:
        stop_group(self.process)


def _deployment_env(tmp: Path, data_dir: Path, api_url: str, postgres: PostgresCluster) -> dict[str, str]:
    """What `/etc/dataplatform/platform.env` and the units give the services on the VM, pointed at this
    test's PostgreSQL database, DAGSTER_HOME and data directory."""
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    database = postgres.create_database("dagster_deploy_smoke")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DAGSTER_", "PLATFORM_", "SHOP_"))
    }
    env.update(
        DAGSTER_HOME=str(dagster_home),
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_PORT=str(postgres.port),
        DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="unused-with-trust-auth",
        DAGSTER_PG_DB=database,
        PLATFORM_ENV="local",
        PLATFORM_DATA_DIR=str(data_dir),
        PLATFORM_DELIVERY_POLL_SECONDS=str(POLL_SECONDS),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    env[DEMO_API_URL_VAR] = api_url
    env[DEMO_API_KEY_VAR] = DEMO_API_KEY
    return env


def _listing_cursor(data_dir: Path) -> str:
    """The sensor's cursor for the files already delivered (its own format: `path|size|version` per entity),
    as an operator sets it in the UI after a first load, so that the sensor reacts to new deliveries only."""
    store = FileStore(root=str(data_dir / "sources" / "files" / "shop"))
    listed = {
        name: sorted(f.ledger_key() for f in store.list(pattern)) for name, pattern in ENTITY_PATTERNS.items()
    }
    return json.dumps(listed, sort_keys=True)


def _deliver(orders_dir: Path, name: str, first_id: int, count: int) -> list[int]:
    """A new orders export (same columns as the shop's) with order ids no earlier file used; written under a
    temporary name and renamed, as a delivery tool should, so the sensor never lists half a file. The amounts
    are 0: no order_items arrive with them, and the dbt test `assert_fct_orders_amount_matches_items`
    (amount = sum of its lines) rightly fails a delivery run whose orders disagree with their lines."""
    ids = list(range(first_id, first_id + count))
    partial = orders_dir / f".{name}.part"
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "customer_id", "order_ts", "status", "currency", "amount", "updated_at"])
        for offset, order_id in enumerate(ids):
            ts = f"2026-01-{10 + offset:02d} 12:00:00"
            writer.writerow([order_id, 1 + offset, ts, "placed", "EUR", "0.00", ts])
    partial.rename(orders_dir / name)
    return ids


def _staged_counts(warehouse: Path, ids: list[int]) -> dict[int, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT order_id, count(*) FROM staged.shop__orders WHERE order_id = ANY(?) GROUP BY order_id",
            [ids],
        ).fetchall()
    return {int(order_id): n for order_id, n in rows}


def _totals(warehouse: Path) -> tuple[int, int]:
    """(staged orders, orders counted by the revenue mart): equal when the mart was rebuilt after staging."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ((staged,),) = con.execute("SELECT count(*) FROM staged.shop__orders").fetchall()
        ((mart,),) = con.execute(
            "SELECT coalesce(sum(orders), 0) FROM analytics.fct_daily_revenue"
        ).fetchall()
    return int(staged), int(mart)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresCluster, dbt_manifest: Path
) -> Iterator[Deployment]:
    """webserver + daemon on deploy/'s configuration, after a first load, with the delivery sensor on and
    its cursor at the files already loaded. Every process group is stopped on the way out."""
    tmp = tmp_path_factory.mktemp("deploy_smoke")
    data_dir = tmp / "data"
    generate_demo_world(data_dir / "sources", seed=5, scale=DEMO_SCALE)
    with ExitStack() as stack:
        api_url = stack.enter_context(serve_products_api(data_dir / "sources" / PRODUCTS_API, DEMO_API_KEY))
        env = _deployment_env(tmp, data_dir, api_url, postgres_server)
        # dataplatform-code-server.service: the code location over gRPC, where deploy/workspace.yaml finds it.
        code_server = [
            _bin("dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(CODE_SERVER_PORT),
            "-m", "platform_assets.definitions", "-a", "defs", "-d", str(REPO_ROOT),
        ]  # fmt: skip
        stack.enter_context(ServerProcess(code_server, env, tmp / "dagster-code-server.log"))
        _wait_for_port(CODE_SERVER_PORT, SERVER_DEADLINE_S)
        port = free_port()
        webserver_log = tmp / "dagster-webserver.log"
        webserver = stack.enter_context(
            ServerProcess(
                [
                    _bin("dagster-webserver"),
                    "-w",
                    "deploy/workspace.yaml",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                env,
                webserver_log,
            )
        )
        server = DagsterServer(
            {"dagster-webserver": webserver}, f"http://127.0.0.1:{port}", {"dagster-webserver": webserver_log}
        )
        deployment = Deployment(server, env, tmp, data_dir, stack)
        deployment.start_daemon()
        server.wait_until_loaded(SERVER_DEADLINE_S)
        first_load = server.launch(FIRST_LOAD)
        status = deployment.wait_for_status(first_load, {"SUCCESS", "FAILURE", "CANCELED"})
        if status != "SUCCESS":
            server.fail(f"first load {first_load} ended {status}")
        state = deployment.sensor()
        if (
            state["status"] != "RUNNING"
        ):  # STOPPED by default with PLATFORM_ENV=local (platform_assets/policies/triggers.py)
            cursor = server.graphql(SET_CURSOR, {"selector": SELECTOR, "cursor": _listing_cursor(data_dir)})
            if cursor["setSensorCursor"]["__typename"] != "Sensor":
                server.fail(f"setting the cursor failed: {cursor}")
            started = server.graphql(START_SENSOR, {"selector": SELECTOR})["startSensor"]
            if started["__typename"] != "Sensor" or started["sensorState"]["status"] != "RUNNING":
                server.fail(f"starting {SENSOR} failed: {started}")
        deployment.notes.append(f"sensor status before the test: {state['status']}")
        deployment.wait_until_idle()
        yield deployment


def test_delivery_is_landed_staged_and_built_by_the_daemon(deployment: Deployment) -> None:
    """A CSV dropped into the delivery directory becomes, through the daemon's sensor tick alone, a run that
    lands, validates and stages it and rebuilds the marts."""
    staged_before, _ = _totals(deployment.warehouse)
    known = {run["runId"] for run in deployment.sensor_runs()}
    assert not known, f"the sensor launched runs before any new delivery: {known}"
    new_ids = _deliver(deployment.orders_dir, "orders_90001.csv", 900_001, 3)

    run = deployment.wait_for_sensor_run(known)
    status = deployment.wait_for_status(run["runId"], {"SUCCESS", "FAILURE", "CANCELED"})
    assert status == "SUCCESS", deployment.server.log_tail()
    assert run["tags"]["platform/trigger"] == "delivery"
    assert run["tags"]["dagster/run_key"].startswith("shop.orders:")
    deployment.wait_until_idle()

    assert _staged_counts(deployment.warehouse, new_ids) == dict.fromkeys(new_ids, 1)
    staged_after, mart_orders = _totals(deployment.warehouse)
    assert staged_after == staged_before + len(new_ids)
    assert mart_orders == staged_after, "the delivery run did not rebuild analytics.fct_daily_revenue"


def test_daemon_killed_mid_run_the_run_recovers_and_no_tick_is_lost_or_repeated(
    deployment: Deployment,
) -> None:
    """SIGKILL the daemon while a delivery run is in progress, start it again: the run, a child of the code
    server, finishes; the restarted daemon reads the sensor cursor back from Postgres and neither launches
    the batch again nor skips a file; the delivery is staged exactly once."""
    known = {run["runId"] for run in deployment.sensor_runs()}
    new_ids = _deliver(deployment.orders_dir, "orders_90002.csv", 900_101, 4)
    run = deployment.wait_for_sensor_run(known)
    run_key = run["tags"]["dagster/run_key"]
    deployment.wait_for_status(run["runId"], {"STARTED"}, deadline_s=120)
    time.sleep(3)  # into the run's steps, not just its start
    deployment.kill_daemon()
    killed_at = time.time()
    deployment.start_daemon()

    deadline = time.monotonic() + RECOVERY_DEADLINE_S
    while True:
        runs = deployment.sensor_runs()
        attempts = [
            r
            for r in runs
            if r["runId"] == run["runId"] or r["tags"].get("dagster/root_run_id") == run["runId"]
        ]
        finished = {r["runId"]: r["status"] for r in attempts}
        if "SUCCESS" in finished.values():
            break
        if time.monotonic() > deadline:
            deployment.server.fail(
                f"after the daemon was killed, run {run['runId']} and its retries never succeeded: {finished}"
            )
        deployment.server.check_running(deadline, "the killed run to recover")
        time.sleep(POLL_S)
    # A tick after the restart, so that the restarted daemon has read the cursor back from Postgres.
    deadline = time.monotonic() + TICK_DEADLINE_S
    while not [t for t in deployment.sensor()["ticks"] if t["timestamp"] > killed_at]:
        deployment.server.check_running(deadline, "a sensor tick after the daemon restart")
        time.sleep(POLL_S)
    deployment.wait_until_idle()

    launched_for_batch = [r for r in deployment.sensor_runs() if r["tags"].get("dagster/run_key") == run_key]
    originals = [r for r in launched_for_batch if "dagster/parent_run_id" not in r["tags"]]
    assert len(originals) == 1, f"the batch was launched again by the sensor: {launched_for_batch}"
    new_runs = [
        r for r in deployment.sensor_runs() if r["runId"] not in known and r not in launched_for_batch
    ]
    assert not new_runs, f"runs launched after the restart for no new file: {new_runs}"
    seen = parse_cursor(deployment.sensor()["typeSpecificData"]["lastCursor"]).seen["orders"]
    assert any(key.split("|")[0].endswith("orders_90002.csv") for key in seen), seen
    assert _staged_counts(deployment.warehouse, new_ids) == dict.fromkeys(new_ids, 1)
    staged, mart_orders = _totals(deployment.warehouse)
    assert mart_orders == staged
