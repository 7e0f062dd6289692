"""The Dagster UI as a user starts it, for the slow tests that talk to it over HTTP or drive it in a browser.

Used by tests/test_dagster_dev_ui.py (`dagster dev`, as the README says, for its API tests and its browser
walk) and by the deployment tests (`DagsterServer` over the processes they start themselves). Every server
runs from the repository root with a throwaway DAGSTER_HOME and data directory, logs to a file, lives in a
session of its own and is stopped as a whole process group, so a failing test never leaves a server (or its
code server) behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCATION_NAME = "self_healing_platform"
"""`location_name` in workspace.yaml."""

STARTUP_DEADLINE_S = 180.0
"""Webserver up and code location loaded (including one `dbt parse` by `prepare_if_dev`): ~35 s on an
idle 2-CPU machine, 70 s seen under load."""
STOP_GRACE_S = 15.0
"""How long a server gets to shut down on SIGTERM before its process group is killed."""
POLL_INTERVAL_S = 0.5
RUN_DEADLINE_S = 300.0
"""Queue, launch and run raw -> staged -> check -> dbt build in subprocesses: ~40 s seen here."""

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

RUNNING_SENSORS_QUERY = """
query RunningSensors($repository: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repository, sensorStatus: RUNNING) {
    __typename
    ... on Sensors { results { id name } }
    ... on PythonError { message }
  }
}
"""
STOP_SENSOR_MUTATION = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""

RUNS_IN_PROGRESS_QUERY = """
query RunsInProgress {
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    __typename
    ... on Runs { results { runId status } }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True)
