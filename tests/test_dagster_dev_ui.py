"""`dagster dev`, started as a user starts it, serves the UI with the lineage raw -> staged -> dbt models.

The other tests build `Definitions` in process; this one proves that the workspace file, the code location
loading in its own code server and the webserver fit together. It starts the real `dagster dev` from the
repository root, waits for the code location to load, reads the asset graph through the UI's GraphQL API
and stops the whole process tree again (webserver, daemon and code server share one process group).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import requests

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCATION_NAME = "self_healing_platform"
"""`location_name` in workspace.yaml."""

STARTUP_DEADLINE_S = 180.0
"""Webserver up and code location loaded (including one `dbt parse` by `prepare_if_dev`): ~35 s on an
idle 2-CPU machine, 70 s seen under load."""
STOP_GRACE_S = 15.0
"""How long `dagster dev` gets to shut down on SIGTERM before its process group is killed."""
POLL_INTERVAL_S = 0.5

RAW_ORDERS = "raw/shop/orders"
STAGED_ORDERS = "staged/shop/orders"
STG_ORDERS = "stg_shop__orders"
MART = "fct_daily_revenue"

WORKSPACE_QUERY = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message cause { message } }
        }
      }
    }
  }
}
"""

ASSET_NODES_QUERY = """
query AssetLineage {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name } }
      ... on Error { message }
    }
  }
}
"""


@dataclass(frozen=True)
class ServedAsset:
    """One asset node as the UI shows it."""

    deps: frozenset[str]
    group: str
    kinds: frozenset[str]
    checks: frozenset[str]


@dataclass(frozen=True)
class DagsterDev:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        """The end of dagster dev's output: the only place a failed start or a broken code location shows."""
        if not self.log_path.exists():
            return "<no log written>"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def fail(self, reason: str) -> NoReturn:
        pytest.fail(f"{reason}\n--- dagster dev log (tail) ---\n{self.log_tail()}", pytrace=False)


def _free_port() -> int:
    """A port nobody listens on now, so parallel runs and a developer's own `dagster dev` don't collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key(asset_key: dict[str, Any]) -> str:
    return "/".join(asset_key["path"])


def _dagster_env(tmp: Path) -> dict[str, str]:
    """The caller's environment with a throwaway instance and data directory, so the test neither reads
    nor writes the developer's Dagster history or warehouse, and with the venv's bin first so that the
    code location (and dbt's `prepare_if_dev`) find the `dbt` installed beside this Python."""
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    data_dir = tmp / "platform_data"
    data_dir.mkdir()
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home)
    env["PLATFORM_DATA_DIR"] = str(data_dir)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group_gone(process: subprocess.Popen[bytes], pgid: int, timeout_s: float) -> bool:
    """Reap the leader and wait until no process of the group is left: `dagster dev` may exit before its
    webserver, daemon and code server children have."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.poll()
        if process.returncode is not None and not _group_alive(pgid):
            return True
        time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, then SIGKILL it: backgrounded `dagster dev` is known to linger."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    if not _group_alive(pgid):
        process.wait()
        return
    os.killpg(pgid, signal.SIGTERM)
    if _wait_group_gone(process, pgid, STOP_GRACE_S):
        return
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)
    _wait_group_gone(process, pgid, 10)


@contextmanager
def _dagster_dev(tmp: Path) -> Iterator[DagsterDev]:
    """`dagster dev -w workspace.yaml` from the repository root on a free port, output to a log file (a
    pipe nobody reads would fill up and block the server), in a session of its own so it can be stopped
    as a whole."""
    port = _free_port()
    log_path = tmp / "dagster_dev.log"
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=_dagster_env(tmp),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DagsterDev(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        _stop(process)


def _graphql(dev: DagsterDev, query: str) -> dict[str, Any]:
    response = requests.post(f"{dev.base_url}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        dev.fail(f"GraphQL errors: {body['errors']}")
    return body["data"]


def _error_chain(error: dict[str, Any] | None) -> str:
    """The load error and its cause: the cause names the project's own exception (e.g. a bad setting)."""
    if error is None:
        return "no details reported"
    messages = [error["message"].strip()]
    if error.get("cause"):
        messages.append(f"caused by: {error['cause']['message'].strip()}")
    return "\n".join(messages)


