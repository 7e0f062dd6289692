"""The deployment of `deploy/`, installed into a throwaway root and its four systemd units started by their
exact `ExecStart`, against a PostgreSQL instance on loopback: shared by `tests/test_deployment_smoke.py`
(which checks it) and `bench/soak.py` (which runs faults against it for minutes), so the two exercise the
one installation procedure and cannot drift apart.

install.sh runs twice into the root (`INSTALL_ROOT`, as the invoking user: no packages, no system user, no
systemctl): the first run creates the environment file from the template and stops at its CHANGE_ME
values, as on a VM; the second, with the file filled in (a throwaway database of the given PostgreSQL for
the instance, the embedded DuckDB warehouse, the delivery sensors polling every 5 s, the demo products API
the caller serves, and whatever the caller adds), builds the dbt manifest and migrates the instance. Then
the units are started the way systemd would: each unit's exact `ExecStart` (install.sh moved its paths
under the root), its `EnvironmentFile`, `Environment` and `WorkingDirectory`, and systemd's default PATH,
nothing from the caller's own environment. Only the loopback ports are changed (4266, 3000, 9464, here and
in the installed `deploy/workspace.yaml`), so a developer's own servers or a parallel test cannot collide.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster_processes import REPO_ROOT, DagsterServer, free_port, stop_groups
from fixtures.postgres_server import PostgresCluster
from systemd_units import service_entries

from demo_shop import generate_demo_world
from demo_shop.commands import DEMO_API_KEY, DEMO_API_KEY_VAR, DEMO_API_URL_VAR
from resources.files.store import FileStore

UNITS = ("dataplatform-code-server", "dataplatform-webserver", "dataplatform-daemon", "dataplatform-metrics")
"""In the order systemd starts them (webserver and daemon are `After=` the code server)."""
DAEMON_UNIT = "dataplatform-daemon"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""What a systemd service gets as PATH: not the virtualenv's bin."""
UNIT_PORTS = {"4266": "code_server", "3000": "webserver", "9464": "metrics"}
INSTALL_DEADLINE_S = 300.0

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


def fill_env_file(
    path: Path, postgres: PostgresCluster, api_url: str, extra: dict[str, str] | None = None
) -> None:
    """What an operator writes over the CHANGE_ME values (the instance on a throwaway database, the embedded
    DuckDB warehouse, so no warehouse server is needed) and into the optional variables the deliveries
    need (uncommented): the delivery sensors' poll interval and the demo products API the caller serves, and
    the caller's `extra` variables."""
    values = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port), "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth", "DAGSTER_PG_DB": postgres.create_database(),
        "PLATFORM_ENV": "local", "PLATFORM_PG_PASSWORD": "unused-with-duckdb",
        "PLATFORM_DELIVERY_POLL_SECONDS": str(POLL_SECONDS), DEMO_API_URL_VAR: api_url,
        DEMO_API_KEY_VAR: DEMO_API_KEY, **(extra or {}),
    }  # fmt: skip
    text = path.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"^#?{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"{key} is not in the template"
    assert not re.search(r"^[^#]*CHANGE_ME", text, flags=re.MULTILINE), "a value is left to fill in"
    path.write_text(text)


