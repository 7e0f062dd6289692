"""The soak's fault injector: a schedule drawn from a seed (every kind at least once, then kinds at random,
start times uniform over the soak, so faults overlap), each fault fired in a thread of its own at its time
against the real parts, and recorded with its kind, start, end, what the platform is expected to do with
it and which source it hits (how the end of the soak matches it to incidents in the healing ledger).

Faults aim at work in progress: an API fault is armed and starts with the next request, a connection is
terminated and a server restarted when the platform holds a connection, a run worker is killed while one
runs. One that meets nothing within its wait is recorded as such and not scored.

What the platform should do (`Kind.expected`):
- `heal`: repair it with no human. 429 storms, 5xx bursts and stalled requests (long enough that some
  reach the healing layer), a re-delivered file, a file that grows after it is listed, a lone malformed
  row (quarantined, the rest of its file staged), the source database's connections terminated or the
  server restarted, the landing disk full for a while, a killed step, the daemon or the code server
  restarted.
- `approve`: propose a repair a human approves (`bench/soak_operator.py` plays that human): a column of
  the source retyped (integer to decimal), which staging must not widen on its own.

Not a kind (yet): a declared non-nullable column dropped at the source (or renamed: dropped plus added).
Tried: the delivery is typed over the run's landed files together, so its rows read as NULLs of a column
that older files still have, and staging refuses them as bad rows (`data_quality`, naming the column's
nullable rule) instead of seeing drift; the refused extraction then blocks the entity until a human
intervenes. Seeing it as drift needs the schema decided per delivery.
- a category: escalate it with that diagnosis; after the escalation the operator repairs the cause (a
  corrected delivery, the credentials renewed) and the platform must then catch up with nothing lost. An
  added column the catalog does not declare is staged without it and escalated (`schema_drift`) for a
  human to declare; nothing to repair.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import psycopg2
from dagster_processes import stop_group
from deployment import Deployment
from fixtures.postgres_server import PostgresCluster
from soak_delivery import ORDERS_PER_FILE, DeliveryDriver, order_row, write_csv
from soak_sources import ApiSwitch

CODE_SERVER_UNIT = "dataplatform-code-server"
MEAN_GAP_S = 12.0
"""One fault every 12 s on average by default (`--gap`): 15 in 3 minutes (every kind once, at least)."""
AIM_WAIT_S = 90.0
"""How long a fault aimed at work in progress waits for some (a request, a connection, a run)."""
API_STALL_S = 12.0
LOAD_QUERY = r"^\s*(COPY|INSERT|MERGE)"
BALLAST_CHUNK = 1 << 20
QUIET_TAIL_S = 15.0
"""No fault starts in the last seconds of the soak, so each has begun before the quiet period."""


@dataclass
class Fault:
    kind: str
    at_s: float
    """Seconds after the soak's start at which it is scheduled."""
    expected: str
    """`heal`, `approve`, or the category it must be escalated as (`Kind.expected`)."""
    source: str | None
    """The source it hits (`shop`, `shop_db`, `shop_api`); None for the platform's own processes."""
    started_at: float = 0.0
    ended_at: float = 0.0
    detail: str = ""
    hit: bool = True
    """False when the fault met nothing to break (no request during a storm, no connection to terminate,
    no run to kill): it tested nothing and is not scored."""
    asset: str | None = None
    """The asset the fault is aimed at when it is one (a table altered at the source): an incident of that
    asset is this fault's, however late the next extraction meets the change."""
    marker: str | None = None
    """Text that only this fault's incidents carry in their evidence (the refused file's name): such an
    incident is this fault's, however late the file is met."""
    repair: Callable[[], str] | None = None
    """What the human does once the platform escalated it (returns what was done); None: nothing to do."""
    repaired: str = ""
    repaired_at: float = 0.0

    @property
    def healable(self) -> bool:
        return self.expected == "heal"


@dataclass(frozen=True)
class Kind:
    name: str
    expected: str
    source: str | None


