"""`dagster dev`, started as a user starts it, serves the UI with the lineage raw -> staged -> dbt models,
and a materialization launched through the UI's API runs the whole slice to success.

The other tests build `Definitions` in process; this one proves that the workspace file, the code location
loading in its own code server and the webserver fit together. It starts the real `dagster dev` from the
repository root, waits for the code location to load, reads the asset graph through the UI's GraphQL API
launches a run of every asset as the UI's "Materialize all" does (queued, dequeued by the daemon, steps in
subprocesses under the `warehouse` concurrency pool) and stops the whole process tree again (webserver,
daemon and code server share one process group).
"""

from __future__ import annotations

import json
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

import duckdb
import pyarrow.parquet as pq
import pytest
import requests

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.world import PRODUCTS_API
from platform_assets.cli import DEMO_API_KEY

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
RUN_DEADLINE_S = 300.0
"""Queue, launch and run raw -> staged -> check -> dbt build in subprocesses: ~40 s seen here."""
DEMO_SCALE = 0.1

RAW_ORDERS = "raw/shop/orders"
STAGED_ORDERS = "staged/shop/orders"
STG_ORDERS = "stg_shop__orders"
MART = "fct_daily_revenue"
RAW_PRODUCTS = "raw/shop_api/products"
ORDERS_CHAIN = [RAW_ORDERS, STAGED_ORDERS, STG_ORDERS, MART]
CUSTOMERS_CHAIN = ["raw/shop_db/customers", "staged/shop_db/customers", "stg_shop_db__customers"]

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


LAUNCH_MUTATION = """
mutation Materialize($selector: JobOrPipelineSelector!) {
  launchPipelineExecution(executionParams: {selector: $selector}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on PythonError { message }
  }
}
"""
FINISHED_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

HISTORY_QUERY = """
query History($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 10) {
        runId
        metadataEntries {
          label
          __typename
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
        }
      }
    }
  }
}
"""
"""What the UI's asset page reads to plot numeric metadata over materializations (its Plots tab)."""


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


