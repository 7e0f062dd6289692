"""The deployment, installed and run as the VM runs it: `deploy/install.sh` into a throwaway root, the four
systemd units it installs started by their exact `ExecStart`, the UI behind the nginx proxy with basic auth,
a healthy `/health`, and on that one installation the daemon alone turning a file delivery into a run, and
surviving a crash. One installation for all three tests: each start of a code server, webserver and daemon
costs half a minute of a 2-CPU CI machine, and a deployment that serves the UI but not the deliveries (or
the reverse) is the thing to catch.

install.sh runs twice into the root (`INSTALL_ROOT`, as the invoking user: no packages, no system user, no
systemctl): the first run creates the environment file from the template and stops at its CHANGE_ME
values, as on a VM; the second, with the file filled in (a throwaway database of the session's PostgreSQL
for the instance, the embedded DuckDB warehouse, the delivery sensors polling every 5 s, the demo products
API this test serves), builds the dbt manifest and migrates the instance. Then the units are started the
way systemd would: each unit's exact `ExecStart` (install.sh moved its paths under the root), its
`EnvironmentFile`, `Environment` and `WorkingDirectory`, and systemd's default PATH, nothing from this
test's own environment. Only the loopback ports are changed (4266, 3000, 9464, here and in the installed
`deploy/workspace.yaml`), so a developer's own servers or a parallel test cannot collide with them. The
instance is `deploy/dagster.yaml` on PostgreSQL; the demo world is generated into the installed data
directory, so the test can read what the runs built.

nginx from Debian serves `deploy/nginx/dagster.conf` (its listen addresses, certificate, htpasswd and
upstream port templated to this test; a bcrypt htpasswd from `htpasswd -B` as the file's header says),
and the UI must answer behind it with the right credentials and refuse without them. The metrics server's
`/health` must turn healthy on its own: code location loaded over gRPC, daemon heartbeats and sensor ticks
fresh, no escalation, disk free.

Then nothing is launched by the test except a first load (the state a deployment is in after its first
day): the delivery sensor is switched on over GraphQL as the UI does, and from then on the daemon alone
turns a dropped CSV into a run (land, validate, stage, dbt build). The last test SIGKILLs the daemon's
whole process group while such a run is in progress, restarts it from its unit, and checks what the
deployment promises: the run (a child of the code server) succeeds, the delivered rows are staged exactly
once, and the sensor's cursor (in PostgreSQL) neither re-launches the batch nor forgets the file.

systemd itself is not exercised (no systemd in a CI container): `Restart=`, `User=` and the sandboxing
options are left to the VM.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import pytest
import requests
from dagster_processes import REPO_ROOT, DagsterServer, free_port, stop_group, stop_groups
from demo_expectations import deliver_orders
from fixtures.postgres_server import PostgresCluster
from systemd_units import service_entries
from urllib3.exceptions import InsecureRequestWarning

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY, DEMO_API_KEY_VAR, DEMO_API_URL_VAR
from demo_shop.world import PRODUCTS_API
from resources.files.store import FileStore
from sensors.automation.delivery_sensor import parse_cursor

pytestmark = pytest.mark.slow

UNITS = ("dataplatform-code-server", "dataplatform-webserver", "dataplatform-daemon", "dataplatform-metrics")
"""In the order systemd starts them (webserver and daemon are `After=` the code server)."""
DAEMON_UNIT = "dataplatform-daemon"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""What a systemd service gets as PATH: not the virtualenv's bin."""
UNIT_PORTS = {"4266": "code_server", "3000": "webserver", "9464": "metrics"}
INSTALL_DEADLINE_S = 300.0
HEALTH_DEADLINE_S = 180.0
USER, PASSWORD = "alice", "correct horse battery staple"

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


def _fill_env_file(path: Path, postgres: PostgresCluster, api_url: str) -> None:
    """What an operator writes over the CHANGE_ME values (the instance on a throwaway database, the embedded
    DuckDB warehouse, so no warehouse server is needed) and into the optional variables the deliveries
    need (uncommented): the delivery sensors' poll interval and the demo products API this test serves."""
    values = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port), "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth", "DAGSTER_PG_DB": postgres.create_database(),
        "PLATFORM_ENV": "local", "PLATFORM_PG_PASSWORD": "unused-with-duckdb",
        "PLATFORM_DELIVERY_POLL_SECONDS": str(POLL_SECONDS), DEMO_API_URL_VAR: api_url,
        DEMO_API_KEY_VAR: DEMO_API_KEY,
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