HEAL, APPROVE = "heal", "approve"
KINDS = [
    Kind("rest_429_storm", HEAL, "shop_api"),
    Kind("rest_5xx_burst", HEAL, "shop_api"),
    Kind("rest_requests_stalled", HEAL, "shop_api"),
    Kind("malformed_row", HEAL, "shop"),
    Kind("malformed_delivery", "data_quality", "shop"),
    Kind("file_redelivered_changed", HEAL, "shop"),
    Kind("file_grows_after_listing", HEAL, "shop"),
    Kind("pg_source_connections_terminated", HEAL, "shop_db"),
    Kind("pg_source_restarted", HEAL, "shop_db"),
    Kind("credentials_expired", "auth_permission", "shop_db"),
    Kind("landing_disk_full", HEAL, None),
    Kind("step_sigkilled", HEAL, None),
    Kind("daemon_sigkilled", HEAL, None),
    Kind("code_server_restarted", HEAL, None),
    Kind("schema_drift_added_column", "schema_drift", "shop_db"),
    Kind("schema_drift_retyped_column", APPROVE, "shop_db"),
]
WAREHOUSE_KINDS = [Kind("warehouse_restarted", HEAL, None)]
"""With a warehouse server (`--warehouse postgres`): restarted, during a load when one is seen."""
SOURCE_DOWN = frozenset({"source_unavailable", "transient_network", "timeout"})
CAUSES: dict[str, frozenset[str]] = {
    "rest_429_storm": frozenset({"rate_limited"}),
    "rest_5xx_burst": SOURCE_DOWN,
    "rest_requests_stalled": SOURCE_DOWN,
    "pg_source_connections_terminated": SOURCE_DOWN,
    "pg_source_restarted": SOURCE_DOWN,
    "warehouse_restarted": SOURCE_DOWN | {"interrupted"},
    "landing_disk_full": frozenset({"resource_exhausted"}),
    "step_sigkilled": frozenset({"interrupted"}),
    "daemon_sigkilled": frozenset({"interrupted"}),
    "code_server_restarted": frozenset({"interrupted"}),
}
"""The categories a healable fault's failures are diagnosed as (`sensors/healing/failure_rules.yaml`): an
incident near several faults in time is the one's that can cause it (`soak_measure.match`). Credited to the
latest fault of its source instead, the landing disk's `resource_exhausted` went to terminated connections
or a growing file that began meanwhile (the 30-minute soak), and their times to recover took the disk's."""
ONCE = {"schema_drift_retyped_column"}
"""Kinds that change the source for good: drawn once per soak."""


def kinds_for(warehouse: str) -> list[Kind]:
    return KINDS + (WAREHOUSE_KINDS if warehouse == "postgres" else [])


def schedule(minutes: float, seed: int, kinds_drawn: list[Kind], gap_s: float = MEAN_GAP_S) -> list[Fault]:
    """Every kind once (in a seeded order), then seeded random kinds, at seeded uniform start times."""
    rng = random.Random(seed)
    span = max(minutes * 60 - QUIET_TAIL_S, 10.0)
    count = max(len(kinds_drawn), round(minutes * 60 / gap_s))
    again = [kind for kind in kinds_drawn if kind.name not in ONCE]
    kinds = rng.sample(kinds_drawn, len(kinds_drawn)) + [
        rng.choice(again) for _ in range(count - len(kinds_drawn))
    ]
    times = sorted(rng.uniform(3.0, span) for _ in kinds)
    return [Fault(kind.name, at, kind.expected, kind.source) for kind, at in zip(kinds, times, strict=True)]


