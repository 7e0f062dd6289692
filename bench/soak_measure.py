"""What the end of the soak measures, each from the real part that holds it: every source's touched keys
against its staged table (and the orders mart) in the DuckDB warehouse, the incidents of the healing ledger
(schema `platform_ops` of the instance database) matched to the faults, runs by status from GraphQL, the
metrics unit's Prometheus text, and what the daemon and the instance database cost.

Comparison per key: lost (expected, absent), duplicated (more than one row), stale (present with another
value than the source's latest, or present though deleted or quarantined).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import requests
import yaml
from deployment import DAEMON_UNIT, Deployment
from proc_stat import CLOCK_TICKS, PAGE_BYTES, cpu_ticks, process_stats
from soak_delivery import DeliveryDriver
from soak_faults import APPROVE, CAUSES, Fault

WAREHOUSE_WAIT_S = 180.0
MATCH_WINDOW_S = 240.0
"""An incident opened up to this long after a fault ended is taken as that fault's (a healing backoff, a
run that fails minutes after its source did)."""


@dataclass
class KeyDiff:
    table: str
    expected: int
    lost: list[Any] = field(default_factory=list)
    duplicated: list[Any] = field(default_factory=list)
    stale: list[Any] = field(default_factory=list)


def diff(table: str, expected: dict[Any, Any], absent: set[Any], staged: list[tuple[Any, Any]]) -> KeyDiff:
    """`expected` key -> value, `absent` keys that must not be staged, `staged` (key, value) rows."""
    result = KeyDiff(table, len(expected))
    seen: dict[Any, list[Any]] = {}
    for key, value in staged:
        seen.setdefault(key, []).append(value)
    for key, value in expected.items():
        if key not in seen:
            result.lost.append(key)
        elif len(seen[key]) > 1:
            result.duplicated.append(key)
        elif seen[key][0] != value:
            result.stale.append((key, seen[key][0], value))
    result.stale.extend((key, "present", "absent") for key in absent if key in seen)
    return result


WarehouseRows = Callable[[str, list[Any]], list[tuple[Any, Any]]]
"""(SQL with one `?` for the list of keys, the keys) -> (key, value) rows, from the soak's warehouse."""


def compare(rows: WarehouseRows, driver: DeliveryDriver, shop_dsn: str) -> list[KeyDiff]:
    """Orders from what was delivered; customers and products from their sources, the touched keys only
    (the demo world's own rows include deliberate quality breaks the platform rightly holds back)."""
    with closing(psycopg2.connect(shop_dsn)) as pg, pg.cursor() as cursor:
        cursor.execute(
            "SELECT customer_id, country FROM customers WHERE customer_id = ANY(%s)",
            (sorted(driver.customers_touched),),
        )
        customers = dict(cursor.fetchall())
    products = {
        p["product_id"]: round(float(p["unit_price"]), 2)
        for p in json.loads(driver.products_json.read_bytes(), parse_float=Decimal)
        if p["product_id"] in driver.products_touched
    }
    orders = sorted(driver.orders) + sorted(driver.quarantine_expected)
    return [
        diff(
            "staged.shop__orders",
            driver.orders,
            driver.quarantine_expected,
            rows("SELECT order_id, status FROM staged.shop__orders WHERE order_id = ANY(?)", orders),
        ),
        diff(
            "analytics.fct_orders",
            driver.orders,
            driver.quarantine_expected,
            rows("SELECT order_id, status FROM analytics.fct_orders WHERE order_id = ANY(?)", orders),
        ),
        diff(
            "staged.shop_db__customers",
            customers,
            driver.customers_touched - set(customers),
            rows(
                "SELECT customer_id, country FROM staged.shop_db__customers WHERE customer_id = ANY(?)",
                sorted(driver.customers_touched),
            ),
        ),
        diff(
            "staged.shop_api__products",
            products,
            set(),
            rows(
                "SELECT product_id, round(CAST(unit_price AS numeric(18, 4)), 2) "
                "FROM staged.shop_api__products WHERE product_id = ANY(?)",
                sorted(products),
            ),
        ),
    ]


@contextlib.contextmanager
def duckdb_rows(warehouse: Path) -> Iterator[WarehouseRows]:
    with read_only(warehouse) as con:
        yield lambda sql, keys: [(k, _plain(v)) for k, v in con.execute(sql, [keys]).fetchall()]


@contextlib.contextmanager
def postgres_rows(dsn: str) -> Iterator[WarehouseRows]:
    with closing(psycopg2.connect(dsn)) as pg, pg.cursor() as cursor:

        def rows(sql: str, keys: list[Any]) -> list[tuple[Any, Any]]:
            cursor.execute(sql.replace("?", "%s"), (keys,))
            return [(int(k), _plain(v)) for k, v in cursor.fetchall()]

        yield rows