def _unit(unit_file: Path, ports: dict[str, int], root: Path, home: Path) -> Unit:
    unit = service_entries(unit_file)
    assert unit["Type"] == ["simple"]
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": str(home)}
    for path in unit["EnvironmentFile"]:
        env.update(_env_file(Path(path)))
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
        self.server.processes[name] = _launch(unit.argv, unit.env, unit.cwd, log)
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


def _tool(name: str) -> str:
    """A Debian binary the test needs (`.ci/run` installs them): missing is a failure, never a skip."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            f"{name} not found: .ci/run installs it (apt-get install nginx apache2-utils rsync openssl)"
        )
    return found


def _install(root: Path) -> subprocess.CompletedProcess[str]:
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


def _env_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile=: KEY=VALUE lines, comments and blank lines ignored."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip().strip('"')
    return pairs


def _launch(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """One service, output to a log file, in a session of its own so that it is stopped with its children
    (the code server's run workers): the caller stops it with `stop_group(s)`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@contextmanager
def _service(
    command: list[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    process = _launch(command, env, cwd, log)
    try:
        yield process
    finally:
        stop_group(process)


def _wait_for_port(port: int, server: DagsterServer, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        server.check_running(deadline, f"a listener on 127.0.0.1:{port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)


def _nginx_site(tmp: Path, https_port: int, http_port: int, upstream_port: int) -> str:
    """deploy/nginx/dagster.conf on loopback ports, with a self-signed certificate and this test's
    htpasswd; every substitution must match once, so a changed file fails here rather than going untested."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=dagster.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    htpasswd = tmp / "dagster.htpasswd"
    subprocess.run(
        [_tool("htpasswd"), "-B", "-c", "-b", str(htpasswd), USER, PASSWORD], check=True, capture_output=True
    )
    site = (REPO_ROOT / "deploy" / "nginx" / "dagster.conf").read_text()
    live = "/etc/letsencrypt/live/dagster.example.com"
    for old, new in {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        f"ssl_certificate     {live}/fullchain.pem;": f"ssl_certificate {cert};",
        f"ssl_certificate_key {live}/privkey.pem;": f"ssl_certificate_key {key};",
        "auth_basic_user_file /etc/nginx/dagster.htpasswd;": f"auth_basic_user_file {htpasswd};",
        "proxy_pass http://127.0.0.1:3000;": f"proxy_pass http://127.0.0.1:{upstream_port};",
    }.items():
        assert site.count(old) == 1, f"deploy/nginx/dagster.conf: expected {old!r} once"
        site = site.replace(old, new)
    return site


def _nginx_conf(tmp: Path, site: str) -> Path:
    """A main nginx.conf around the site: foreground, every path under `tmp`, workers as this user."""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir()
    # as root, nginx's workers would run as nobody and could not read this test's files
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{site}
}}
""")
    return conf


def _listing_cursor(data_dir: Path) -> str:
    """The sensor's cursor for the files already delivered (its own format: `path|size|version` per entity),
    as an operator sets it in the UI after a first load, so that the sensor reacts to new deliveries only."""
    store = FileStore(root=str(data_dir / "sources" / "files" / "shop"))
    listed = {
        name: sorted(f.ledger_key() for f in store.list(pattern)) for name, pattern in ENTITY_PATTERNS.items()
    }
    return json.dumps(listed, sort_keys=True)


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
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresCluster
) -> Iterator[Deployment]:
    """install.sh run twice into a throwaway root, the demo world in its data directory, and its four units
    started as systemd would, the code location loaded. Every process group is stopped on the way out."""
    _tool("rsync")
    tmp = tmp_path_factory.mktemp("deployment")
    root = tmp / "root"

    first = _install(root)
    env_file = root / "etc" / "dataplatform" / "platform.env"
    assert "not started" in first.stdout and "CHANGE_ME" in env_file.read_text()
    unit_dir = root / "etc" / "systemd" / "system"
    assert sorted(p.stem for p in unit_dir.glob("*.service")) == sorted(UNITS)

    data_dir = root / "var" / "lib" / "dataplatform" / "data"
    generate_demo_world(data_dir / "sources", seed=5, scale=DEMO_SCALE)
    with ExitStack() as stack:
        api_url = stack.enter_context(serve_products_api(data_dir / "sources" / PRODUCTS_API, DEMO_API_KEY))
        _fill_env_file(env_file, postgres_server, api_url)
        second = _install(root)
        assert "rehearsal done" in second.stdout, second.stdout[-2000:]
        app = root / "opt" / "dataplatform" / "app"
        assert (app / "dbt_project" / "target" / "manifest.json").exists(), (
            "install.sh built the dbt manifest"
        )

        ports = {name: free_port() for name in UNIT_PORTS.values()}
        workspace = app / "deploy" / "workspace.yaml"
        workspace.write_text(workspace.read_text().replace("port: 4266", f"port: {ports['code_server']}"))
        units = {name: _unit(unit_dir / f"{name}.service", ports, root, tmp / "home") for name in UNITS}
        for name, unit in units.items():
            assert unit.env["PLATFORM_DATA_DIR"] == str(data_dir), f"{name}: not the installed data directory"
        server = DagsterServer({}, f"http://127.0.0.1:{ports['webserver']}", {})
        deployment = Deployment(server, units, ports, tmp, data_dir)
        stack.callback(lambda: stop_groups(server.processes.values()))
        for name in UNITS:
            deployment.start(name, tmp / f"{name}.log")
            if name == "dataplatform-code-server":
                _wait_for_port(ports["code_server"], server, INSTALL_DEADLINE_S)
        server.wait_until_loaded()
        yield deployment


@pytest.fixture(scope="module")
def first_loaded(deployment: Deployment) -> Deployment:
    """The deployment after a first load, with the delivery sensor on and its cursor at the files already
    loaded."""
    server = deployment.server
    first_load = server.launch(FIRST_LOAD)
    status = deployment.wait_for_status(first_load, {"SUCCESS", "FAILURE", "CANCELED"})
    if status != "SUCCESS":
        server.fail(f"first load {first_load} ended {status}")
    state = deployment.sensor()
    if (
        state["status"] != "RUNNING"
    ):  # STOPPED by default with PLATFORM_ENV=local (platform_assets/policies/triggers.py)
        cursor = server.graphql(
            SET_CURSOR, {"selector": SELECTOR, "cursor": _listing_cursor(deployment.data_dir)}
        )
        if cursor["setSensorCursor"]["__typename"] != "Sensor":
            server.fail(f"setting the cursor failed: {cursor}")
        started = server.graphql(START_SENSOR, {"selector": SELECTOR})["startSensor"]
        if started["__typename"] != "Sensor" or started["sensorState"]["status"] != "RUNNING":
            server.fail(f"starting {SENSOR} failed: {started}")
    deployment.server.wait_until_idle()
    return deployment


def test_installed_units_serve_the_ui_behind_nginx_basic_auth_and_report_healthy(
    deployment: Deployment,
) -> None:
    nginx = _tool("nginx")
    https_port, http_port = free_port(), free_port()
    nginx_dir = deployment.tmp / "nginx"
    nginx_dir.mkdir()
    conf = _nginx_conf(
        nginx_dir, _nginx_site(nginx_dir, https_port, http_port, deployment.ports["webserver"])
    )
    nginx_command = [nginx, "-c", str(conf), "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log")]
    checked = subprocess.run([*nginx_command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    with _service(nginx_command, {"PATH": SYSTEMD_PATH}, nginx_dir, nginx_dir / "nginx.out") as proxy:
        units = deployment.server
        server = DagsterServer(
            {**units.processes, "nginx": proxy},
            units.base_url,
            {**units.log_paths, "nginx": nginx_dir / "error.log"},
        )
        _wait_for_port(https_port, server, 30)
        ui = f"https://127.0.0.1:{https_port}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            refused = requests.get(f"{ui}/server_info", verify=False, timeout=30)
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == 'Basic realm="Dagster"'
            wrong = requests.get(f"{ui}/server_info", auth=(USER, "wrong"), verify=False, timeout=30)
            assert wrong.status_code == 401
            answered = requests.get(f"{ui}/server_info", auth=(USER, PASSWORD), verify=False, timeout=30)
            assert answered.status_code == 200, answered.text[:500]
            assert "dagster_webserver_version" in answered.json()
            graphql = requests.post(
                f"{ui}/graphql",
                json={"query": "{ version }"},
                auth=(USER, PASSWORD),
                verify=False,
                timeout=30,
            )
            assert graphql.status_code == 200 and graphql.json()["data"]["version"]
        redirect = requests.get(f"http://127.0.0.1:{http_port}/", allow_redirects=False, timeout=30)
        assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")

        health_url = f"http://127.0.0.1:{deployment.ports['metrics']}/health"
        deadline = time.monotonic() + HEALTH_DEADLINE_S
        report: object = None
        while True:
            server.check_running(deadline, f"/health to pass; last report: {report}")
            try:
                response = requests.get(health_url, timeout=30)
                report = response.json()
                if response.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(2)
        assert isinstance(report, dict) and report["healthy"] is True
        checks = report["checks"]
        assert checks["code_location"]["value"] == {"self_healing_platform": True}
        assert checks["sensor_ticks"]["value"], "running sensors have ticked"
        assert set(checks["daemon_heartbeats"]["value"]) >= {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"}
        metrics = requests.get(f"http://127.0.0.1:{deployment.ports['metrics']}/metrics", timeout=30).text
        assert 'dataplatform_code_location_up{location="self_healing_platform"} 1.0' in metrics


def test_delivery_is_landed_staged_and_built_by_the_daemon(first_loaded: Deployment) -> None:
    deployment = first_loaded
    """A CSV dropped into the delivery directory becomes, through the daemon's sensor tick alone, a run that
    lands, validates and stages it and rebuilds the marts."""
    staged_before, _ = _totals(deployment.warehouse)
    known = {run["runId"] for run in deployment.sensor_runs()}
    assert not known, f"the sensor launched runs before any new delivery: {known}"
    new_ids = deliver_orders(deployment.orders_dir, "orders_90001.csv", 900_001, 3)

    run = deployment.wait_for_sensor_run(known)
    status = deployment.wait_for_status(run["runId"], {"SUCCESS", "FAILURE", "CANCELED"})
    assert status == "SUCCESS", deployment.server.log_tail()
    assert run["tags"]["platform/trigger"] == "delivery"
    assert run["tags"]["dagster/run_key"].startswith("shop.orders:")
    deployment.server.wait_until_idle()

    assert _staged_counts(deployment.warehouse, new_ids) == dict.fromkeys(new_ids, 1)
    staged_after, mart_orders = _totals(deployment.warehouse)
    assert staged_after == staged_before + len(new_ids)
    assert mart_orders == staged_after, "the delivery run did not rebuild analytics.fct_daily_revenue"


def test_daemon_killed_mid_run_the_run_recovers_and_no_tick_is_lost_or_repeated(
    first_loaded: Deployment,
) -> None:
    """SIGKILL the daemon while a delivery run is in progress, start it again: the run, a child of the code
    server, finishes; the restarted daemon reads the sensor cursor back from Postgres and neither launches
    the batch again nor skips a file; the delivery is staged exactly once."""
    deployment = first_loaded
    known = {run["runId"] for run in deployment.sensor_runs()}
    new_ids = deliver_orders(deployment.orders_dir, "orders_90002.csv", 900_101, 4)
    run = deployment.wait_for_sensor_run(known)
    run_key = run["tags"]["dagster/run_key"]
    deployment.wait_for_status(run["runId"], {"STARTED"}, deadline_s=120)
    deployment.wait_for_a_step(run["runId"])  # into the run's steps, not just its start
    deployment.kill_daemon()
    killed_at = time.time()
    deployment.restart_daemon()

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
    deployment.server.wait_until_idle()

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

    # The platform's own state went to the instance's database with the rest (DAGSTER_PG_HOST is set),
    # none of it to the data directory: the daemon's sensors wrote the quality events there, and a second
    # daemon would share them.
    env = deployment.units["dataplatform-daemon"].env
    dsn = (
        f"host={env['DAGSTER_PG_HOST']} port={env['DAGSTER_PG_PORT']} user={env['DAGSTER_PG_USER']} "
        f"dbname={env['DAGSTER_PG_DB']}"
    )
    query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'platform_ops'"
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        tables = {name for (name,) in cursor.fetchall()}
    assert {"incidents", "breakers", "quality_events", "sent"} <= tables
    assert not (deployment.data_dir / "ops").exists(), sorted((deployment.data_dir / "ops").iterdir())