@dataclass
class Injector:
    """Fires a schedule's faults against the soak's parts, each in its own thread."""

    deployment: Deployment
    driver: DeliveryDriver
    switch: ApiSwitch
    source: PostgresCluster
    """The shop's own PostgreSQL server (the `shop_db` source), which faults restart."""
    shop_db: str
    shop_role: str
    """The role the platform reads the shop database as (a password login)."""
    landing: Path | None
    """The landing zone's own small filesystem (a tmpfs), None where it could not be mounted."""
    warehouse: PostgresCluster | None
    """The warehouse's PostgreSQL server, None for the embedded DuckDB."""
    rng: random.Random
    threads: list[threading.Thread] = field(default_factory=list)
    restart_lock: threading.Lock = field(default_factory=threading.Lock)
    api_lock: threading.Lock = field(default_factory=threading.Lock)
    drifts: int = 0

    def fire(self, fault: Fault) -> None:
        action: Callable[[Fault], None] = getattr(self, fault.kind)
        thread = threading.Thread(target=self._run, args=(action, fault), name=fault.kind, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=180)

    def _run(self, action: Callable[[Fault], None], fault: Fault) -> None:
        fault.started_at = time.time()
        try:
            action(fault)
        except Exception as error:
            fault.detail, fault.hit = f"not injected: {error!r}"[:200], False
        fault.ended_at = time.time()

    # The REST source

    def rest_429_storm(self, fault: Fault) -> None:
        self._api_fault(fault, self.rng.uniform(4, 30), status=HTTPStatus.TOO_MANY_REQUESTS)

    def rest_5xx_burst(self, fault: Fault) -> None:
        self._api_fault(fault, self.rng.uniform(4, 30), status=HTTPStatus.SERVICE_UNAVAILABLE)

    def rest_requests_stalled(self, fault: Fault) -> None:
        """Every request waits longer than the client's timeout (`timeout_seconds: 10` in shop_api.yaml)."""
        self._api_fault(fault, self.rng.uniform(10, 40), stall_s=API_STALL_S)

    def _api_fault(
        self, fault: Fault, seconds: float, *, status: HTTPStatus | None = None, stall_s: float = 0.0
    ) -> None:
        """Armed until the next request (at most `AIM_WAIT_S`), then on for `seconds`. One API fault at a
        time: a second one waits for the first."""
        what = f"{int(status)}" if status else f"stalled {stall_s:.0f} s"
        with self.api_lock:
            refused_before = self.switch.refused
            self.switch.arm(seconds, status=status, stall_s=stall_s)
            if not self.switch.fired.wait(AIM_WAIT_S):
                self.switch.disarm()
                fault.detail, fault.hit = f"{what}: no request within {AIM_WAIT_S:.0f} s", False
                return
            fault.started_at = time.time()
            time.sleep(seconds)
            self.switch.disarm()
        fault.detail = f"{what} for {seconds:.0f} s, {self.switch.refused - refused_before} requests hit"

    # The file source

    def malformed_row(self, fault: Fault) -> None:
        """One good order and one whose amount is not a number: the bad one is quarantined, never staged,
        and the good one staged."""
        with self.driver.lock:
            good, bad = self.driver.next_order_ids(2)
            broken = order_row(bad, "placed")
            broken[5] = "n/a"
            name, kept = f"orders_soak_malformed_{bad}.csv", order_row(good, "placed")
            self.driver.write_file(name, [kept, broken])
            self.driver.record_file(name, [kept])
            self.driver.quarantine_expected.add(bad)
        fault.detail = f"{name}: order {bad} malformed"

    def malformed_delivery(self, fault: Fault) -> None:
        """A file whose every order has a status the catalog does not allow: more bad rows than the entity
        tolerates, so staging refuses it (data quality, escalated). The human's repair: the same file
        delivered again, corrected."""
        with self.driver.lock:
            ids = self.driver.next_order_ids(ORDERS_PER_FILE)
            name = f"orders_soak_refused_{ids[0]}.csv"
            self.driver.write_file(name, [order_row(i, "teleported") for i in ids])
            self.driver.quarantine_expected.update(ids)

        def repair() -> str:
            with self.driver.lock:
                self.driver.quarantine_expected.difference_update(ids)
                self.driver.deliver_orders(name, [order_row(i, "placed") for i in ids])
            return f"{name} delivered again, corrected"

        fault.repair = repair
        fault.marker = name
        fault.detail = f"{name}: {len(ids)} orders with status 'teleported'"

    def file_redelivered_changed(self, fault: Fault) -> None:
        """An earlier soak file delivered again under its name, every order with another status."""
        with self.driver.lock:
            earlier = sorted(n for n in self.driver.files if n.startswith("orders_soak_0"))
            if not earlier:
                fault.detail, fault.hit = "no earlier file to re-deliver", False
                return
            name = self.rng.choice(earlier)
            rows = [
                order_row(int(row[0]), self.rng.choice([s for s in ("paid", "shipped") if s != row[3]]))
                for row in self.driver.files[name]
            ]
            self.driver.deliver_orders(name, rows)
        fault.detail = f"{name} re-delivered with {len(rows)} changed rows"

    def file_grows_after_listing(self, fault: Fault) -> None:
        """Written in place (no temporary name), two rows, then after one to two sensor polls three more."""
        with self.driver.lock:
            ids = self.driver.next_order_ids(5)
        name = f"orders_soak_growing_{ids[0]}.csv"
        path = self.driver.orders_dir / name
        first = [order_row(i, "placed") for i in ids]
        write_csv(path, first[:2])
        time.sleep(self.rng.uniform(5, 12))
        with path.open("a", newline="") as handle:
            handle.writelines(",".join(row) + "\r\n" for row in first[2:])
        with self.driver.lock:
            self.driver.record_file(name, first)
        fault.detail = f"{name}: 2 rows, 3 more appended"

    def landing_disk_full(self, fault: Fault) -> None:
        """The landing zone's filesystem filled to the last byte for a while, then freed."""
        if self.landing is None:
            fault.detail, fault.hit = "no filesystem of its own for the landing zone (needs root)", False
            return
        seconds = self.rng.uniform(20, 60)
        ballast = self.landing / ".soak_ballast"
        with ballast.open("wb", buffering=0) as handle, contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                handle.write(bytes(BALLAST_CHUNK))
        time.sleep(seconds)
        ballast.unlink()
        fault.detail = f"landing filesystem full for {seconds:.0f} s"

    # The database source

    def pg_source_connections_terminated(self, fault: Fault) -> None:
        """The platform's connections to the shop database terminated as soon as it holds one, again
        whenever it reconnects, for a while."""
        if not self._platform_connected(AIM_WAIT_S):
            fault.detail, fault.hit = f"no connection of the platform within {AIM_WAIT_S:.0f} s", False
            return
        fault.started_at = time.time()
        seconds, killed = self.rng.uniform(5, 20), 0
        until = time.time() + seconds
        with closing(psycopg2.connect(self.source.dsn())) as admin:
            admin.autocommit = True
            with admin.cursor() as cursor:
                while time.time() < until:
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE usename = %s",
                        (self.shop_role,),
                    )
                    killed += cursor.fetchone()[0]
                    time.sleep(0.1)
        fault.detail = f"{killed} connections terminated over {seconds:.0f} s"

    def pg_source_restarted(self, fault: Fault) -> None:
        """The shop's server restarted (fast shutdown) while the platform holds a connection."""
        if not self._platform_connected(AIM_WAIT_S):
            fault.detail, fault.hit = f"no connection of the platform within {AIM_WAIT_S:.0f} s", False
            return
        fault.started_at = time.time()
        began = time.time()
        self.source.restart()
        fault.detail = f"server restarted ({time.time() - began:.1f} s) during an extraction"

    def credentials_expired(self, fault: Fault) -> None:
        """The platform's login to the shop database expires (`VALID UNTIL` in the past): no automatic
        repair can renew it. The human's repair: the login renewed."""
        self.source.execute("postgres", f"ALTER ROLE {self.shop_role} VALID UNTIL '2000-01-01'")

        def repair() -> str:
            self.source.execute("postgres", f"ALTER ROLE {self.shop_role} VALID UNTIL 'infinity'")
            return f"login {self.shop_role} renewed"

        fault.repair = repair
        fault.detail = f"login {self.shop_role} expired"

    def _platform_connected(self, within_s: float) -> bool:
        deadline = time.time() + within_s
        while time.time() < deadline:
            with closing(psycopg2.connect(self.source.dsn())) as admin, admin.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (self.shop_role,))
                if cursor.fetchone()[0]:
                    return True
            time.sleep(0.1)
        return False

    def schema_drift_added_column(self, fault: Fault) -> None:
        self.drifts += 1
        column = f"soak_note_{self.drifts}"
        self._alter("customers", f"ADD COLUMN {column} text DEFAULT 'soak'", "customer_id = 5")
        fault.asset = "staged/shop_db/customers"
        self.driver.customers_touched.add(5)
        fault.detail = f"customers.{column} added"

    def schema_drift_retyped_column(self, fault: Fault) -> None:
        """An integer column turned decimal at the source (the values still whole): staging must not widen
        the staged column on its own; it proposes `evolve_schema` for a human to approve."""
        self._alter("payments", "ALTER COLUMN order_id TYPE numeric(14, 2)", "payment_id = 1")
        fault.asset = "staged/shop_db/payments"
        fault.detail = "payments.order_id retyped bigint -> numeric(14, 2)"

    def _alter(self, table: str, change: str, touched: str) -> None:
        """`change` to `table`, and the rows `touched` updated so that the next extraction reads them."""
        with (
            closing(psycopg2.connect(self.driver.shop_dsn)) as connection,
            connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(f"ALTER TABLE {table} {change}")
            cursor.execute(f"UPDATE {table} SET updated_at = now() AT TIME ZONE 'UTC' WHERE {touched}")

    # The warehouse

    def warehouse_restarted(self, fault: Fault) -> None:
        """The warehouse's server restarted (fast shutdown) during a load (a `COPY` or an insert from the
        platform) when one is seen within `AIM_WAIT_S`, else at the end of that wait."""
        assert self.warehouse is not None
        during = self._query_running(self.warehouse, "warehouse", LOAD_QUERY, AIM_WAIT_S)
        fault.started_at = time.time()
        self.warehouse.restart()
        fault.detail = f"warehouse server restarted {'during a load' if during else '(no load seen)'}"

    @staticmethod
    def _query_running(server: PostgresCluster, database: str, pattern: str, within_s: float) -> bool:
        deadline = time.time() + within_s
        with closing(psycopg2.connect(server.dsn())) as admin, admin.cursor() as cursor:
            admin.autocommit = True
            while time.time() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ~* %s "
                    "AND state = 'active' AND pid <> pg_backend_pid()",
                    (database, pattern),
                )
                if cursor.fetchone()[0]:
                    return True
                time.sleep(0.05)
        return False

    # The platform's own processes

    def step_sigkilled(self, fault: Fault) -> None:
        """SIGKILL of a run worker (the process executing a run's steps), a child of the code server: the
        first one seen within `AIM_WAIT_S`."""
        deadline = time.time() + AIM_WAIT_S
        while time.time() < deadline:
            workers = run_workers(self.deployment)
            if workers:
                pid = self.rng.choice(workers)
                with contextlib.suppress(ProcessLookupError):  # ended meanwhile: look again
                    os.kill(pid, signal.SIGKILL)
                    fault.started_at = time.time()
                    fault.detail = f"run worker {pid} killed"
                    return
            time.sleep(0.3)
        fault.detail, fault.hit = "no run in progress: nothing killed", False

    def daemon_sigkilled(self, fault: Fault) -> None:
        down = self.rng.uniform(3, 15)
        with self.restart_lock:
            self.deployment.kill_daemon()
            time.sleep(down)
            self.deployment.restart_daemon()
        fault.detail = f"daemon group killed, restarted after {down:.0f} s"

    def code_server_restarted(self, fault: Fault) -> None:
        """Stopped as systemd stops it (SIGTERM, then SIGKILL after the grace) and started from its unit."""
        with self.restart_lock:
            stop_group(self.deployment.server.processes[CODE_SERVER_UNIT])
            self.deployment.restarts += 1
            log = self.deployment.tmp / f"{CODE_SERVER_UNIT}.{self.deployment.restarts}.log"
            self.deployment.start(CODE_SERVER_UNIT, log)
            wait_for_listener(self.deployment.ports["code_server"], 120)
        fault.detail = "code server restarted"


def run_workers(deployment: Deployment) -> list[int]:
    """The processes of the code server's group that execute runs; none while the code server restarts.
    The code server starts each run in a `multiprocessing` spawn child (`spawn_main`, not `dagster api
    execute_run`, which the first version looked for and so never killed a step: 0 of 5 in the 30-minute
    soak); its resource tracker is no run."""
    try:
        group = os.getpgid(deployment.server.processes[CODE_SERVER_UNIT].pid)
    except ProcessLookupError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ProcessLookupError):
            continue
        if any(marker in command for marker in (b"spawn_main", b"execute_run", b"execute_step")):
            found.append(int(entry.name))
    return found


def wait_for_listener(port: int, deadline_s: float) -> None:
    """`deployment.wait_for_port` without its check that every process lives: others are being killed
    meanwhile."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")