def _plain(value: Any) -> Any:
    """A decimal read back as the float the source's value is compared as."""
    return float(value) if isinstance(value, Decimal) else value


def read_only(warehouse: Path, wait_s: float = WAREHOUSE_WAIT_S) -> duckdb.DuckDBPyConnection:
    """The DuckDB warehouse opened read-only, once no run holds its write lock (a scheduled run may still be
    loading when the quiet period ends)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(warehouse), read_only=True)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def instance_dsn(deployment: Deployment) -> str:
    env = deployment.units[DAEMON_UNIT].env
    return (
        f"host={env['DAGSTER_PG_HOST']} port={env['DAGSTER_PG_PORT']} user={env['DAGSTER_PG_USER']} "
        f"dbname={env['DAGSTER_PG_DB']}"
    )


def incidents(deployment: Deployment) -> list[dict[str, Any]]:
    with closing(psycopg2.connect(instance_dsn(deployment))) as pg, pg.cursor() as cursor:
        cursor.execute("SELECT * FROM platform_ops.incidents ORDER BY opened_at")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def instance_cost(deployment: Deployment) -> dict[str, int]:
    with closing(psycopg2.connect(instance_dsn(deployment))) as pg, pg.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM event_logs")
        (events,) = cursor.fetchone()
        cursor.execute("SELECT pg_database_size(current_database())")
        (size,) = cursor.fetchone()
    return {"event_log_rows": int(events), "database_bytes": int(size)}


@dataclass
class Match:
    fault: Fault
    incidents: list[dict[str, Any]]

    @property
    def outcome(self) -> str:
        """no effect (it met nothing to break), absorbed (no incident: healed inside the step or never
        failed one), healed, healed after approval, escalated (at some point; its cause repaired by the
        human since, or not), proposed (still waiting for approval), or open (still being healed)."""
        statuses = {i["status"] for i in self.incidents}
        if not self.incidents:
            return "absorbed" if self.fault.hit else "no effect"
        if "escalated" in statuses or any(i["decision"] == "escalate" for i in self.incidents):
            return "escalated"
        if statuses & {"proposed", "approved"}:
            return "proposed"
        if statuses == {"resolved"}:
            return "healed after approval" if any(i["approved_by"] for i in self.incidents) else "healed"
        return "open"

    @property
    def escalated_as(self) -> set[str]:
        """The categories the fault's escalated incidents were diagnosed as."""
        return {
            i["category"] for i in self.incidents if i["status"] == "escalated" or i["decision"] == "escalate"
        }

    @property
    def recover_s(self) -> float | None:
        """From the fault's own start to the last of its incidents resolved, for faults healed without a
        human."""
        if self.outcome != "healed":
            return None
        return max(i["resolved_at"] for i in self.incidents) - self.fault.started_at


def match(faults: list[Fault], found: list[dict[str, Any]]) -> tuple[list[Match], list[dict[str, Any]]]:
    """An incident whose evidence names a fault's marker (a refused file) to that fault; each drift
    incident of an entity a fault was aimed at (raw or staged) to the latest such fault begun
    before the incident last changed; any other to a fault that hit something, started before the incident
    opened (or before it was escalated with the category the fault expects: an incident opened for one
    fault may be escalated for another that met its retry), ended at most `MATCH_WINDOW_S` before it
    opened, and hit its source or one of the platform's own processes (which hit every source): of those,
    the ones whose kind causes the incident's category (`CAUSES`) if any, else those of its source, else
    the platform's; of these, the one whose expected category is the incident's if any, else the latest (a
    verdict on the data, `VERDICTS_ON_DATA`, only to one expecting it). A fault to be escalated that got no
    incident of its own is given the escalation that covered it
    (`_escalation_covering`)."""
    matches = [Match(fault, []) for fault in faults]
    unmatched = []
    for incident in found:
        named = [m for m in matches if m.fault.marker and m.fault.marker in incident["evidence_json"]]
        if named:
            named[0].incidents.append(incident)
            continue
        aimed = [
            m
            for m in matches
            if _same_entity(m.fault.asset, incident["asset_key"])
            and incident["category"] in (m.fault.expected, AIMED_CATEGORY)
            and m.fault.started_at <= incident["updated_at"]
        ]
        if aimed:
            max(aimed, key=lambda m: m.fault.started_at).incidents.append(incident)
            continue
        in_time = [
            m
            for m in matches
            if m.fault.hit
            and m.fault.asset is None
            and (
                m.fault.started_at <= incident["opened_at"]
                or (m.fault.expected == incident["category"] and m.fault.started_at <= incident["updated_at"])
            )
            and incident["opened_at"] <= m.fault.ended_at + MATCH_WINDOW_S
        ]
        causing = [
            m
            for m in in_time
            if incident["category"] in CAUSES.get(m.fault.kind, ())
            and m.fault.source in (incident["source"], None)
        ]
        candidates = (
            causing
            or [m for m in in_time if m.fault.source == incident["source"]]
            or [m for m in in_time if m.fault.source is None]
        )
        expecting = [m for m in candidates if m.fault.expected == incident["category"]]
        candidates = expecting if incident["category"] in VERDICTS_ON_DATA else expecting or candidates
        if candidates:
            max(candidates, key=lambda m: m.fault.started_at).incidents.append(incident)
        else:
            unmatched.append(incident)
    for m in matches:
        if m.fault.hit and not m.incidents and not m.fault.healable and m.fault.expected != APPROVE:
            m.incidents.extend(_escalation_covering(m.fault, found))
    return matches, unmatched