class DagsterServer:
    """Running Dagster processes (one `dagster dev`, or a deployment's webserver and daemon) and the UI's
    address."""

    processes: dict[str, subprocess.Popen[bytes]]
    base_url: str
    log_paths: dict[str, Path]

    def log_tail(self, lines: int = 60) -> str:
        """The end of each process's output: the only place a failed start or a broken code location shows."""
        tails = []
        for name, path in self.log_paths.items():
            text = path.read_text(errors="replace").splitlines() if path.exists() else ["<no log written>"]
            tails.append(f"--- {name} log (tail) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(tails)

    def fail(self, reason: str) -> NoReturn:
        pytest.fail(f"{reason}\n{self.log_tail()}", pytrace=False)

    def check_running(self, deadline: float, waiting_for: str) -> None:
        """Fail fast if a process died, and never wait past the deadline."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                self.fail(f"{name} exited with code {process.returncode} while waiting for {waiting_for}")
        if time.monotonic() > deadline:
            self.fail(f"timed out waiting for {waiting_for}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = {"query": query, "variables": variables or {}}
        response = requests.post(f"{self.base_url}/graphql", json=payload, timeout=30)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            self.fail(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_until_loaded(self, timeout_s: float = STARTUP_DEADLINE_S) -> None:
        """Webserver answering and the code location loaded: only then does the UI show assets."""
        deadline = time.monotonic() + timeout_s
        self._wait_for_webserver(deadline)
        self._wait_for_location(deadline)

    def _wait_for_webserver(self, deadline: float) -> None:
        while True:
            self.check_running(deadline, "the webserver")
            try:
                if requests.get(f"{self.base_url}/server_info", timeout=2).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(POLL_INTERVAL_S)

    def _wait_for_location(self, deadline: float) -> None:
        """The webserver answers before the code location has loaded (assets come back empty meanwhile); a
        code location that fails to import is reported here, not as an HTTP error."""
        while True:
            self.check_running(deadline, f"code location {LOCATION_NAME!r}")
            workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
            if workspace["__typename"] == "PythonError":
                self.fail(f"workspace failed to load: {workspace['message']}")
            entries = {entry["name"]: entry for entry in workspace["locationEntries"]}
            entry = entries.get(LOCATION_NAME)
            if entry is not None and entry["loadStatus"] == "LOADED":
                location = entry["locationOrLoadError"]
                if location is None or location["__typename"] == "PythonError":
                    self.fail(f"code location {LOCATION_NAME!r} failed to load: {_error_chain(location)}")
                return
            time.sleep(POLL_INTERVAL_S)

    def launch(self, assets: list[str]) -> str:
        """Launch one run of the selected assets (and their checks), as the UI's "Materialize selected"
        button does; returns the run id."""
        selector = {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": key.split("/")} for key in assets],
        }
        launched = self.graphql(LAUNCH_MUTATION, {"selector": selector})["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            self.fail(f"launching the materialization failed: {launched}")
        return launched["run"]["runId"]

    def wait_for_run(self, run_id: str, timeout_s: float = RUN_DEADLINE_S) -> str:
        """Follow a run to its end (queued, dequeued by the daemon, steps in subprocesses); returns its
        final status."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_running(deadline, f"run {run_id}")
            run = self.graphql(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
            if run["__typename"] != "Run":
                self.fail(f"run {run_id} not found: {run}")
            if run["status"] in FINISHED_STATUSES:
                return run["status"]
            time.sleep(POLL_INTERVAL_S)

    def stop_sensors(self, names: list[str]) -> None:
        """Switch the named sensors off, as the UI's toggle does, and fail unless each was running."""
        repository = {"repositoryLocationName": LOCATION_NAME, "repositoryName": "__repository__"}
        found = self.graphql(RUNNING_SENSORS_QUERY, {"repository": repository})["sensorsOrError"]
        if found["__typename"] != "Sensors":
            self.fail(f"listing the running sensors failed: {found}")
        running = {sensor["name"]: sensor["id"] for sensor in found["results"]}
        for name in names:
            if name not in running:
                self.fail(f"sensor {name} is not running (running: {sorted(running)})")
            stopped = self._stop_sensor(running[name])
            if stopped["__typename"] != "StopSensorMutationResult":
                self.fail(f"stopping sensor {name} failed: {stopped}")

    def _stop_sensor(self, sensor_id: str) -> dict[str, Any]:
        """The UI's stop, asked again after an HTTP 500: Dagster's webserver and its daemon both create a
        sensor's first state row, and when they race the webserver's insert fails (sqlite3.IntegrityError:
        UNIQUE constraint failed: jobs.job_origin_id, in a clean-clone CI run). The row exists then, and
        the second stop updates it."""
        try:
            return self.graphql(STOP_SENSOR_MUTATION, {"id": sensor_id})["stopSensor"]
        except requests.HTTPError as error:
            if error.response is None or error.response.status_code != 500:
                raise
        time.sleep(1.0)
        return self.graphql(STOP_SENSOR_MUTATION, {"id": sensor_id})["stopSensor"]

    def wait_until_idle(self, timeout_s: float = RUN_DEADLINE_S) -> None:
        """No run in progress: only then is the DuckDB warehouse free for the test process to read (DuckDB
        admits one writing process)."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.graphql(RUNS_IN_PROGRESS_QUERY)["runsOrError"]
            if runs["__typename"] != "Runs":
                self.fail(f"listing runs failed: {runs}")
            if not runs["results"]:
                return
            busy = [(run["runId"], run["status"]) for run in runs["results"]]
            self.check_running(deadline, f"runs to finish: {busy}")
            time.sleep(POLL_INTERVAL_S)

    def materialize(self, assets: list[str]) -> str:
        """Launch and follow one run; returns the final status. Each step of a UI run is a process of its
        own that loads the code location, so the selection is kept small."""
        return self.wait_for_run(self.launch(assets))


def free_port() -> int:
    """A port nobody listens on now, so parallel runs and a developer's own `dagster dev` don't collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dagster_env(
    tmp: Path, data_dir: Path, api_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
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
    env.update(extra or {})
    return env


def _error_chain(error: dict[str, Any] | None) -> str:
    """The load error and its cause: the cause names the project's own exception (e.g. a bad setting)."""
    if error is None:
        return "no details reported"
    messages = [error["message"].strip()]
    if error.get("cause"):
        messages.append(f"caused by: {error['cause']['message'].strip()}")
    return "\n".join(messages)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group_gone(process: subprocess.Popen[bytes], pgid: int, timeout_s: float) -> bool:
    """Reap the leader and wait until no process of the group is left: a server may exit before its
    children (webserver, daemon, code servers, run workers) have."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.poll()
        if process.returncode is not None and not _group_alive(pgid):
            return True
        time.sleep(0.2)
    return False


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, then SIGKILL it: backgrounded `dagster dev` is known to linger."""
    stop_groups([process])


def stop_groups(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """`stop_group` for several servers at once: every group gets SIGTERM first and they shut down side by
    side, instead of each waiting for the one before (seconds apiece for a webserver, daemon or code
    server). Groups still alive after the shared grace period are SIGKILLed."""
    alive = []
    for process in processes:
        pgid = process.pid  # start_new_session=True: the leader's pid is the group id
        if _group_alive(pgid):
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            alive.append(process)
        else:
            process.wait()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in alive:
        if _wait_group_gone(process, process.pid, deadline - time.monotonic()):
            continue
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        _wait_group_gone(process, process.pid, 10)


@contextmanager
def _started(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One process from the repository root, output to a log file (a pipe nobody reads would fill up and
    block the server), in a session of its own so that it is stopped with all its children."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def dagster_dev(tmp: Path, data_dir: Path, api_url: str) -> Iterator[DagsterServer]:
    """`dagster dev -w workspace.yaml` on a free port: webserver, daemon and code server in one group."""
    port = free_port()
    log_path = tmp / "dagster_dev.log"
    command = [_bin("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with _started(command, dagster_env(tmp, data_dir, api_url), log_path) as process:
        yield DagsterServer({"dagster dev": process}, f"http://127.0.0.1:{port}", {"dagster dev": log_path})
