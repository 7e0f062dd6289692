"""Prometheus metrics of the platform, computed when Prometheus scrapes: what an on-call engineer looks at
first (open incidents, failures by healing category, breakers, freshness lag, quality scores, rows ingested,
step durations, runs by status), and what an outside watcher needs when the daemon itself is the problem
(daemon heartbeat age, last sensor ticks, code location loaded, host disk, memory and CPU: the probes of
`sensors/observability/health.py`, shared with `/health`).

Why a custom `Collector` computing on scrape, not counters incremented by the code that does the work: the
work happens in many processes (run workers, the daemon's sensors, the webserver) that come and go, while
the truth is already recorded in two durable places, the Dagster instance and the healing ledger. Reading
them at scrape time gives the same numbers after any restart and needs no instrumentation in asset code.

Bounded on every scrape, whatever the history: one asset-records query (each asset's LATEST
materialization only, never the event history), one freshness-state query, one count query per run
status, the step stats of the last `recent_runs` finished runs, and a few `GROUP BY` queries on the
ledger. Scrapes are serialized by a lock, so a burst of scrapes cannot pile up queries on the storage.

The ledger (`resources/state/healing_store.py`: a SQLite file, or the state database) is read through a
read-only connection with SQL aggregates rather than through `HealingStore`: `HealingStore(...)` creates
the file and its tables, and `incidents()` reads every row, where a metrics reader should write nothing and
read counts. Every family is always exported (empty
when its source is unreadable), and `dataplatform_metrics_source_up` says which source answered, so a
dashboard tells "no incidents" from "ledger unreadable".
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from resources.state.database import StateLocation, read_only
from sensors.observability.health import (
    CodeServer,
    code_location_loaded,
    daemon_heartbeat_ages,
    disk_usage,
    host_stats,
    sensor_last_ticks,
)

PREFIX = "dataplatform_"
ROW_METADATA_KEYS = ("rows_written", "dagster/row_count")
"""Rows a materialization ingested, in order of preference: what the warehouse load wrote, else the row
count (raw assets record the rows landed in the run as `dagster/row_count`)."""
QUALITY_PREFIX = "quality/"
"""Metadata keys of the quality score (`platform_assets/quality/score.py`): `quality/score` and one per
dimension. Repeated here because `sensors/` does not import `platform_assets/`."""
BREAKER_STATES = ("closed", "open", "half_open")
FRESHNESS_STATES = ("PASS", "WARN", "FAIL", "UNKNOWN")
RESOLVED = "resolved"
RECENT_RUNS = 25
"""Finished runs whose step durations are read on each scrape (the newest duration of each step wins)."""


@dataclass
class _Families:
    """Every family of one scrape, created up front so that each is exported even without samples."""

    gauges: dict[str, GaugeMetricFamily] = field(default_factory=dict)
    counters: dict[str, CounterMetricFamily] = field(default_factory=dict)

    def gauge(self, name: str, documentation: str, labels: list[str]) -> None:
        self.gauges[name] = GaugeMetricFamily(PREFIX + name, documentation, labels=labels)

    def counter(self, name: str, documentation: str, labels: list[str]) -> None:
        self.counters[name] = CounterMetricFamily(PREFIX + name, documentation, labels=labels)

    def set(self, name: str, labels: list[str], value: float) -> None:
        family = self.gauges.get(name) or self.counters[name]
        family.add_metric(labels, value)

    def all(self) -> list[Metric]:
        return [*self.gauges.values(), *self.counters.values()]


def _declare(families: _Families) -> None:
    """Names, help texts and labels of every metric (documented in deploy/README.md)."""
    g, c = families.gauge, families.counter
    g("asset_last_materialization_timestamp_seconds", "Unix time of the asset's latest materialization.",
      ["asset", "layer"])  # fmt: skip
    g("asset_freshness_lag_seconds", "Seconds since the asset's latest materialization (scrape time - it).",
      ["asset", "layer"])  # fmt: skip
    g("asset_freshness_state", "1 for the asset's current freshness-policy state as recorded by Dagster's "
      "freshness daemon (PASS, WARN, FAIL, UNKNOWN), 0 for the others.", ["asset", "state"])  # fmt: skip
    g("rows_ingested", "Rows the asset's latest materialization ingested (metadata rows_written, else "
      "dagster/row_count).", ["asset", "layer"])  # fmt: skip
    g("quality_score", "Weighted quality score 0-100 of the asset's latest materialization (quality/score).",
      ["asset"])  # fmt: skip
    g("quality_dimension_score", "Quality dimension 0-100 of the asset's latest materialization "
      "(quality/<dimension>).", ["asset", "dimension"])  # fmt: skip
    g("runs", "Runs in the Dagster instance by status.", ["status"])
    g("step_duration_seconds", f"Duration of the newest execution of each step among the last {RECENT_RUNS} "
      "finished runs.", ["job", "step", "status"])  # fmt: skip
    c("healing_incidents", "Incidents recorded in the healing ledger, by failure category and kind "
      "(failed step, failed check, stale asset, crashed run).", ["category", "kind"])  # fmt: skip
    g("healing_open_incidents", "Incidents not resolved yet, by category and status (open, healing, "
      "proposed, approved, escalated).", ["category", "status"])  # fmt: skip
    g("open_incidents", "All incidents not resolved yet (always present, 0 when none).", [])
    c("healing_action_outcomes", "Outcomes of healing actions the policy learns from, by category, action "
      "and result (success, failure).", ["category", "action", "result"])  # fmt: skip
    g("healing_mean_time_to_recover_seconds", "Mean time to recover of the resolved incidents of a category.",
      ["category"])  # fmt: skip
    g("circuit_breaker_state", "1 for the source's current circuit-breaker state (closed, open, "
      "half_open), 0 for the others.", ["source", "state"])  # fmt: skip
    g("circuit_breaker_consecutive_failures", "Consecutive failed runs counted by the source's breaker.",
      ["source"])  # fmt: skip
    g("daemon_heartbeat_age_seconds", "Seconds since the daemon's last heartbeat (+Inf: none), for each "
      "daemon the instance requires.", ["daemon"])  # fmt: skip
    g("sensor_last_tick_age_seconds", "Seconds since the last tick of each running sensor (+Inf: none).",
      ["sensor"])  # fmt: skip
    g("code_location_up", "1 when the code server of the workspace answers with its loaded repositories, "
      "else 0.", ["location"])  # fmt: skip
    g("host_disk_total_bytes", "Size of the filesystem holding the data directory.", ["path"])
    g("host_disk_free_bytes", "Free bytes of the filesystem holding the data directory.", ["path"])
    g("host_memory_total_bytes", "Physical memory of the host.", [])
    g("host_memory_available_bytes", "Memory available to new processes without swapping.", [])
    c("host_cpu_seconds", "CPU time of the host by mode, summed over its CPUs.", ["mode"])
    g("host_cpus", "Logical CPUs of the host.", [])
    g("host_load1", "One-minute load average of the host.", [])
    g("metrics_source_up", "1 when the source (instance, ledger, daemon, code_server, host) was read on "
      "this scrape, else 0.", ["source"])  # fmt: skip
    g("metrics_collect_seconds", "Time this scrape took to compute every metric.", [])


class PlatformCollector(Collector):
    """Metrics of one Dagster instance and one healing ledger (`PlatformSettings.healing_store`)."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        healing_store: StateLocation,
        data_dir: Path,
        *,
        code_servers: list[CodeServer] | None = None,
        recent_runs: int = RECENT_RUNS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.healing_store = healing_store
        self.data_dir = data_dir
        self.code_servers = code_servers
        """None: no workspace to watch (`code_location_up` stays empty and is not counted as a source)."""
        self.recent_runs = recent_runs
        self.clock = clock
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """The families without samples: registering the collector then runs no query."""
        return declared_families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.perf_counter()
            families = _Families()
            _declare(families)
            now = self.clock()
            sources: list[tuple[str, Callable[[], None]]] = [
                ("instance", lambda: self._instance_metrics(families, now)),
                ("ledger", lambda: self._ledger_metrics(families)),
                ("daemon", lambda: self._daemon_metrics(families, now)),
                ("host", lambda: self._host_metrics(families)),
            ]
            if self.code_servers is not None:
                sources.append(("code_server", lambda: self._code_server_metrics(families)))
            for source, read in sources:
                try:
                    read()
                    up = 1.0
                except Exception:  # one unreadable source must not take the other's metrics down
                    up = 0.0
                families.set("metrics_source_up", [source], up)
            families.set("metrics_collect_seconds", [], time.perf_counter() - started)
        yield from families.all()

    # The Dagster instance

    def _instance_metrics(self, families: _Families, now: float) -> None:
        records = self.instance.get_asset_records()
        for record in records:
            entry = record.asset_entry
            materialization = entry.last_materialization_record
            if materialization is None:
                continue
            asset, layer = entry.asset_key.to_user_string(), _layer(entry.asset_key)
            families.set(
                "asset_last_materialization_timestamp_seconds", [asset, layer], materialization.timestamp
            )
            families.set(
                "asset_freshness_lag_seconds", [asset, layer], max(now - materialization.timestamp, 0.0)
            )
            event = materialization.asset_materialization
            metadata = event.metadata if event else {}
            rows = next((v for k in ROW_METADATA_KEYS if (v := _number(metadata.get(k))) is not None), None)
            if rows is not None:
                families.set("rows_ingested", [asset, layer], rows)
            for name, value in _quality(metadata).items():
                if name == "score":
                    families.set("quality_score", [asset], value)
                else:
                    families.set("quality_dimension_score", [asset, name], value)
        self._freshness_states(families, [record.asset_entry.asset_key for record in records])
        for status in dg.DagsterRunStatus:
            count = self.instance.get_runs_count(dg.RunsFilter(statuses=[status]))
            families.set("runs", [status.value], count)
        self._step_durations(families)

    def _freshness_states(self, families: _Families, keys: list[dg.AssetKey]) -> None:
        """States recorded by Dagster's freshness daemon (`freshness.enabled`); none without it."""
        if not keys:
            return
        for key, state_record in self.instance.get_freshness_state_records(keys).items():
            current = str(getattr(state_record.freshness_state, "value", state_record.freshness_state))
            for state in FRESHNESS_STATES:
                families.set("asset_freshness_state", [key.to_user_string(), state], float(state == current))

    def _step_durations(self, families: _Families) -> None:
        finished = [status for status in dg.DagsterRunStatus if status.value in {"SUCCESS", "FAILURE"}]
        runs = self.instance.get_runs(dg.RunsFilter(statuses=finished), limit=self.recent_runs)
        seen: set[tuple[str, str]] = set()
        for run in runs:  # newest first: the first duration seen of a step is its newest
            for stats in self.instance.get_run_step_stats(run.run_id):
                if (
                    stats.start_time is None
                    or stats.end_time is None
                    or (run.job_name, stats.step_key) in seen
                ):
                    continue
                seen.add((run.job_name, stats.step_key))
                status = str(getattr(stats.status, "value", stats.status))
                families.set(
                    "step_duration_seconds",
                    [run.job_name, stats.step_key, status],
                    max(stats.end_time - stats.start_time, 0.0),
                )

    # Liveness seen from outside the daemon (sensors/observability/health.py)

    def _daemon_metrics(self, families: _Families, now: float) -> None:
        for daemon, age in daemon_heartbeat_ages(self.instance, now).items():
            families.set("daemon_heartbeat_age_seconds", [daemon], math.inf if age is None else age)
        for tick in sensor_last_ticks(self.instance, now):
            families.set(
                "sensor_last_tick_age_seconds", [tick.sensor], math.inf if tick.age_s is None else tick.age_s
            )

    def _code_server_metrics(self, families: _Families) -> None:
        for server in self.code_servers or []:
            loaded, _ = code_location_loaded(server)
            families.set("code_location_up", [server.location], float(loaded))

    def _host_metrics(self, families: _Families) -> None:
        path = str(self.data_dir)
        total, free = disk_usage(self.data_dir)
        families.set("host_disk_total_bytes", [path], total)
        families.set("host_disk_free_bytes", [path], free)
        host = host_stats()
        families.set("host_memory_total_bytes", [], host.memory_total)
        families.set("host_memory_available_bytes", [], host.memory_available)
        for mode, seconds in host.cpu_seconds.items():
            families.set("host_cpu_seconds", [mode], seconds)
        families.set("host_cpus", [], host.cpus)
        families.set("host_load1", [], host.load1)

    # The healing ledger

    def _ledger_metrics(self, families: _Families) -> None:
        with read_only(self.healing_store) as con:
            if con is None:
                families.set(
                    "open_incidents", [], 0.0
                )  # nothing has failed yet: the sensor creates it lazily
                return
            rows = con.execute(
                sa.text("SELECT category, kind, count(*) FROM incidents GROUP BY category, kind")
            )
            for category, kind, count in rows:
                families.set("healing_incidents", [category, kind], count)
            open_total = 0
            rows = con.execute(
                sa.text(
                    "SELECT category, status, count(*) FROM incidents WHERE status != :resolved "
                    "GROUP BY category, status"
                ),
                {"resolved": RESOLVED},
            )
            for category, status, count in rows:
                open_total += count
                families.set("healing_open_incidents", [category, status], count)
            families.set("open_incidents", [], open_total)
            rows = con.execute(
                sa.text(
                    "SELECT category, avg(time_to_recover_s) FROM incidents "
                    "WHERE status = :resolved AND time_to_recover_s IS NOT NULL GROUP BY category"
                ),
                {"resolved": RESOLVED},
            )
            for category, mean in rows:
                families.set("healing_mean_time_to_recover_seconds", [category], float(mean))
            rows = con.execute(
                sa.text(
                    "SELECT category, action, sum(success), sum(1 - success) FROM outcomes "
                    "GROUP BY category, action"
                )
            )
            for category, action, good, bad in rows:
                families.set("healing_action_outcomes", [category, action, "success"], float(good))
                families.set("healing_action_outcomes", [category, action, "failure"], float(bad))
            for source, current, failures in con.execute(
                sa.text("SELECT source, state, consecutive_failures FROM breakers ORDER BY source")
            ):
                for state in BREAKER_STATES:
                    families.set("circuit_breaker_state", [source, state], float(state == current))
                families.set("circuit_breaker_consecutive_failures", [source], failures)


def _layer(key: dg.AssetKey) -> str:
    """`raw`, `staged`, `ops`: the first part of a multi-part key; dbt models (one part) are `model`."""
    return key.path[0] if len(key.path) > 1 else "model"


def _number(value: Any) -> float | None:
    raw = getattr(value, "value", value)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return float(raw)


def _quality(metadata: Mapping[str, Any]) -> dict[str, float]:
    """`quality/score` -> `score`, `quality/validity` -> `validity`, numeric values only."""
    scores = {}
    for key, value in metadata.items():
        number = _number(value)
        if key.startswith(QUALITY_PREFIX) and number is not None:
            scores[key.removeprefix(QUALITY_PREFIX)] = number
    return scores


def declared_families() -> list[Metric]:
    families = _Families()
    _declare(families)
    return families.all()


def metric_names() -> set[str]:
    """Every exported sample name (counters with their `_total`), for docs and dashboard checks."""
    return {
        family.name + "_total" if family.type == "counter" else family.name for family in declared_families()
    }