VERDICTS_ON_DATA = frozenset({"volume_anomaly"})
"""Categories judged on the data delivered, not on how a run went: no fault breaks a run into one, so they
are matched only to a fault that expects them, never for being near in time (a check flagging a catch-up
run was credited to the expired login the run caught up after, as if that login had been escalated)."""
AIMED_CATEGORY = "schema_drift"
"""The category of the faults aimed at an entity (drifts): the entity's other incidents (an expired login,
an outage) are matched like any other, not taken by the drift."""


def _same_entity(aimed: str | None, asset_key: str | None) -> bool:
    """Whether the incident's asset is the entity a fault aimed at, in any layer: a drift aimed at
    `staged/shop_db/payments` is met where the delivery is first typed, `raw/shop_db/payments`."""
    if aimed is None or asset_key is None:
        return False
    return aimed.split("/", 1)[-1] == asset_key.split("/", 1)[-1]


def _escalation_covering(fault: Fault, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The escalated incidents of the fault's source and expected category that were unresolved when it
    started (or opened within `MATCH_WINDOW_S` after it ended): a second expired login while the first
    one's escalation is open joins that incident (one problem, one alert), so it was escalated too,
    though the incident is matched to the fault that opened it."""
    return [
        incident
        for incident in found
        if incident["source"] == fault.source
        and incident["category"] == fault.expected
        and (incident["status"] == "escalated" or incident["decision"] == "escalate")
        and incident["opened_at"] <= fault.ended_at + MATCH_WINDOW_S
        and (incident["resolved_at"] or float("inf")) >= fault.started_at
    ]


STUCK_AFTER_S = 120.0
"""A run still unfinished at the end is stuck when it has made no progress for this long: started with no
event logged since, or queued since with no run in progress that holds the slot it waits for. A run that is
working, or waiting its turn behind one that is, is not: the CI soak, on a machine busy with the other
tests, ended its capped quiet period with runs of one source queued behind that source's run in progress,
and a creation-time rule counted them stuck."""
INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
IN_PROGRESS = ("STARTING", "STARTED", "CANCELING")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
RUNS = """
{ runsOrError { ... on Runs { results { runId status creationTime jobName tags { key value } } } } }
"""
LAST_EVENTS = """
query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  ... on MessageEvent { timestamp } } } } }
"""
STUCK_RUN_TAGS = (
    "platform/source", "healing/action", "platform/trigger", "dagster/schedule_name", "dagster/sensor_name",
)  # fmt: skip


@dataclass(frozen=True)
class RunLimits:
    """The run queue's limits of the deployed instance (`concurrency.runs` in `deploy/dagster.yaml`)."""

    max_concurrent: int
    tags: list[dict[str, Any]]

    @classmethod
    def deployed(cls) -> RunLimits:
        runs = yaml.safe_load(INSTANCE_CONFIG.read_text())["concurrency"]["runs"]
        return cls(runs["max_concurrent_runs"], runs.get("tag_concurrency_limits", []))

    def holding(self, waiting: dict[str, str], in_progress: list[dict[str, str]]) -> bool:
        """Whether the runs in progress (their tags) take every slot a run with tags `waiting` may use."""
        if len(in_progress) >= self.max_concurrent:
            return True
        for limit in self.tags:
            key, value = limit["key"], limit.get("value")
            if key not in waiting:
                continue
            if isinstance(value, dict):  # applyLimitPerUniqueValue: runs with the same value
                same = [tags for tags in in_progress if tags.get(key) == waiting[key]]
            elif value is None or value == waiting[key]:
                same = [tags for tags in in_progress if key in tags and (value is None or tags[key] == value)]
            else:
                continue
            if len(same) >= limit["limit"]:
                return True
        return False


