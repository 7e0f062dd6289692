"""File-source fault injection: a `HealingSlice` over a CSV delivery directory, with the anomaly checks
and the real `quality_events` sensor in the loop, and helpers to read what staging set aside.

Why a subclass and not more fields on `HealingSlice`: the file scenarios need deliveries, the anomaly
checks and quality events, which the REST scenarios do not; keeping them here leaves the shared harness
small. Everything is real: deliveries are files on disk, checks run in the materializations, quality
events are what the sensor appends when Dagster evaluates it against the instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from healing_harness import HealingSlice, ScoreboardRow, fast_policy

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.quality_checks import build_quality_checks
from platform_assets.quality.quarantine import QUARANTINE_SCHEMA, QUARANTINE_TABLE
from resources.environment import PlatformSettings
from resources.state.healing_store import Incident
from resources.state.quality_events import QualityEventStore
from sensors.healing.quality_events import SENSOR_NAME, build_quality_events_sensor

SOURCE = "drop"
ENTITY = "orders"
HEADER = "order_id,amount,note"


def files_source(
    root: Path,
    *,
    on_drift: str = "fail",
    allow_string_widening: bool = False,
    max_bad_fraction: float = 0.05,
    on_malformed: str = "fail",
    extra_columns: dict[str, dict[str, Any]] | None = None,
    amount_type: str = "integer",
    path: str = "orders/*.csv",
    on_bad_file: str = "fail",
) -> dict[str, Any]:
    """One CSV entity `drop.orders` (`path`, `orders/*.csv` by default, under `root`), keyed on
    `order_id`."""
    return {
        "source": SOURCE,
        "connection": {"kind": "files", "root": str(root)},
        "entities": {
            ENTITY: {
                "file": {"format": "csv", "path": path, "on_bad_file": on_bad_file},
                "on_malformed": on_malformed,
                "primary_key": ["order_id"],
                "max_bad_fraction": max_bad_fraction,
                "schema_evolution": {
                    "compatibility": "backward",
                    "on_drift": on_drift,
                    "allow_string_widening": allow_string_widening,
                },
                "columns": {
                    "order_id": {"type": "integer"},
                    "amount": {"type": amount_type},
                    "note": {"type": "string"},
                    **(extra_columns or {}),
                },
            }
        },
    }


def csv_rows(keys: range | list[int], amount: str = "{i}0") -> list[str]:
    return [f"{i},{amount.format(i=i)},n{i}" for i in keys]


@dataclass
class FileHealingSlice(HealingSlice):
    """A `HealingSlice` over CSV deliveries, optionally with the anomaly checks and the quality-events
    sensor (whose events the engine reads on every tick, as the `healing` sensor does in production)."""

    deliveries: Path = Path()
    with_quality_checks: bool = False
    quality_cursor: str | None = None
    quality_ticks: list[list[str]] = field(default_factory=list)

    @property
    def events_path(self) -> Path:
        return self.data_dir / "ops" / "quality_events.jsonl"

    @property
    def definitions(self) -> dg.Definitions:
        base = super().definitions
        if not self.with_quality_checks:
            return base
        source = Source.model_validate(self.source)
        items = [CatalogEntity(source, name, entity) for name, entity in source.entities.items()]
        return dg.Definitions.merge(
            base,
            dg.Definitions(
                asset_checks=build_quality_checks(items),
                sensors=[build_quality_events_sensor(self.events_path)],
            ),
        )

    def deliver(self, name: str, lines: list[str], header: str = HEADER) -> Path:
        folder = self.deliveries / "orders"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text("\n".join([header, *lines]) + "\n")
        return path

    def quality_events_tick(self) -> list[str]:
        """Evaluates the real `quality_events` sensor against the instance (cursor kept); returns the
        check names of the events it appended."""
        if not self.with_quality_checks:
            return []
        definitions = self.definitions
        sensor = definitions.resolve_sensor_def(SENSOR_NAME)
        before = len(QualityEventStore(self.events_path).read())
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.quality_cursor, definitions=definitions
        )
        result = sensor.evaluate_tick(context)
        self.quality_cursor = result.cursor
        appended = QualityEventStore(self.events_path).read()[before:]
        names = [event.check_name or event.kind for event in appended]
        self.quality_ticks.append(names)
        return names

    def tick(self) -> list[dg.RunRequest]:
        """As the `healing` sensor: the engine reads the failed runs AND the quality events file."""
        self.quality_events_tick()
        events = QualityEventStore(self.events_path)
        requests, self.cursor = self.healer().tick(self.instance, self.cursor, events)
        return requests

    def staged_keys(self) -> list[int]:
        return [row[0] for row in self.staged_rows(ENTITY, "order_id")]

    def quarantined(self) -> list[tuple[str, dict[str, Any]]]:
        """(rule, row) of every row of `ops.quarantine`."""
        warehouse = self.warehouse
        if QUARANTINE_TABLE not in warehouse.tables(QUARANTINE_SCHEMA):
            return []
        table = warehouse.table_ref(QUARANTINE_SCHEMA, QUARANTINE_TABLE)
        rows = warehouse.query(f"SELECT rule, row_json FROM {table}")
        return [(rule, json.loads(row)) for rule, row in rows]


def file_slice(
    tmp_path: Path,
    instance: dg.DagsterInstance,
    *,
    with_quality_checks: bool = False,
    settings: PlatformSettings | None = None,
    **source: Any,
) -> FileHealingSlice:
    """The slice on the embedded DuckDB warehouse, or on `settings`' (data under `tmp_path / "data"`)."""
    data_dir = tmp_path / "data"
    deliveries = tmp_path / "deliveries"
    return FileHealingSlice(
        files_source(deliveries, **source),
        data_dir,
        instance,
        settings or PlatformSettings.local(data_dir),
        fast_policy(),
        deliveries=deliveries,
        with_quality_checks=with_quality_checks,
    )


