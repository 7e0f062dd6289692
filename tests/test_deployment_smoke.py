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

import os
import pwd
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import duckdb
import psycopg2
import pytest
import requests
from dagster_processes import REPO_ROOT, DagsterServer, free_port, stop_group
from demo_expectations import deliver_orders
from deployment import (
    POLL_S,
    RECOVERY_DEADLINE_S,
    SYSTEMD_PATH,
    TICK_DEADLINE_S,
    Deployment,
    first_load,
    installed_deployment,
    launch,
    tool,
    wait_for_port,
)
from fixtures.postgres_server import PostgresCluster
from urllib3.exceptions import InsecureRequestWarning

from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY
from demo_shop.world import PRODUCTS_API
from sensors.automation.delivery_sensor import parse_cursor

pytestmark = pytest.mark.slow

HEALTH_DEADLINE_S = 180.0
USER, PASSWORD = "alice", "correct horse battery staple"


@contextmanager
def _service(
    command: list[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    process = launch(command, env, cwd, log)
    try:
        yield process
    finally:
        stop_group(process)


def _nginx_site(tmp: Path, https_port: int, http_port: int, upstream_port: int) -> str:
    """deploy/nginx/dagster.conf on loopback ports, with a self-signed certificate and this test's
    htpasswd; every substitution must match once, so a changed file fails here rather than going untested."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=dagster.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    htpasswd = tmp / "dagster.htpasswd"
    subprocess.run(
        [tool("htpasswd"), "-B", "-c", "-b", str(htpasswd), USER, PASSWORD], check=True, capture_output=True
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
    """The installed deployment (`tests/deployment.py`), serving the demo products API itself."""
    tmp = tmp_path_factory.mktemp("deployment")
    serve = lambda data_dir: serve_products_api(data_dir / "sources" / PRODUCTS_API, DEMO_API_KEY)  # noqa: E731
    with installed_deployment(tmp, postgres_server, serve) as installed:
        yield installed


@pytest.fixture(scope="module")
def first_loaded(deployment: Deployment) -> Deployment:
    """The deployment after a first load, with the delivery sensor on and its cursor at the files already
    loaded."""
    return first_load(deployment)


def test_installed_units_serve_the_ui_behind_nginx_basic_auth_and_report_healthy(
    deployment: Deployment,
) -> None:
    nginx = tool("nginx")
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
        wait_for_port(https_port, server, 30)
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