def unfinished_runs(deployment: Deployment, created_before: float) -> int:
    """How many runs created before `created_before` have not finished."""
    found = _runs(deployment)
    return sum(run["status"] not in FINISHED and run["creationTime"] < created_before for run in found)


def stuck_runs(deployment: Deployment, now: float, limits: RunLimits | None = None) -> list[dict[str, Any]]:
    """The unfinished runs that made no progress in the last `STUCK_AFTER_S` (see there), each with its job,
    age and the tags the run queue limits by."""
    limits = limits or RunLimits.deployed()
    found = _runs(deployment)
    unfinished = [
        {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}}
        for run in found
        if run["status"] not in FINISHED
    ]
    in_progress = [run["tags"] for run in unfinished if run["status"] in IN_PROGRESS]
    stuck = []
    for run in unfinished:
        if run["creationTime"] > now - STUCK_AFTER_S:
            continue
        if run["status"] in IN_PROGRESS:
            events = deployment.server.graphql(LAST_EVENTS, {"runId": run["runId"]})["logsForRun"]["events"]
            last = max((int(e["timestamp"]) / 1000 for e in events if e.get("timestamp")), default=0.0)
            if last > now - STUCK_AFTER_S:
                continue
        elif limits.holding(run["tags"], in_progress):
            continue
        stuck.append(
            {
                "run_id": run["runId"],
                "status": run["status"],
                "job": run["jobName"],
                "age_s": round(now - run["creationTime"]),
                "tags": {k: v for k, v in run["tags"].items() if k in STUCK_RUN_TAGS},
            }
        )
    return stuck


def runs_by_status(deployment: Deployment) -> dict[str, int]:
    return dict(Counter(run["status"] for run in _runs(deployment)))


def _runs(deployment: Deployment) -> list[dict[str, Any]]:
    """Every run of the instance: id, status, creation time, job and tags."""
    return deployment.server.graphql(RUNS)["runsOrError"]["results"]


RUNS_FOR_POSTMORTEM = """
{ runsOrError { ... on Runs { results { runId status creationTime startTime endTime tags { key value }
  assetSelection { path } stepStats { stepKey startTime endTime } } } } }
"""


def postmortem(deployment: Deployment) -> dict[str, Any]:
    """What a post-mortem of the soak needs after the instance is gone: every run (status, times, tags,
    selection, each step's times), every step failure's message (from the event log), the healing ledger."""
    runs = deployment.server.graphql(RUNS_FOR_POSTMORTEM)["runsOrError"]["results"]
    with closing(psycopg2.connect(instance_dsn(deployment))) as pg, pg.cursor() as cursor:
        cursor.execute(
            "SELECT run_id, step_key, timestamp, event FROM event_logs "
            "WHERE dagster_event_type IN ('STEP_FAILURE', 'RUN_FAILURE') ORDER BY id"
        )
        failures = [
            {"run_id": run_id, "step_key": step_key, "at": str(at), "message": _failure_message(event)}
            for run_id, step_key, at, event in cursor.fetchall()
        ]
    for run in runs:
        run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        run["assetSelection"] = ["/".join(key["path"]) for key in run["assetSelection"] or []]
    return {"runs": runs, "failures": failures, "incidents": incidents(deployment)}


def _failure_message(event_json: str) -> str:
    """The error message of a STEP_FAILURE or RUN_FAILURE event record, cut to 600 characters."""
    specific = (json.loads(event_json).get("dagster_event") or {}).get("event_specific_data") or {}
    error = specific.get("error") or {}
    return str(error.get("message") or specific.get("failure_reason") or "")[:600]


def metrics_text(deployment: Deployment) -> str:
    response = requests.get(f"http://127.0.0.1:{deployment.ports['metrics']}/metrics", timeout=30)
    response.raise_for_status()
    return response.text


@dataclass
class GroupSampler:
    """CPU seconds and RSS of the daemon's process group, sampled every second: a SIGKILLed daemon's
    last sample is kept, so its CPU counts; the RSS peak is over all samples."""

    deployment: Deployment
    cpu_ticks: dict[int, int] = field(default_factory=dict)
    peak_rss: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="daemon-sampler", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        try:
            group = self.deployment.server.processes[DAEMON_UNIT].pid
        except KeyError:
            return
        rss = 0
        for pid, fields in process_stats():
            if int(fields[2]) != group:  # pgrp
                continue
            self.cpu_ticks[pid] = cpu_ticks(fields)
            rss += int(fields[21]) * PAGE_BYTES
        self.peak_rss = max(self.peak_rss, rss)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