def outcome_of(incident: Incident | None) -> str:
    """The scoreboard outcome of an incident: `healed after approval` when a human approved the action
    (it does not count as healed without a human), `healed` when resolved by the engine alone."""
    if incident is None:
        return "open"
    if incident.status == "resolved":
        return "healed after approval" if incident.approved_by else "healed"
    if incident.status == "escalated":
        return "escalated"
    return incident.status


def scoreboard_row(
    scenario: str,
    healable: bool,
    incident: Incident | None,
    *,
    outcome: str | None = None,
    category: str | None = None,
    action: str | None = None,
    seconds: float | None = None,
    lost: int = 0,
    duplicated: int = 0,
) -> ScoreboardRow:
    return ScoreboardRow(
        scenario=scenario,
        healable=healable,
        category=category or (incident.category if incident else "-"),
        action=action or (str(incident.action) if incident else "-"),
        outcome=outcome or outcome_of(incident),
        seconds_to_recover=seconds
        if seconds is not None
        else (incident.time_to_recover_s if incident else None),
        rows_lost=lost,
        rows_duplicated=duplicated,
    )


def healed_in_step(scenario: str, category: str, action: str, lost: int, duplicated: int) -> ScoreboardRow:
    """The row of a fault the step absorbs itself (no incident, nothing for the healing layer to do)."""
    return scoreboard_row(
        scenario,
        True,
        None,
        category=category,
        action=action,
        outcome="healed in-step",
        lost=lost,
        duplicated=duplicated,
    )


CHILD_RUN = """
import importlib, pathlib, sys, time
sys.path.insert(0, {tests!r})
import dagster as dg
from fault_files import file_slice
from platform_assets.keys import raw_key, staged_key

owner = importlib.import_module({module!r})
for name in {attribute!r}.split(".")[:-1]:
    owner = getattr(owner, name)
stopped_at = getattr(owner, {attribute!r}.split(".")[-1])


def run_then_wait_to_be_killed(*args, **kwargs):
    result = stopped_at(*args, **kwargs)
    pathlib.Path({marker!r}).touch()
    time.sleep(600)
    return result


setattr(owner, {attribute!r}.split(".")[-1], run_then_wait_to_be_killed)
instance = dg.DagsterInstance.from_config({home!r})
platform = file_slice(pathlib.Path({tmp!r}), instance)
platform.materialize([raw_key("drop", "orders"), staged_key("drop", "orders")])
"""
"""A materialization of the slice in a child process, on the persistent instance under `home`. It stops
right after the platform function `STOP_POINTS[stop]` returns and touches `marker` to say so: the parent
kills it there, at the same point on a fast machine as on a slow one. The platform's own code runs up to
that point; only the wait is added."""