@dataclass(frozen=True)
class Unit:
    """How systemd would start one installed unit: its ExecStart (ports moved), environment and directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


def unit_from_file(unit_file: Path, ports: dict[str, int], root: Path, home: Path) -> Unit:
    unit = service_entries(unit_file)
    assert unit["Type"] == ["simple"]
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": str(home)}
    for path in unit["EnvironmentFile"]:
        env.update(env_file_values(Path(path)))
    env.update(dict(entry.split("=", 1) for entry in unit["Environment"]))
    (command,) = unit["ExecStart"]
    argv = [str(ports[UNIT_PORTS[arg]]) if arg in UNIT_PORTS else arg for arg in shlex.split(command)]
    assert Path(argv[0]).is_relative_to(root), f"{unit_file.stem}: {argv[0]} is not the installed one"
    return Unit(argv, env, Path(unit["WorkingDirectory"][0]))


@dataclass
class Deployment:
    """The installed units, running (the daemon restartable), and where their data lives."""

    server: DagsterServer
    units: dict[str, Unit]
    ports: dict[str, int]
    tmp: Path
    data_dir: Path
    restarts: int = 0

    @property
    def orders_dir(self) -> Path:
        return self.data_dir / "sources" / "files" / "shop" / "orders"

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def start(self, name: str, log: Path) -> None:
        """Start a unit as systemd would; the fixture stops every unit's process group on its way out."""
        unit = self.units[name]
        self.server.processes[name] = launch(unit.argv, unit.env, unit.cwd, log)
        self.server.log_paths[name] = log

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

    def wait_for_a_step(self, run_id: str, deadline_s: float = RUN_DEADLINE_S) -> None:
        """Until the run worker has started a step: the run is doing work, not just launched."""
        deadline = time.monotonic() + deadline_s
        while True:
            self.server.check_running(deadline, f"run {run_id} to start a step")
            run = self.server.graphql(
                "query S($id: ID!) { runOrError(runId: $id) { ... on Run { stepStats { stepKey } } } }",
                {"id": run_id},
            )["runOrError"]
            if run["stepStats"]:
                return
            time.sleep(POLL_S)

    def _ticks(self) -> list[tuple[str, str | None]]:
        return [
            (t["status"], t["skipReason"] or (t["error"] or {}).get("message"))
            for t in self.sensor()["ticks"][:5]
        ]

    def kill_daemon(self) -> None:
        """SIGKILL the daemon's whole process group: a crash, not a shutdown, so nothing gets to clean up or
        record anything. Run workers are the code server's children (deploy/workspace.yaml), not its."""
        daemon = self.server.processes[DAEMON_UNIT]
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

    def restart_daemon(self) -> None:
        self.restarts += 1
        self.start(DAEMON_UNIT, self.tmp / f"{DAEMON_UNIT}.{self.restarts}.log")


def tool(name: str) -> str:
    """A Debian binary the test needs (`.ci/run` installs them): missing is a failure, never a skip."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            f"{name} not found: .ci/run installs it (apt-get install nginx apache2-utils rsync openssl)"
        )
    return found


def install(root: Path) -> subprocess.CompletedProcess[str]:
    """install.sh with the environment `sudo` would give it on a VM: none of this test's Dagster or platform
    settings, and no PYTHONDONTWRITEBYTECODE (sudo drops it; kept, every process of the fresh venv, from
    install.sh's own to the units', would compile the same modules again: seconds each on 2 CPUs)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DAGSTER_", "PLATFORM_")) and key != "PYTHONDONTWRITEBYTECODE"
    }
    env["INSTALL_ROOT"] = str(root)
    uv = shutil.which("uv")
    if uv is not None:  # else install.sh installs uv from PyPI, as on a VM
        env["UV"] = uv
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "install.sh")],
        env=env, capture_output=True, text=True, timeout=INSTALL_DEADLINE_S,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed


