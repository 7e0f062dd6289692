"""Steps of one run spread over two Celery workers (`PLATFORM_EXECUTOR=celery`, Redis the broker), as on
several machines, and a worker SIGKILLed mid-step without anything lost or doubled.

Processes, each with its own working directory, data directory and temporary directory, as separate
machines would have:

- the orchestrator: `dg launch --assets '*'`, the run's own process, which
  submits every step to Redis (it runs no step itself);
- two workers, `celery -A resources.celery_worker worker -c 1`, named worker-a and worker-b.

They share only what machines of a deployment share: PostgreSQL (the Dagster instance, `DAGSTER_PG_*`, with
the platform's own state in it; and the warehouse, `PLATFORM_ENV=postgres`), the GCS emulator (Python
assets' values, `PLATFORM_STAGING_URI=gs://...`; compute logs, through dagster-gcp's `GCSComputeLogManager`)
and Redis; plus the code itself (the checkout and its virtualenv, where dbt also writes its target/ and
logs, as it would in each machine's own checkout). The demo shop's files are delivered on GCS too
(`SHOP_FILES_ROOT`); its database is a SQLite file in the test's "outside world" directory, read by
whichever worker extracts it (it stands for the shop's remote database), and its API is served
on loopback.

Nor do they share a disk for the landing zone: it is in the bucket (`PLATFORM_LANDING_URI=gs://...`), each
worker landing and staging in a cache of it under its own data directory, so a raw step on one worker and
the staged step that reads its files on the other see the same landed files, ledger and landed index.

Run 1 (the whole graph, dbt included) must succeed with steps on both workers, read from the event log:
dagster-celery records, for each step, an engine event naming the Celery worker that runs it. Then a new
orders file is delivered and run 2 starts; while the dbt step runs on one worker, that worker's whole
process group is SIGKILLed (a lost machine: nothing gets to clean up). Its task is unacknowledged
(`task_acks_late`), so Redis hands it to the other worker once the visibility timeout has passed, and the
run finishes with SUCCESS. Nothing is lost or doubled: every step succeeded once, the staged tables and
marts hold exactly the rows of the sources (the new delivery included) and no key twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import dagster as dg
import pytest
import yaml
from demo_expectations import (
    MART_KEYS,
    STAGED_KEYS,
    deliver_orders,
    expected_marts,
    expected_staged,
    key_counts,
)
from fixtures.postgres_server import PostgresCluster, platform_pg_options
from google.cloud import storage

from demo_shop import generate_demo_world
from demo_shop.api_server import serve_products_api
from demo_shop.commands import DEMO_API_KEY, DEMO_API_KEY_VAR, DEMO_API_URL_VAR
from demo_shop.world import PRODUCTS_API
from platform_assets.keys import STAGED_SCHEMA, WAREHOUSE_POOL
from resources.environment import PlatformSettings, build_warehouse

pytestmark = pytest.mark.slow  # a Redis, two Celery workers and two whole-graph runs

REPO_ROOT = Path(__file__).resolve().parent.parent
SCALE = 0.1
"""1,000 orders: the whole graph in well under a minute of steps."""
WORKERS = ("worker-a", "worker-b")
VISIBILITY_TIMEOUT_S = 40
"""Redis hands a lost worker's step to another after this: above the longest step here (the dbt build of
the whole graph, 18-23 s seen on two cores busy with other tests), so that no step still running is handed
out twice."""
DELIVERY_SELECTION = "key:raw/shop/orders+"
"""Run 2: what a delivery of orders re-materializes (its raw and staged assets, their checks, the dbt models
downstream), as the delivery sensor would launch it."""
WAREHOUSE_WRITERS = 2
"""The `warehouse` pool's limit, as deploy/README.md sets it for a PostgreSQL warehouse: steps that write
it run on both workers at once."""
WORKER_START_DEADLINE_S = 90.0
RUN_DEADLINE_S = 240.0
POLL_S = 0.2
DBT_STEP = "dbt_models"
"""The step killed in run 2: the longest, so that it is surely running when its worker dies."""
LANDING_PREFIX = "landing"
COMPUTE_LOG_PREFIX = "compute-logs"
CELERY_WORKER_FIELD = "Celery worker"
"""The metadata entry of dagster-celery's "Executing steps ... in celery worker" engine event."""


