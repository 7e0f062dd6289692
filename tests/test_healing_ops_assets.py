"""The healing ledger as warehouse tables: `ops.healing_incidents` (every incident) and
`ops.healing_summary` (auto-resolution rate, mean time to recover, open incidents per category), with the
overall figures as materialization metadata."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.factories.healing_ops_assets import build_healing_ops_assets
from resources.environment import PlatformSettings, build_resources
from resources.state.healing_store import HealingStore, Incident


def incident(number: int, category: str, status: str, **fields: object) -> Incident:
    return Incident(
        incident_id=f"i{number}",
        dedup_key=f"d{number}",
        opened_at=1_700_000_000.0 + number,
        updated_at=1_700_000_000.0 + number,
        kind="step_failure",
        asset_key=f"raw/{fields.pop('source', 'shop')}/orders",
        source="shop",
        run_id=f"run{number}",
        category=category,
        confidence=0.9,
        rule_id="rule",
        explanation="why",
        evidence_json=json.dumps({"errors": []}),
        status=status,
        **fields,  # type: ignore[arg-type]
    )


def test_incidents_and_summary_are_warehouse_tables_with_plottable_figures(tmp_path: Path) -> None:
    settings = PlatformSettings.local(tmp_path / "data")
    store = HealingStore(tmp_path / "data" / "ops" / "healing.sqlite")
    store.add_incident(
        incident(
            1,
            "rate_limited",
            "resolved",
            action="slow_down",
            outcome="healed by run x",
            time_to_recover_s=30.0,
        )
    )
    store.add_incident(
        incident(
            2,
            "rate_limited",
            "resolved",
            action="slow_down",
            outcome="healed by run y",
            time_to_recover_s=90.0,
        )
    )
    store.add_incident(
        incident(
            3,
            "schema_drift",
            "resolved",
            action="evolve_schema",
            outcome="healed by run z",
            approved_by="ops (run r)",
            time_to_recover_s=600.0,
        )
    )
    store.add_incident(
        incident(4, "configuration_error", "escalated", action="escalate", outcome="escalated")
    )

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            build_healing_ops_assets(store.location, "duckdb"),
            resources=build_resources(settings, DBT_PROJECT_DIR),
            instance=instance,
        )
    assert result.success
    warehouse = build_resources(settings, DBT_PROJECT_DIR)["warehouse"]
    incidents = warehouse.query(
        "SELECT incident_id, auto_resolved, status FROM ops.healing_incidents ORDER BY 1"
    )
    assert [tuple(row) for row in incidents] == [
        ("i1", True, "resolved"),
        ("i2", True, "resolved"),
        ("i3", False, "resolved"),
        ("i4", False, "escalated"),
    ]
    summary = warehouse.query(
        "SELECT category, incidents, auto_resolved, auto_resolution_rate, mean_time_to_recover_s, open "
        "FROM ops.healing_summary ORDER BY 1"
    )
    assert [tuple(row) for row in summary] == [
        ("configuration_error", 1, 0, 0.0, None, 1),
        ("rate_limited", 2, 2, 1.0, 60.0, 0),
        ("schema_drift", 1, 0, 0.0, 600.0, 0),
    ]
    metadata = result.asset_materializations_for_node("ops__healing_summary")[0].metadata
    assert metadata["auto_resolution_rate"].value == pytest.approx(0.5)
    assert metadata["mean_time_to_recover_s"].value == pytest.approx(240.0)
    assert metadata["open_incidents"].value == 1
    assert metadata["top_failing_sources"].value == {"shop": 4}