def env_file_values(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile=: KEY=VALUE lines, comments and blank lines ignored."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip().strip('"')
    return pairs


def launch(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """One service, output to a log file, in a session of its own so that it is stopped with its children
    (the code server's run workers): the caller stops it with `stop_group(s)`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_for_port(port: int, server: DagsterServer, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        server.check_running(deadline, f"a listener on 127.0.0.1:{port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)


def listing_cursor(data_dir: Path) -> str:
    """The sensor's cursor for the files already delivered (its own format: `path|size|version` per entity),
    as an operator sets it in the UI after a first load, so that the sensor reacts to new deliveries only."""
    store = FileStore(root=str(data_dir / "sources" / "files" / "shop"))
    listed = {
        name: sorted(f.ledger_key() for f in store.list(pattern)) for name, pattern in ENTITY_PATTERNS.items()
    }
    return json.dumps(listed, sort_keys=True)


@contextmanager
def installed_deployment(
    tmp: Path,
    postgres: PostgresCluster,
    serve_api: Callable[[Path], Any],
    extra_env: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """install.sh run twice into `tmp/root`, the demo world in its data directory, the products API served
    by `serve_api(data_dir)` (a context manager yielding its URL), and the four units started as systemd
    would, the code location loaded. Every process group is stopped on the way out."""
    tool("rsync")
    root = tmp / "root"
    first = install(root)
    env_file = root / "etc" / "dataplatform" / "platform.env"
    assert "not started" in first.stdout and "CHANGE_ME" in env_file.read_text()
    unit_dir = root / "etc" / "systemd" / "system"
    assert sorted(p.stem for p in unit_dir.glob("*.service")) == sorted(UNITS)

    data_dir = root / "var" / "lib" / "dataplatform" / "data"
    generate_demo_world(data_dir / "sources", seed=5, scale=DEMO_SCALE)
    with ExitStack() as stack:
        api_url = stack.enter_context(serve_api(data_dir))
        fill_env_file(env_file, postgres, api_url, extra_env)
        second = install(root)
        assert "rehearsal done" in second.stdout, second.stdout[-2000:]
        app = root / "opt" / "dataplatform" / "app"
        assert (app / "dbt_project" / "target" / "manifest.json").exists(), (
            "install.sh built the dbt manifest"
        )

        ports = {name: free_port() for name in UNIT_PORTS.values()}
        workspace = app / "deploy" / "workspace.yaml"
        workspace.write_text(workspace.read_text().replace("port: 4266", f"port: {ports['code_server']}"))
        units = {
            name: unit_from_file(unit_dir / f"{name}.service", ports, root, tmp / "home") for name in UNITS
        }
        for name, unit in units.items():
            assert unit.env["PLATFORM_DATA_DIR"] == str(data_dir), f"{name}: not the installed data directory"
        server = DagsterServer({}, f"http://127.0.0.1:{ports['webserver']}", {})
        deployment = Deployment(server, units, ports, tmp, data_dir)
        stack.callback(lambda: stop_groups(server.processes.values()))
        for name in UNITS:
            deployment.start(name, tmp / f"{name}.log")
            if name == "dataplatform-code-server":
                wait_for_port(ports["code_server"], server, INSTALL_DEADLINE_S)
        server.wait_until_loaded()
        yield deployment


def first_load(deployment: Deployment, assets: list[str] = FIRST_LOAD) -> Deployment:
    """The deployment after a first load, with the delivery sensor on and its cursor at the files already
    loaded."""
    server = deployment.server
    launched = server.launch(assets)
    status = deployment.wait_for_status(launched, {"SUCCESS", "FAILURE", "CANCELED"})
    if status != "SUCCESS":
        server.fail(f"first load {launched} ended {status}")
    state = deployment.sensor()
    if state["status"] == "RUNNING":
        # RUNNING by default outside PLATFORM_ENV=local (platform_assets/policies/triggers.py): the
        # schedules and sensors have been launching runs all along, and may never leave the instance idle.
        return deployment
    # STOPPED by default with PLATFORM_ENV=local: the cursor at the files loaded, then on.
    cursor = server.graphql(SET_CURSOR, {"selector": SELECTOR, "cursor": listing_cursor(deployment.data_dir)})
    if cursor["setSensorCursor"]["__typename"] != "Sensor":
        server.fail(f"setting the cursor failed: {cursor}")
    started = server.graphql(START_SENSOR, {"selector": SELECTOR})["startSensor"]
    if started["__typename"] != "Sensor" or started["sensorState"]["status"] != "RUNNING":
        server.fail(f"starting {SENSOR} failed: {started}")
    deployment.server.wait_until_idle()
    return deployment