STOP_POINTS = {
    "load": ("resources.warehouses.duckdb_warehouse", "_rename_into_place"),
    "landing_copied": ("resources.landing.zone", "copy_bytes"),
    "landing_committed": ("resources.landing.zone", "InFlight.commit"),
    "staging_scanned": ("platform_assets.quality.quarantine", "rejected_records"),
}
"""Where a child run is killed: mid-load, inside the warehouse's load transaction (the staged rows renamed
into place, not yet committed); mid-landing, a delivery's bytes copied in flight, not committed; after the
landing committed, before Dagster recorded the raw materialization; mid-staging, the delivery scanned into
the staging table, nothing loaded."""


def child_run_command(
    tests_dir: Path, home: Path, tmp_path: Path, marker: Path, stop: str = "load"
) -> list[str]:
    module, attribute = STOP_POINTS[stop]
    script = CHILD_RUN.format(
        tests=str(tests_dir),
        home=str(home),
        tmp=str(tmp_path),
        marker=str(marker),
        module=module,
        attribute=attribute,
    )
    return [sys.executable, "-c", script]


class MemoryCap:
    """A memory cgroup of this machine (v2 `memory.max`, or v1 `memory.limit_in_bytes`) that a child
    process joins: an RSS cap as a container or systemd's MemoryMax= imposes it, enforced by the kernel's
    OOM killer. `available()` says whether this machine lets us create one (root, a writable hierarchy)."""

    V2 = Path("/sys/fs/cgroup")
    V1 = Path("/sys/fs/cgroup/memory")

    def __init__(self, name: str, limit_mb: int) -> None:
        self.limit = limit_mb * 1024 * 1024
        if (self.V2 / "cgroup.controllers").exists():
            self.path, self.limit_file = self.V2 / name, "memory.max"
        else:
            self.path, self.limit_file = self.V1 / name, "memory.limit_in_bytes"

    @classmethod
    def available(cls) -> bool:
        probe = cls(f"platform_probe_{os.getpid()}", 64)
        try:
            probe.__enter__()
        except OSError:
            return False
        probe.__exit__()
        return True

    def __enter__(self) -> MemoryCap:
        self.path.mkdir()
        (self.path / self.limit_file).write_text(str(self.limit))
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def join_command(self) -> str:
        """Python that moves the running process into the cgroup (first thing a capped child does)."""
        procs = str(self.path / "cgroup.procs")
        return f"import os, pathlib; pathlib.Path({procs!r}).write_text(str(os.getpid()))"


CAPPED_RUN = """
{join}
import json, sys
sys.path.insert(0, {tests!r})
import dagster as dg
from fault_files import file_slice

instance = dg.DagsterInstance.from_config({home!r})
platform = file_slice(__import__("pathlib").Path({tmp!r}), instance)
selection = [dg.AssetKey.from_user_string(key) for key in {selection!r}]
platform.materialize(selection, run_config=json.loads({config!r}), tags={tags!r})
"""
"""A materialization of the slice in a child process inside a memory cgroup, on the instance under `home`."""


def capped_run_command(
    cap: MemoryCap,
    tests_dir: Path,
    home: Path,
    tmp_path: Path,
    selection: list[str],
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> list[str]:
    script = CAPPED_RUN.format(
        join=cap.join_command(),
        tests=str(tests_dir),
        home=str(home),
        tmp=str(tmp_path),
        selection=selection,
        config=json.dumps(run_config or {}),
        tags=dict(tags or {}),
    )
    return [sys.executable, "-c", script]