def _dagster_env(tmp: Path, data_dir: Path, api_url: str) -> dict[str, str]:
    """The caller's environment with a throwaway instance and data directory, so the test neither reads
    nor writes the developer's Dagster history or warehouse, and with the venv's bin first so that the
    code location (and dbt's `prepare_if_dev`) find the `dbt` installed beside this Python. The instance
    uses the repository's dagster.yaml, so runs go through the same pools as a developer's."""
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home)
    env["PLATFORM_DATA_DIR"] = str(data_dir)
    env["SHOP_API_URL"] = api_url
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
def _dagster_dev(tmp: Path, data_dir: Path, api_url: str) -> Iterator[DagsterDev]:
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
            env=_dagster_env(tmp, data_dir, api_url),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DagsterDev(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        _stop(process)


def _graphql(dev: DagsterDev, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = {"query": query, "variables": variables or {}}
    response = requests.post(f"{dev.base_url}/graphql", json=payload, timeout=30)
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


def _materialize(dev: DagsterDev, assets: list[str]) -> str:
    """Launch one run of the selected assets (and their checks), as the UI's "Materialize selected" button
    does, and follow it to its end; returns the final status. Each step of a UI run is a process of its
    own that loads the code location, so the selection is kept small."""
    selector = {
        "repositoryLocationName": LOCATION_NAME,
        "repositoryName": "__repository__",
        "pipelineName": "__ASSET_JOB",
        "assetSelection": [{"path": key.split("/")} for key in assets],
    }
    launched = _graphql(dev, LAUNCH_MUTATION, {"selector": selector})["launchPipelineExecution"]
    if launched["__typename"] != "LaunchRunSuccess":
        dev.fail(f"launching the materialization failed: {launched}")
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_DEADLINE_S
    while True:
        _check_running(dev, deadline, f"run {run_id}")
        run = _graphql(dev, RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            dev.fail(f"run {run_id} not found: {run}")
        if run["status"] in FINISHED_STATUSES:
            return run["status"]
        time.sleep(POLL_INTERVAL_S * 4)


def _numeric_history(dev: DagsterDev, asset: str) -> list[dict[str, tuple[str, float]]]:
    """Per materialization (newest first): label -> (GraphQL entry type, value) of its numeric entries."""
    found = _graphql(dev, HISTORY_QUERY, {"path": asset.split("/")})["assetOrError"]
    if found["__typename"] != "Asset":
        dev.fail(f"{asset} not found: {found}")
    return [
        {
            entry["label"]: (entry["__typename"], entry.get("floatValue", entry.get("intValue")))
            for entry in materialization["metadataEntries"]
            if entry["__typename"] in ("FloatMetadataEntry", "IntMetadataEntry")
        }
        for materialization in found["assetMaterializations"]
    ]


@dataclass(frozen=True)
class ServedPlatform:
    assets: dict[str, ServedAsset]
    run_status: str
    warehouse: Path
    rerun_statuses: list[str]
    staged_history: list[dict[str, tuple[str, float]]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> ServedPlatform:
    """The asset graph as `dagster dev` serves it and the outcome of materializing it through the UI's
    API. The server is stopped before the assertions run, so a failing assertion never leaves it behind."""
    tmp = tmp_path_factory.mktemp("dagster_dev")
    data_dir = tmp / "platform_data"
    generate_demo_world(data_dir / "sources", seed=3, scale=DEMO_SCALE)
    # The API key comes from the repository's .env file, which `dagster dev` loads like a user's would.
    with (
        serve_products_api(data_dir / "sources" / PRODUCTS_API, DEMO_API_KEY) as api_url,
        _dagster_dev(tmp, data_dir, api_url) as dev,
    ):
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        _wait_for_webserver(dev, deadline)
        _wait_for_location(dev, deadline)
        assets = _served_assets(dev)
        # The orders chain, the customers chain its dbt relationships test needs, and the REST source.
        status = _materialize(dev, [*ORDERS_CHAIN, *CUSTOMERS_CHAIN, RAW_PRODUCTS])
        # Two more runs of the staged table alone (with its checks): three points on each plot.
        reruns = [_materialize(dev, [STAGED_ORDERS]) for _ in range(2)]
        history = _numeric_history(dev, STAGED_ORDERS)
    return ServedPlatform(assets, status, data_dir / "warehouse.duckdb", reruns, history)


def test_ui_shows_lineage_raw_to_staged_to_dbt(served: ServedPlatform) -> None:
    assert {RAW_ORDERS, STAGED_ORDERS, STG_ORDERS, MART} <= served.assets.keys()
    assert RAW_ORDERS in served.assets[STAGED_ORDERS].deps
    assert STAGED_ORDERS in served.assets[STG_ORDERS].deps
    assert STG_ORDERS in served.assets[MART].deps


def test_ui_shows_groups_and_kinds(served: ServedPlatform) -> None:
    assert served.assets[RAW_ORDERS].group == "raw"
    assert served.assets[STAGED_ORDERS].group == "staged"
    assert "duckdb" in served.assets[STAGED_ORDERS].kinds
    assert served.assets[STG_ORDERS].group == "dbt_staging"
    assert served.assets[MART].group == "dbt_marts"
    assert {"dbt", "duckdb"} <= served.assets[STG_ORDERS].kinds
    assert {"dbt", "duckdb"} <= served.assets[MART].kinds


def test_ui_shows_schema_contract_on_staged_asset(served: ServedPlatform) -> None:
    assert "schema_contract" in served.assets[STAGED_ORDERS].checks


def test_materializing_from_the_ui_builds_the_mart_and_reads_the_api(served: ServedPlatform) -> None:
    assert served.run_status == "SUCCESS"
    with duckdb.connect(str(served.warehouse), read_only=True) as con:
        ((orders,),) = con.execute("SELECT count(*) FROM staged.shop__orders").fetchall()
        ((days, mart_orders),) = con.execute(
            "SELECT count(*), sum(orders) FROM analytics.fct_daily_revenue"
        ).fetchall()
    assert orders == 1000
    assert days > 30 and mart_orders == orders
    data_dir = served.warehouse.parent
    products = json.loads((data_dir / "sources" / PRODUCTS_API).read_text())
    landed = pq.read_table(
        sorted((data_dir / "landing" / "shop_api" / "products").glob("load_date=*/*.parquet"))
    )
    assert sorted(landed.column("product_id").to_pylist()) == sorted(str(p["product_id"]) for p in products)


def test_quality_score_and_profile_history_is_plottable_in_the_ui(served: ServedPlatform) -> None:
    """The UI plots a numeric metadata entry across an asset's materializations: the quality score, its
    dimensions and the profile (what the anomaly checks compare) are numeric entries on every one."""
    assert served.rerun_statuses == ["SUCCESS", "SUCCESS"]
    assert len(served.staged_history) == 3
    for entries in served.staged_history:
        assert entries["quality/score"][0] == "FloatMetadataEntry"
        assert 0 <= entries["quality/score"][1] <= 100
        for dimension in ("completeness", "validity", "uniqueness", "timeliness", "consistency"):
            assert entries[f"quality/{dimension}"][0] == "FloatMetadataEntry"
        assert entries["profile/null_rate/customer_id"][0] == "FloatMetadataEntry"
        assert entries["rows_written"] == ("IntMetadataEntry", 1000)
