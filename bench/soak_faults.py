"""The soak's fault injector: a schedule drawn from a seed (every kind at least once, then kinds at random,
start times uniform over the soak, so faults overlap), each fault fired in a thread of its own at its time
against the real parts, and recorded with its kind, start, end, whether it is healable and which source it
hits (how the end of the soak matches it to incidents in the healing ledger).

Healable means the platform should repair it with no human: a 429 storm or a 5xx burst
(10-60 s: longer than the REST client's retries, so that some reach the healing layer), a re-delivered file,
a file that grows after it is listed, the source database's connections terminated, a killed step, the
daemon or the code server restarted, an added column. Not healable: a malformed row, which should be held
back (quarantined) and reported as data quality, never staged.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import psycopg2
from dagster_processes import stop_group
from deployment import Deployment
from soak_delivery import DeliveryDriver, order_row, write_csv
from soak_sources import ApiSwitch

CODE_SERVER_UNIT = "dataplatform-code-server"
MEAN_GAP_S = 12.0
"""One fault every 12 s on average: 15 in 3 minutes, 150 in 30 (the issue asks for at least 60)."""
STEP_KILL_WAIT_S = 30.0
QUIET_TAIL_S = 15.0
"""No fault starts in the last seconds of the soak, so each has begun before the quiet period."""


@dataclass
class Fault:
    kind: str
    at_s: float
    """Seconds after the soak's start at which it is scheduled."""
    healable: bool
    source: str | None
    """The source it hits (`shop`, `shop_db`, `shop_api`); None for the platform's own processes."""
    started_at: float = 0.0
    ended_at: float = 0.0
    detail: str = ""
    hit: bool = True
    """False when the fault met nothing to break (no request during a storm, no connection to terminate,
    no run to kill): it tested nothing and is not scored as healed."""


@dataclass(frozen=True)
class Kind:
    name: str
    healable: bool
    source: str | None


KINDS = [
    Kind("rest_429_storm", True, "shop_api"),
    Kind("rest_5xx_burst", True, "shop_api"),
    Kind("malformed_row", False, "shop"),
    Kind("file_redelivered_changed", True, "shop"),
    Kind("file_grows_after_listing", True, "shop"),
    Kind("pg_source_connections_terminated", True, "shop_db"),
    Kind("step_sigkilled", True, None),
    Kind("daemon_sigkilled", True, None),
    Kind("code_server_restarted", True, None),
    Kind("schema_drift_added_column", True, "shop_db"),
]


EXPECTED_CATEGORY = {"malformed_row": "data_quality"}
"""What a non-healable fault's incident must be escalated as."""


def schedule(minutes: float, seed: int) -> list[Fault]:
    """Every kind once (in a seeded order), then seeded random kinds, at seeded uniform start times."""
    rng = random.Random(seed)
    span = max(minutes * 60 - QUIET_TAIL_S, 10.0)
    count = max(len(KINDS), round(minutes * 60 / MEAN_GAP_S))
    kinds = rng.sample(KINDS, len(KINDS)) + [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    times = sorted(rng.uniform(3.0, span) for _ in kinds)
    return [Fault(kind.name, at, kind.healable, kind.source) for kind, at in zip(kinds, times, strict=True)]


@dataclass
class Injector:
    """Fires a schedule's faults against the soak's parts, each in its own thread."""

    deployment: Deployment
    driver: DeliveryDriver
    switch: ApiSwitch
    shop_dsn: str
    shop_db: str
    rng: random.Random
    threads: list[threading.Thread] = field(default_factory=list)
    restart_lock: threading.Lock = field(default_factory=threading.Lock)
    drifts: int = 0

    def fire(self, fault: Fault) -> None:
        action: Callable[[Fault], None] = getattr(self, fault.kind)
        thread = threading.Thread(target=self._run, args=(action, fault), name=fault.kind, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)

    def _run(self, action: Callable[[Fault], None], fault: Fault) -> None:
        fault.started_at = time.time()
        try:
            action(fault)
        except Exception as error:
            fault.detail = f"not injected: {error!r}"[:200]
        fault.ended_at = time.time()

    def rest_429_storm(self, fault: Fault) -> None:
        self._storm(fault, HTTPStatus.TOO_MANY_REQUESTS)

    def rest_5xx_burst(self, fault: Fault) -> None:
        self._storm(fault, HTTPStatus.SERVICE_UNAVAILABLE)

    def _storm(self, fault: Fault, status: HTTPStatus) -> None:
        seconds = self.rng.uniform(4, 30)
        refused_before = self.switch.refused
        self.switch.turn(status, seconds)
        time.sleep(seconds)
        fault.detail = (
            f"{int(status)} for {seconds:.0f} s, {self.switch.refused - refused_before} requests refused"
        )

    def malformed_row(self, fault: Fault) -> None:
        """One good order and one whose amount is not a number and whose status is unknown."""
        with self.driver.lock:
            good, bad = self.driver.next_order_ids(2)
            broken = [str(bad), "1", "2026-12-01 00:00:00", "teleported", "EUR", "n/a", "2026-12-01 00:00:00"]
            name, kept = f"orders_soak_malformed_{bad}.csv", order_row(good, "placed")
            partial = self.driver.orders_dir / f".{name}.part"
            write_csv(partial, [kept, broken])
            partial.rename(self.driver.orders_dir / name)
            self.driver.record_file(name, [kept])
            self.driver.quarantine_expected.add(bad)
        fault.detail = f"{name}: order {bad} malformed"

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

    def pg_source_connections_terminated(self, fault: Fault) -> None:
        """Every backend of the shop database terminated, again every 0.5 s for a while: an extraction or a
        change probe in between loses its connection."""
        seconds, killed = self.rng.uniform(10, 40), 0
        until = time.time() + seconds
        with psycopg2.connect(self.shop_dsn.replace(f"dbname={self.shop_db}", "dbname=postgres")) as admin:
            admin.autocommit = True
            with admin.cursor() as cursor:
                while time.time() < until:
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (self.shop_db,),
                    )
                    killed += cursor.fetchone()[0]
                    time.sleep(0.5)
        admin.close()
        fault.detail, fault.hit = f"{killed} backends terminated over {seconds:.0f} s", killed > 0

    def step_sigkilled(self, fault: Fault) -> None:
        """SIGKILL of a run worker (the process executing a run's steps), a child of the code server: the
        first one seen within `STEP_KILL_WAIT_S`."""
        deadline = time.time() + STEP_KILL_WAIT_S
        while not (workers := run_workers(self.deployment)) and time.time() < deadline:
            time.sleep(0.5)
        if not workers:
            fault.detail, fault.hit = "no run in progress: nothing killed", False
            return
        pid = self.rng.choice(workers)
        os.kill(pid, signal.SIGKILL)
        fault.detail = f"run worker {pid} killed"

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

    def schema_drift_added_column(self, fault: Fault) -> None:
        self.drifts += 1
        column = f"soak_note_{self.drifts}"
        with psycopg2.connect(self.shop_dsn) as connection, connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE customers ADD COLUMN {column} text DEFAULT 'soak'")
            cursor.execute("UPDATE customers SET updated_at = now() AT TIME ZONE 'UTC' WHERE customer_id = 5")
        connection.close()
        self.driver.customers_touched.add(5)
        fault.detail = f"customers.{column} added"


def run_workers(deployment: Deployment) -> list[int]:
    """The processes of the code server's group that execute runs (`dagster api execute_run`)."""
    group = os.getpgid(deployment.server.processes[CODE_SERVER_UNIT].pid)
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
        if b"execute_run" in command or b"execute_step" in command:
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
