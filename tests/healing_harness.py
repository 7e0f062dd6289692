"""A platform slice for fault-injection scenarios: real materializations (in process) of one catalog
source's raw and staged assets and their checks, a real Dagster instance, the real healing engine ticking
between runs and launching what it requests, and a scoreboard row per scenario.

`heal()` plays the daemon: tick the healing engine, execute every run it requests, tick again, until it
requests nothing more (or a round limit). Backoff delays are shortened by the harness's policy, so the
scenarios measure what the platform does, not how long it waits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.raw_assets import build_raw_asset
from platform_assets.factories.staged_assets import build_contract_checks, build_staged_asset
from platform_assets.keys import STAGED_SCHEMA, staged_table
from resources.environment import PlatformSettings, build_resources
from resources.state.healing_store import HealingStore, Incident
from resources.warehouses.base import Warehouse
from sensors.healing.engine import Healer, HealingCursor, HealingEvent
from sensors.healing.graph import HealingGraph
from sensors.healing.policy import HealingPolicy, default_policy

FAST_BACKOFF = {"base_seconds": 0.01, "max_seconds": 0.05, "jitter": 0.0}


def fast_policy(**changes: Any) -> HealingPolicy:
    """The default policy with backoff delays of milliseconds."""
    return HealingPolicy.model_validate({**default_policy().model_dump(), "backoff": FAST_BACKOFF, **changes})


@dataclass
class HealingSlice:
    source: dict[str, Any]
    """The catalog document of one source (`Source`), entity names as keys of `entities`."""
    data_dir: Path
    instance: dg.DagsterInstance
    settings: PlatformSettings
    policy: HealingPolicy = field(default_factory=fast_policy)
    events: list[HealingEvent] = field(default_factory=list)
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    cursor: HealingCursor = field(default_factory=HealingCursor)

    def __post_init__(self) -> None:
        self.store = HealingStore(self.data_dir / "ops" / "healing.sqlite")
        self.started = time.monotonic()

    @property
    def definitions(self) -> dg.Definitions:
        source = Source.model_validate(self.source)
        items = [CatalogEntity(source, name, entity) for name, entity in source.entities.items()]
        return dg.Definitions(
            assets=[
                *(build_raw_asset(item) for item in items),
                *(build_staged_asset(item, self.settings.warehouse_kind) for item in items),
            ],
            asset_checks=[check for item in items for check in build_contract_checks(item)],
            resources=build_resources(self.settings, DBT_PROJECT_DIR),
        )

    @property
    def warehouse(self) -> Warehouse:
        return build_resources(self.settings, DBT_PROJECT_DIR)["warehouse"]

    def materialize(
        self,
        selection: list[dg.AssetKey] | None = None,
        *,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        job = self.definitions.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=self.instance,
            asset_selection=selection,
            run_config=dict(run_config or {}),
            tags=dict(tags or {}),
            raise_on_error=False,
        )
        self.results.append(result)
        return result

    def healer(self) -> Healer:
        graph = HealingGraph.from_asset_graph(self.definitions.resolve_asset_graph())
        return Healer(self.store, self.policy, graph, notify=self.events.append)

    def tick(self) -> list[dg.RunRequest]:
        requests, self.cursor = self.healer().tick(self.instance, self.cursor)
        return requests

    def heal(self, max_rounds: int = 6) -> list[dg.RunRequest]:
        """Tick and run what the engine requests until it requests nothing; returns every request."""
        launched: list[dg.RunRequest] = []
        for _ in range(max_rounds):
            time.sleep(0.06)  # past the shortened backoff
            requests = self.tick()
            if not requests and not self.store.incidents(statuses=("healing", "approved", "running")):
                break
            for request in requests:
                launched.append(request)
                self.materialize(
                    list(request.asset_selection or ()), run_config=request.run_config, tags=request.tags
                )
        return launched

    def incidents(self) -> list[Incident]:
        return self.store.incidents()

    def staged_rows(self, entity: str, columns: str = "*") -> list[tuple[Any, ...]]:
        table = self.warehouse.table_ref(STAGED_SCHEMA, staged_table(self.source["source"], entity))
        return [tuple(row) for row in self.warehouse.query(f"SELECT {columns} FROM {table} ORDER BY 1")]


@dataclass(frozen=True)
class ScoreboardRow:
    scenario: str
    healable: bool
    category: str
    action: str
    outcome: str
    """healed | escalated | healed in-step | open"""
    seconds_to_recover: float | None
    rows_lost: int
    rows_duplicated: int

    def as_json(self) -> str:
        return json.dumps(self.__dict__)


def key_counts(rows: list[tuple[Any, ...]], expected_keys: set[Any]) -> tuple[int, int]:
    """(keys lost, rows duplicated) of the first column of `rows` against `expected_keys`."""
    keys = [row[0] for row in rows]
    return len(expected_keys - set(keys)), len(keys) - len(set(keys))


def slice_for(
    tmp_path: Path,
    instance: dg.DagsterInstance,
    source: dict[str, Any],
    settings: PlatformSettings | None = None,
) -> HealingSlice:
    data_dir = tmp_path / "data"
    return HealingSlice(source, data_dir, instance, settings or PlatformSettings.local(data_dir))


def incident_summary(incidents: list[Incident]) -> Iterator[str]:
    for incident in incidents:
        yield f"{incident.category}/{incident.action}/{incident.status}: {incident.explanation}"


def render_scoreboard(rows: list[ScoreboardRow]) -> str:
    """The scoreboard as a Markdown table, with the healed share of the healable scenarios."""
    lines = [
        "| scenario | healable | category | action | outcome | time to recover (s) | rows lost "
        "| rows duplicated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: r.scenario):
        seconds = "" if row.seconds_to_recover is None else f"{row.seconds_to_recover:.1f}"
        lines.append(
            f"| {row.scenario} | {'yes' if row.healable else 'no'} | {row.category} | {row.action} | "
            f"{row.outcome} | {seconds} | {row.rows_lost} | {row.rows_duplicated} |"
        )
    healable = [row for row in rows if row.healable]
    approved = [row for row in healable if row.outcome == "healed after approval"]
    healed = [row for row in healable if row.outcome.startswith("healed") and row not in approved]
    others = [row for row in rows if not row.healable]
    escalated = [row for row in others if row.outcome == "escalated"]
    share = f"{len(healed) / len(healable):.0%}" if healable else "-"
    lines.append("")
    lines.append(
        f"Healed without a human: {len(healed)} of {len(healable)} healable scenarios ({share}); healed "
        f"after a human approved a medium-risk action, as the policy requires: {len(approved)}; escalated: "
        f"{len(escalated)} of {len(others)} non-healable; rows lost: {sum(r.rows_lost for r in rows)}, "
        f"duplicated: {sum(r.rows_duplicated for r in rows)}."
    )
    return "\n".join(lines)