def _check_running(dev: DagsterDev, deadline: float, waiting_for: str) -> None:
    """Fail fast if dagster dev died, and never wait past the deadline."""
    if dev.process.poll() is not None:
        dev.fail(f"dagster dev exited with code {dev.process.returncode} while waiting for {waiting_for}")
    if time.monotonic() > deadline:
        dev.fail(f"{waiting_for} not ready within {STARTUP_DEADLINE_S:.0f} s")


def _wait_for_webserver(dev: DagsterDev, deadline: float) -> None:
    while True:
        _check_running(dev, deadline, "the webserver")
        try:
            if requests.get(f"{dev.base_url}/server_info", timeout=2).ok:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(POLL_INTERVAL_S)


def _wait_for_location(dev: DagsterDev, deadline: float) -> None:
    """The webserver answers before the code location has loaded (assets come back empty meanwhile); a
    code location that fails to import is reported here, not as an HTTP error."""
    while True:
        _check_running(dev, deadline, f"code location {LOCATION_NAME!r}")
        workspace = _graphql(dev, WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] == "PythonError":
            dev.fail(f"workspace failed to load: {workspace['message']}")
        entries = {entry["name"]: entry for entry in workspace["locationEntries"]}
        entry = entries.get(LOCATION_NAME)
        if entry is not None and entry["loadStatus"] == "LOADED":
            location = entry["locationOrLoadError"]
            if location is None or location["__typename"] == "PythonError":
                dev.fail(f"code location {LOCATION_NAME!r} failed to load: {_error_chain(location)}")
            return
        time.sleep(POLL_INTERVAL_S)


def _served_assets(dev: DagsterDev) -> dict[str, ServedAsset]:
    nodes = _graphql(dev, ASSET_NODES_QUERY)["assetNodes"]
    assets = {}
    for node in nodes:
        checks = node["assetChecksOrError"]
        if checks["__typename"] != "AssetChecks":
            dev.fail(f"asset checks of {_key(node['assetKey'])} unavailable: {checks}")
        assets[_key(node["assetKey"])] = ServedAsset(
            deps=frozenset(_key(dep) for dep in node["dependencyKeys"]),
            group=node["groupName"],
            kinds=frozenset(node["kinds"]),
            checks=frozenset(check["name"] for check in checks["checks"]),
        )
    if not assets:
        dev.fail("code location loaded but the UI lists no assets")
    return assets


@pytest.fixture(scope="module")
def served_assets(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> dict[str, ServedAsset]:
    """The asset graph as `dagster dev` serves it. The server is stopped before the assertions run, so a
    failing assertion never leaves it behind."""
    with _dagster_dev(tmp_path_factory.mktemp("dagster_dev")) as dev:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        _wait_for_webserver(dev, deadline)
        _wait_for_location(dev, deadline)
        return _served_assets(dev)


def test_ui_shows_lineage_raw_to_staged_to_dbt(served_assets: dict[str, ServedAsset]) -> None:
    assert {RAW_ORDERS, STAGED_ORDERS, STG_ORDERS, MART} <= served_assets.keys()
    assert RAW_ORDERS in served_assets[STAGED_ORDERS].deps
    assert STAGED_ORDERS in served_assets[STG_ORDERS].deps
    assert STG_ORDERS in served_assets[MART].deps


def test_ui_shows_groups_and_kinds(served_assets: dict[str, ServedAsset]) -> None:
    assert served_assets[RAW_ORDERS].group == "raw"
    assert served_assets[STAGED_ORDERS].group == "staged"
    assert "duckdb" in served_assets[STAGED_ORDERS].kinds
    assert served_assets[STG_ORDERS].group == "dbt_staging"
    assert served_assets[MART].group == "dbt_marts"
    assert {"dbt", "duckdb"} <= served_assets[STG_ORDERS].kinds
    assert {"dbt", "duckdb"} <= served_assets[MART].kinds


def test_ui_shows_schema_contract_on_staged_asset(served_assets: dict[str, ServedAsset]) -> None:
    assert "schema_contract" in served_assets[STAGED_ORDERS].checks
