"""What an outside watcher needs to know that the platform is alive, read without the daemon's help.

Every alert the platform sends goes out from inside the daemon (the healing sensor), so a dead daemon or a
code server that no longer loads would page nobody. These probes run in the metrics process
(`sensors/observability/metrics_server.py`), which loads no code location and depends on neither: they
feed the `/health` endpoint (one JSON document, HTTP 503 when a check fails) and the gauges Prometheus
alerts on (`deploy/prometheus/alerts.yml`).

- **code location loaded**: each gRPC code server of the workspace file the daemon and the webserver use
  (`deploy/workspace.yaml`) is asked `ListRepositories`, the call they make themselves. A code server that
  is up but failed to import the definitions answers with an error instead of repositories, which a port
  check or a gRPC ping would miss.
- **daemon heartbeats**: the age of each required daemon's last heartbeat in the instance storage (every
  daemon thread writes one about every 20 s while it runs).
- **sensor ticks**: the age and status of the last tick of every running sensor, from the instance's tick
  storage: a daemon can heartbeat while one sensor is stuck or failing on every tick.
- **incidents**: open and escalated incidents of the healing ledger; an escalated one waits for a human.
- **disk**: free space of the filesystem holding the data directory (landing zone, ledger, DuckDB).

A sensor started in the UI and later removed from the code keeps its RUNNING state in the instance and
never ticks again: it fails `sensor_ticks` until it is stopped (Automation -> unloadable sensors), which
is what an operator should do anyway. The gRPC client, tick and instigator types are Dagster internals
(no public API reads them outside a code location); `pyproject.toml` pins Dagster to 1.13.x, and
`tests/test_metrics.py` and `tests/test_deployment_smoke.py` exercise them against real storage and a
real code server.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import sqlalchemy as sa
import yaml
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType, TickStatus
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import ListRepositoriesResponse
from dagster_shared.serdes import deserialize_value

from resources.state.database import StateLocation, read_only

HEARTBEAT_MAX_AGE_S = 120.0
"""Daemon threads heartbeat about every 20 s; two minutes without one is a dead or wedged daemon."""
SENSOR_TICK_MAX_AGE_S = 900.0
"""Three times the longest sensor interval of the platform (the database change sensor's 300 s)."""
DISK_MIN_FREE_RATIO = 0.10
"""Landing and DuckDB writes fail hard on a full disk; 10% free leaves time to act."""
GRPC_TIMEOUT_S = 5.0
"""A code server that takes longer to list its repositories is as good as down for the daemon."""
RESOLVED = "resolved"
ESCALATED = "escalated"
RUNNING_STATUSES = {
    InstigatorStatus.RUNNING,
    InstigatorStatus.DECLARED_IN_CODE,
    InstigatorStatus.AUTOMATICALLY_RUNNING,
}
"""A sensor in any of these states is one the daemon ticks (started in the UI, or running by default)."""


@dataclass(frozen=True)
class CodeServer:
    location: str
    host: str
    port: int


@dataclass(frozen=True)
class Check:
    """One health check: what was measured against which limit."""

    name: str
    ok: bool
    value: Any
    threshold: Any
    detail: str = ""


@dataclass(frozen=True)
class SensorTick:
    sensor: str
    age_s: float | None
    """None: the sensor never ticked."""
    status: str | None


@dataclass
class HealthThresholds:
    heartbeat_max_age_s: float = HEARTBEAT_MAX_AGE_S
    sensor_tick_max_age_s: float = SENSOR_TICK_MAX_AGE_S
    disk_min_free_ratio: float = DISK_MIN_FREE_RATIO
    max_escalated_incidents: int = 0


def code_servers(workspace: Path) -> list[CodeServer]:
    """The gRPC code servers of a workspace file (`load_from: - grpc_server: {host, port, location_name}`).
    Entries the webserver would load in-process (`python_module`) have no server to ask and are refused,
    so a workspace that cannot be watched is not reported healthy."""
    entries = (yaml.safe_load(workspace.read_text()) or {}).get("load_from") or []
    servers = []
    for entry in entries:
        if "grpc_server" not in entry:
            raise ValueError(
                f"{workspace}: only grpc_server entries can be checked from outside, not {entry}"
            )
        server = entry["grpc_server"]
        servers.append(
            CodeServer(server["location_name"], server.get("host", "localhost"), int(server["port"]))
        )
    return servers


_pending: dict[CodeServer, threading.Thread] = {}
"""The probe still waiting on each code server: a server that never answers gets one caller thread, not
one more per scrape."""
_pending_lock = threading.Lock()


def code_location_loaded(server: CodeServer, timeout_s: float = GRPC_TIMEOUT_S) -> tuple[bool, str]:
    """(loaded, why not). The client's own deadline is a minute, so the call runs on a daemon thread that
    is abandoned after `timeout_s` (a daemon thread, unlike an executor's, never holds up the process's
    exit on SIGTERM); while an abandoned call is still pending, the server counts as not answering."""
    answers: list[str | Exception] = []

    def list_repositories() -> None:
        try:
            answers.append(DagsterGrpcClient(port=server.port, host=server.host).list_repositories())
        except Exception as error:  # unreachable: connection refused, DNS, TLS, the client's deadline
            answers.append(error)

    with _pending_lock:
        previous = _pending.get(server)
        if previous is not None and previous.is_alive():
            return False, f"{server.host}:{server.port} has not answered an earlier probe yet"
        caller = threading.Thread(target=list_repositories, name="health-grpc", daemon=True)
        _pending[server] = caller
    caller.start()
    caller.join(timeout_s)
    if not answers:
        return False, f"{server.host}:{server.port} did not answer within {timeout_s:.0f} s"
    raw = answers[0]
    if isinstance(raw, Exception):
        return False, f"{server.host}:{server.port} unreachable: {type(raw).__name__}: {raw}"
    response = deserialize_value(raw)
    if not isinstance(response, ListRepositoriesResponse):
        message = getattr(response, "message", str(response)).strip().splitlines()
        return False, f"code location failed to load: {message[-1] if message else response}"
    if not response.repository_symbols:
        return False, "code server lists no repository"
    return True, ""


def daemon_heartbeat_ages(instance: dg.DagsterInstance, now: float) -> dict[str, float | None]:
    """Seconds since each required daemon's last heartbeat (None: never heartbeated)."""
    heartbeats = instance.get_daemon_heartbeats()
    return {
        daemon: (max(now - heartbeats[daemon].timestamp, 0.0) if daemon in heartbeats else None)
        for daemon in instance.get_required_daemon_types()
    }


def sensor_last_ticks(instance: dg.DagsterInstance, now: float) -> list[SensorTick]:
    """The last tick of every sensor the daemon should be ticking (started in the UI, or running by
    default as declared in code)."""
    states = instance.all_instigator_state(
        instigator_type=InstigatorType.SENSOR,
        instigator_statuses=RUNNING_STATUSES,
    )
    ticks = []
    for state in sorted(states, key=lambda s: s.instigator_name):
        last = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if last:
            ticks.append(
                SensorTick(state.instigator_name, max(now - last[0].timestamp, 0.0), last[0].status.value)
            )
        else:
            ticks.append(SensorTick(state.instigator_name, None, None))
    return ticks


def incident_counts(healing_store: StateLocation) -> dict[str, int]:
    """Open (not resolved) and escalated incidents, read-only: a watcher creates no ledger (the healing
    sensor creates it on its first incident, so a missing file means none)."""
    with read_only(healing_store) as con:
        if con is None:
            return {"open": 0, ESCALATED: 0}
        query = sa.text(
            "SELECT count(*), coalesce(sum(CASE WHEN status = :escalated THEN 1 ELSE 0 END), 0) "
            "FROM incidents WHERE status != :resolved"
        )
        ((open_count, escalated),) = con.execute(query, {"escalated": ESCALATED, "resolved": RESOLVED}).all()
    return {"open": int(open_count), ESCALATED: int(escalated)}


def disk_usage(path: Path) -> tuple[int, int]:
    """(total, free) bytes of the filesystem holding `path`, or of its nearest existing parent (the data
    directory is created by the first run)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.total, usage.free


@dataclass
class HostStats:
    memory_total: int
    memory_available: int
    cpu_seconds: dict[str, float]
    cpus: int
    load1: float


def host_stats() -> HostStats:
    memory = psutil.virtual_memory()
    times = psutil.cpu_times()
    return HostStats(
        memory_total=memory.total,
        memory_available=memory.available,
        cpu_seconds={mode: float(getattr(times, mode)) for mode in times._fields},
        cpus=psutil.cpu_count() or 1,
        load1=psutil.getloadavg()[0],
    )


@dataclass
class HealthProbe:
    """The checks of `/health`, each with its value and its threshold."""

    instance: dg.DagsterInstance
    healing_store: StateLocation
    data_dir: Path
    servers: list[CodeServer] | None
    """None: no workspace file could be read; the code location check then fails with the reason."""
    workspace_error: str = ""
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    clock: Callable[[], float] = time.time

    def checks(self) -> list[Check]:
        now = self.clock()
        probes: list[tuple[str, Callable[[], Check]]] = [
            ("code_location", self._code_location),
            ("daemon_heartbeats", lambda: self._heartbeats(now)),
            ("sensor_ticks", lambda: self._sensor_ticks(now)),
            ("incidents", self._incidents),
            ("disk", self._disk),
        ]
        checks = []
        for name, probe in probes:
            try:
                checks.append(probe())
            except Exception as error:  # an unreadable source fails its check, not the endpoint
                checks.append(Check(name, False, None, None, f"{type(error).__name__}: {error}"))
        return checks

    def report(self) -> dict[str, Any]:
        checks = self.checks()
        return {
            "healthy": all(check.ok for check in checks),
            "checked_at": self.clock(),
            "checks": {
                check.name: {k: v for k, v in asdict(check).items() if k != "name"} for check in checks
            },
        }

    def _code_location(self) -> Check:
        if not self.servers:
            return Check("code_location", False, {}, "loaded", self.workspace_error or "no code server")
        loaded: dict[str, bool] = {}
        problems = []
        for server in self.servers:
            ok, why = code_location_loaded(server)
            loaded[server.location] = ok
            if not ok:
                problems.append(f"{server.location}: {why}")
        return Check("code_location", all(loaded.values()), loaded, "loaded", "; ".join(problems))

    def _heartbeats(self, now: float) -> Check:
        ages = daemon_heartbeat_ages(self.instance, now)
        limit = self.thresholds.heartbeat_max_age_s
        stale = sorted(d for d, age in ages.items() if age is None or age > limit)
        detail = f"stale or missing: {', '.join(stale)}" if stale else ""
        return Check("daemon_heartbeats", not stale, _rounded(ages), {"max_age_s": limit}, detail)

    def _sensor_ticks(self, now: float) -> Check:
        ticks = sensor_last_ticks(self.instance, now)
        limit = self.thresholds.sensor_tick_max_age_s
        bad = [
            t.sensor
            for t in ticks
            if t.age_s is None or t.age_s > limit or t.status == TickStatus.FAILURE.value
        ]
        value = {t.sensor: {"age_s": _round(t.age_s), "status": t.status} for t in ticks}
        detail = f"stale, never ticked or failing: {', '.join(bad)}" if bad else ""
        return Check("sensor_ticks", not bad, value, {"max_age_s": limit, "status_not": "FAILURE"}, detail)

    def _incidents(self) -> Check:
        counts = incident_counts(self.healing_store)
        limit = self.thresholds.max_escalated_incidents
        ok = counts[ESCALATED] <= limit
        detail = "" if ok else f"{counts[ESCALATED]} escalated incident(s) wait for a human"
        return Check("incidents", ok, counts, {"max_escalated": limit}, detail)

    def _disk(self) -> Check:
        total, free = disk_usage(self.data_dir)
        ratio = free / total if total else 0.0
        limit = self.thresholds.disk_min_free_ratio
        value = {
            "path": str(self.data_dir),
            "free_bytes": free,
            "total_bytes": total,
            "free_ratio": round(ratio, 4),
        }
        return Check("disk", ratio >= limit, value, {"min_free_ratio": limit})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _rounded(values: Mapping[str, float | None]) -> dict[str, float | None]:
    return {key: _round(value) for key, value in values.items()}