@dataclass
class Machines:
    """The processes of the test's "machines" and where each keeps its files."""

    tmp: Path
    outside: Path
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]]
    instance: dg.DagsterInstance
    gcs: storage.Client
    bucket: str

    def log_tail(self, lines: int = 40) -> str:
        tails = []
        for path in sorted(self.tmp.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            tails.append(f"--- {path.name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(tails)

    def fail(self, reason: str) -> NoReturn:
        pytest.fail(f"{reason}\n{self.log_tail()}", pytrace=False)

    def launch(self, name: str, selection: str) -> subprocess.Popen[bytes]:
        """The orchestrator's run of the selected assets and their checks (`dg launch`, Dagster's own CLI, on
        the project), with the code location's executor (Celery)."""
        command = [_bin("dg"), "launch", "--assets", selection, "--target-path", str(REPO_ROOT)]
        env = self.env | _machine_env(self.tmp / "orchestrator") | {"DAGSTER_HOME": str(self._home())}
        return _start(command, env, self.tmp / "orchestrator", self.tmp / f"{name}.log")

    def wait(self, process: subprocess.Popen[bytes], what: str) -> float:
        """Seconds until the process exited with 0 (the run succeeded); a failure fails with the logs."""
        started = time.monotonic()
        try:
            code = process.wait(timeout=RUN_DEADLINE_S)
        except subprocess.TimeoutExpired:
            _stop(process)
            self.fail(f"{what} did not finish within {RUN_DEADLINE_S:.0f} s")
        if code != 0:
            self.fail(f"{what} exited with {code}")
        return time.monotonic() - started

    def _home(self) -> Path:
        return self.tmp / "orchestrator" / "dagster_home"


def test_steps_run_on_two_workers_and_a_killed_worker_s_step_runs_again_on_the_other(
    machines: Machines,
) -> None:
    started = time.monotonic()
    run_1 = machines.launch("run-1", "*")
    run_1_s = machines.wait(run_1, "run 1")
    (first,) = machines.instance.get_runs()
    assert first.status is dg.DagsterRunStatus.SUCCESS
    ran_on = _workers_by_step(machines.instance, first.run_id)
    assert set().union(*ran_on.values()) == {_node(name) for name in WORKERS}, ran_on
    assert all(len(workers) == 1 for workers in ran_on.values()), ran_on
    assert DBT_STEP in ran_on
    _assert_each_step_succeeded_once(machines.instance, first.run_id, ran_on)

    new_ids = deliver_orders(machines.outside / "files" / "shop" / "orders", "orders_90001.csv", 900_001, 3)
    _upload(machines.gcs, machines.outside, machines.env["SHOP_FILES_ROOT"], "orders/orders_90001.csv")
    run_2 = machines.launch("run-2", DELIVERY_SELECTION)
    run_id = _wait_for_new_run(machines, known={first.run_id})
    victim = _wait_for_step_on_a_worker(machines, run_id, DBT_STEP)
    killed_at = time.monotonic()
    _kill_group(machines.workers[victim])
    machines.wait(run_2, "run 2, after a worker was killed mid-step")
    recovered_s = time.monotonic() - killed_at

    second = machines.instance.get_run_by_id(run_id)
    assert second is not None and second.status is dg.DagsterRunStatus.SUCCESS
    ran_on = _workers_by_step(machines.instance, run_id)
    survivor = next(name for name in WORKERS if name != victim)
    assert ran_on[DBT_STEP] == [_node(victim), _node(survivor)], ran_on
    _assert_each_step_succeeded_once(machines.instance, run_id, ran_on)

    warehouse = build_warehouse(PlatformSettings.from_env(machines.env))
    sources = machines.outside
    assert key_counts(warehouse, STAGED_SCHEMA, STAGED_KEYS) == expected_staged(sources)
    assert key_counts(warehouse, "analytics", MART_KEYS) == expected_marts(sources)
    order_ids = ", ".join(map(str, new_ids))
    ((delivered,),) = warehouse.query(
        f"SELECT count(*) FROM analytics.fct_orders WHERE order_id IN ({order_ids})"
    )
    assert delivered == len(new_ids)
    # What the workers left on their own disks: their cache of the landing zone and nothing else (state is in
    # PostgreSQL; landed files, values and compute logs on GCS).
    for name in WORKERS:
        assert sorted(path.name for path in (machines.tmp / name / "data").iterdir()) == ["landing_cache"]
    landing = machines.gcs.bucket(machines.bucket).list_blobs(prefix=f"{LANDING_PREFIX}/shop/orders/")
    landed = [blob.name for blob in landing if not blob.name.endswith(".lineage.json")]
    assert sum("orders_90001" in name for name in landed) == 1, (
        f"the delivery landed once, in the bucket: {landed}"
    )
    compute_logs = machines.gcs.bucket(machines.bucket).list_blobs(prefix=COMPUTE_LOG_PREFIX, max_results=1)
    assert any(compute_logs), "no step's compute log reached GCS"
    print(
        f"\nrun 1 {run_1_s:.0f} s; run 2 finished {recovered_s:.0f} s after {victim} was killed "
        f"(visibility timeout {VISIBILITY_TIMEOUT_S} s); test {time.monotonic() - started:.0f} s"
    )


@pytest.fixture
def machines(
    tmp_path: Path,
    postgres_server: PostgresCluster,
    gcs_emulator: str,
    gcs_client: storage.Client,
    gcs_bucket: str,
    redis_server: str,
    dbt_manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Machines]:
    """The outside world (demo shop files on GCS, its database, its API), the shared services, and two
    workers started and ready; the orchestrator's runs are started by the test."""
    outside = tmp_path / "outside"
    generate_demo_world(outside, seed=7, scale=SCALE)
    files_root = f"gs://{gcs_bucket}/shop"
    for path in sorted((outside / "files" / "shop").rglob("*")):
        if path.is_file():
            _upload(gcs_client, outside, files_root, str(path.relative_to(outside / "files" / "shop")))
    with ExitStack() as stack:
        api_url = stack.enter_context(serve_products_api(outside / PRODUCTS_API, DEMO_API_KEY))
        env = _platform_env(postgres_server, gcs_emulator, gcs_bucket, redis_server) | {
            "SHOP_FILES_ROOT": files_root,
            "SHOP_DB_URL": f"sqlite:///{outside / 'shop.sqlite'}",
            DEMO_API_URL_VAR: api_url,
            DEMO_API_KEY_VAR: DEMO_API_KEY,
        }
        _write_instance_yaml(tmp_path / "orchestrator" / "dagster_home", gcs_bucket)
        workers = {}
        for name in WORKERS:
            machine = tmp_path / name
            workers[name] = stack.enter_context(_worker(name, env | _machine_env(machine), tmp_path))
        for name, process in workers.items():
            _wait_until_ready(name, process, tmp_path / f"{name}.log")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        instance = stack.enter_context(
            dg.DagsterInstance.from_config(str(tmp_path / "orchestrator" / "dagster_home"))
        )
        instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, WAREHOUSE_WRITERS)
        yield Machines(tmp_path, outside, env, workers, instance, gcs_client, gcs_bucket)


def _platform_env(
    postgres: PostgresCluster, gcs_emulator: str, bucket: str, redis_url: str
) -> dict[str, str]:
    """What every machine of the deployment is given: the same instance, warehouse, bucket and broker."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "PLATFORM_"))}
    return base | {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": postgres.create_database(),
        "PLATFORM_ENV": "postgres",
        **platform_pg_options(postgres.url(postgres.create_database())),
        "PLATFORM_PG_PASSWORD": "",
        "PLATFORM_STAGING_URI": f"gs://{bucket}/staging",
        "PLATFORM_LANDING_URI": f"gs://{bucket}/{LANDING_PREFIX}",
        "STORAGE_EMULATOR_HOST": gcs_emulator,
        "PLATFORM_EXECUTOR": "celery",
        "PLATFORM_CELERY_BROKER": f"{redis_url}/0",
        "PLATFORM_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
    }


def _machine_env(machine: Path) -> dict[str, str]:
    """What is each machine's own: its data directory (scratch: its cache of the landing zone, the staging
    spill) and its temporary directory (where the compute log manager captures a step's output before
    uploading it)."""
    (machine / "tmp").mkdir(parents=True, exist_ok=True)
    return {"PLATFORM_DATA_DIR": str(machine / "data"), "TMPDIR": str(machine / "tmp")}


def _write_instance_yaml(home: Path, bucket: str) -> None:
    """The deployment's instance (deploy/dagster.yaml: PostgreSQL, pools) with compute logs on GCS, as
    deploy/README.md says for several machines: a step's output is uploaded from the worker that ran it."""
    config = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    config["compute_logs"] = {
        "module": "dagster_gcp.gcs.compute_log_manager",
        "class": "GCSComputeLogManager",
        "config": {"bucket": bucket, "prefix": COMPUTE_LOG_PREFIX},
    }
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@contextmanager
def _worker(name: str, env: dict[str, str], tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One Celery worker, one step at a time, from its own directory, as a systemd unit would start it."""
    command = [
        _bin("celery"), "-A", "resources.celery_worker", "worker", "-n", f"{name}@%h", "-Q", "dagster",
        "-c", "1", "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "-l", "INFO",
    ]  # fmt: skip
    process = _start(command, env, tmp / name, tmp / f"{name}.log")
    try:
        yield process
    finally:
        _stop(process)


def _wait_until_ready(name: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WORKER_START_DEADLINE_S
    while " ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"Celery worker {name} did not get ready (exit {process.returncode}):\n{tail}")
        time.sleep(POLL_S)


def _wait_for_new_run(machines: Machines, known: set[str]) -> str:
    deadline = time.monotonic() + RUN_DEADLINE_S
    while time.monotonic() < deadline:
        new = [run.run_id for run in machines.instance.get_runs() if run.run_id not in known]
        if new:
            return new[0]
        time.sleep(POLL_S)
    machines.fail("run 2 was never created")


def _wait_for_step_on_a_worker(machines: Machines, run_id: str, step: str) -> str:
    """The worker running `step` of the run, as soon as dagster-celery records that it started it."""
    deadline = time.monotonic() + RUN_DEADLINE_S
    while time.monotonic() < deadline:
        workers = _workers_by_step(machines.instance, run_id).get(step)
        if workers:
            return next(name for name in WORKERS if _node(name) == workers[0])
        time.sleep(POLL_S)
    machines.fail(f"step {step} of run {run_id} never started on a worker")


def _workers_by_step(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Each step's Celery workers in the order they took it, from dagster-celery's engine events."""
    found: dict[str, list[str]] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if event is not None and event.step_key and CELERY_WORKER_FIELD in metadata:
            found.setdefault(event.step_key, []).append(str(metadata[CELERY_WORKER_FIELD].value))
    return found


def _assert_each_step_succeeded_once(
    instance: dg.DagsterInstance, run_id: str, ran_on: dict[str, list[str]]
) -> None:
    successes = [
        entry.step_key for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    ]
    assert sorted(successes) == sorted(ran_on), f"steps and their successes differ: {successes} vs {ran_on}"


def _node(name: str) -> str:
    """Celery's node name for `-n <name>@%h`."""
    return f"{name}@{os.uname().nodename}"


def _upload(client: storage.Client, outside: Path, files_root: str, relative: str) -> None:
    """A delivery: the demo's file, under the shop's files root on GCS."""
    bucket, _, prefix = files_root.removeprefix("gs://").partition("/")
    client.bucket(bucket).blob(f"{prefix}/{relative}").upload_from_filename(
        outside / "files" / "shop" / relative
    )


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _start(command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """A process in its own directory and session (so that it is killed with its children), output to a
    log file."""
    cwd.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its pool: a lost machine, nothing gets to acknowledge or clean up."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (a Celery worker finishes its step first), SIGKILL it after 20 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
