"""`deploy/install.sh`, the systemd units and the nginx proxy, exercised for real where a CI machine allows.

install.sh runs twice into a throwaway root (`INSTALL_ROOT`, as the invoking user: no packages, no system
user, no systemctl): the first run creates the environment file from the template and stops at its
CHANGE_ME values, as on a VM; the second, with the file filled in (a throwaway PostgreSQL database, the
DuckDB warehouse), builds the dbt manifest and migrates the instance. Then the four units it installed are
started the way systemd would: each unit's exact `ExecStart` (install.sh moved its paths under the root),
its `EnvironmentFile`, `Environment` and `WorkingDirectory`, and systemd's default PATH, nothing from this
test's own environment. Only the loopback ports are changed (4266, 3000, 9464, here and in the installed
`deploy/workspace.yaml`), so a developer's own servers or a parallel test cannot collide with them.

nginx from Debian serves `deploy/nginx/dagster.conf` (its listen addresses, certificate, htpasswd and
upstream port templated to this test; a bcrypt htpasswd from `htpasswd -B` as the file's header says),
and the UI must answer behind it with the right credentials and refuse without them. Finally the metrics
server's `/health` must turn healthy on its own: code location loaded over gRPC, daemon heartbeats and
sensor ticks fresh, no escalation, disk free. One test, because every step needs the one before.

systemd itself is not exercised (no systemd in a CI container): `Restart=`, `User=` and the sandboxing
options are left to the VM.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import requests
from dagster_processes import REPO_ROOT, DagsterServer, free_port, stop_group
from fixtures.postgres_server import PostgresCluster
from systemd_units import service_entries
from urllib3.exceptions import InsecureRequestWarning

pytestmark = pytest.mark.slow

UNITS = ("dataplatform-code-server", "dataplatform-webserver", "dataplatform-daemon", "dataplatform-metrics")
"""In the order systemd starts them (webserver and daemon are `After=` the code server)."""
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""What a systemd service gets as PATH: not the virtualenv's bin."""
UNIT_PORTS = {"4266": "code_server", "3000": "webserver", "9464": "metrics"}
INSTALL_DEADLINE_S = 300.0
HEALTH_DEADLINE_S = 180.0
USER, PASSWORD = "alice", "correct horse battery staple"


def _tool(name: str) -> str:
    """A Debian binary the test needs (`.ci/run` installs them): missing is a failure, never a skip."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            f"{name} not found: .ci/run installs it (apt-get install nginx apache2-utils rsync openssl)"
        )
    return found


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "PLATFORM_"))}
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


def _fill_env_file(path: Path, postgres: PostgresCluster) -> None:
    """What an operator writes over the CHANGE_ME values: the instance on a throwaway database, the
    embedded DuckDB warehouse (so no warehouse server is needed)."""
    values = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port), "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth", "DAGSTER_PG_DB": postgres.create_database(),
        "PLATFORM_ENV": "local", "PLATFORM_PG_PASSWORD": "unused-with-duckdb",
    }  # fmt: skip
    text = path.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"{key} is not in the template"
    assert not re.search(r"^[^#]*CHANGE_ME", text, flags=re.MULTILINE), "a value is left to fill in"
    path.write_text(text)


@contextmanager
def _service(
    command: list[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
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


def test_installed_units_serve_the_ui_behind_nginx_basic_auth_and_report_healthy(
    tmp_path: Path, postgres_server: PostgresCluster
) -> None:
    nginx = _tool("nginx")
    _tool("rsync")
    root = tmp_path / "root"

    first = _install(root)
    env_file = root / "etc" / "dataplatform" / "platform.env"
    assert "not started" in first.stdout and "CHANGE_ME" in env_file.read_text()
    unit_dir = root / "etc" / "systemd" / "system"
    assert sorted(p.stem for p in unit_dir.glob("*.service")) == sorted(UNITS)

    _fill_env_file(env_file, postgres_server)
    second = _install(root)
    assert "rehearsal done" in second.stdout, second.stdout[-2000:]
    app = root / "opt" / "dataplatform" / "app"
    assert (app / "dbt_project" / "target" / "manifest.json").exists(), "install.sh built the dbt manifest"

    ports = {name: free_port() for name in UNIT_PORTS.values()}
    workspace = app / "deploy" / "workspace.yaml"
    workspace.write_text(workspace.read_text().replace("port: 4266", f"port: {ports['code_server']}"))
    with ExitStack() as stack:
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        server = DagsterServer(processes, f"http://127.0.0.1:{ports['webserver']}", logs)
        for name in UNITS:
            unit = service_entries(unit_dir / f"{name}.service")
            assert unit["Type"] == ["simple"]
            env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": str(tmp_path / "home")}
            for path in unit["EnvironmentFile"]:
                env.update(_env_file(Path(path)))
            env.update(dict(entry.split("=", 1) for entry in unit["Environment"]))
            (command,) = unit["ExecStart"]
            argv = [ports[UNIT_PORTS[arg]] if arg in UNIT_PORTS else arg for arg in shlex.split(command)]
            assert Path(argv[0]).is_relative_to(root), f"{name}: {argv[0]} is not the installed one"
            logs[name] = tmp_path / f"{name}.log"
            processes[name] = stack.enter_context(
                _service([str(arg) for arg in argv], env, Path(unit["WorkingDirectory"][0]), logs[name])
            )
            if name == "dataplatform-code-server":
                _wait_for_port(ports["code_server"], server, INSTALL_DEADLINE_S)
        server.wait_until_loaded()

        https_port, http_port = free_port(), free_port()
        nginx_dir = tmp_path / "nginx"
        nginx_dir.mkdir()
        conf = _nginx_conf(nginx_dir, _nginx_site(nginx_dir, https_port, http_port, ports["webserver"]))
        nginx_command = [nginx, "-c", str(conf), "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log")]
        checked = subprocess.run([*nginx_command, "-t"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        processes["nginx"] = stack.enter_context(
            _service(nginx_command, {"PATH": SYSTEMD_PATH}, nginx_dir, nginx_dir / "nginx.out")
        )
        logs["nginx"] = nginx_dir / "error.log"
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

        health_url = f"http://127.0.0.1:{ports['metrics']}/health"
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
        metrics = requests.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=30).text
        assert 'dataplatform_code_location_up{location="self_healing_platform"} 1.0' in metrics
