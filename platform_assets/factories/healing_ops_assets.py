"""The healing ledger in the asset graph: `ops/healing_incidents` copies every incident from the ledger
(`resources/state/healing_store.py`, written by the healing sensor) into the warehouse
(`ops.healing_incidents`), and `ops/healing_summary` derives what an on-call engineer asks first: the
auto-resolution rate, the mean time to recover, open incidents and the sources that fail most, per category in
a table and as numbers in its materialization metadata (plotted by the UI over time).

"Auto-resolved": resolved by an action the policy took without a human (no approval); resolved after an
approval, or by a run someone launched, is resolved but not automatic.
"""

from collections import Counter
from collections.abc import Callable

import dagster as dg
import pyarrow as pa

from platform_assets.keys import INCIDENTS_KEY, OPS_GROUP, WAREHOUSE_IO_MANAGER_KEY, WAREHOUSE_POOL
from resources.state.database import StateLocation
from resources.state.healing_store import HealingStore, Incident
from resources.warehouses.io_manager import load_metadata

SUMMARY_KEY = dg.AssetKey(["ops", "healing_summary"])
OPEN = ("open", "healing", "running", "proposed", "approved", "escalated")

INCIDENT_SCHEMA = pa.schema(
    [
        pa.field("incident_id", pa.string(), nullable=False),
        pa.field("opened_at", pa.timestamp("us", tz="UTC")),
        pa.field("asset_key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("category", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("rule_id", pa.string()),
        pa.field("explanation", pa.string()),
        pa.field("evidence_json", pa.string()),
        pa.field("action", pa.string()),
        pa.field("risk", pa.string()),
        pa.field("decision", pa.string()),
        pa.field("decided_by", pa.string()),
        pa.field("status", pa.string()),
        pa.field("attempts", pa.int64()),
        pa.field("outcome", pa.string()),
        pa.field("auto_resolved", pa.bool_()),
        pa.field("approved_by", pa.string()),
        pa.field("approved_at", pa.timestamp("us", tz="UTC")),
        pa.field("resolved_at", pa.timestamp("us", tz="UTC")),
        pa.field("time_to_recover_s", pa.float64()),
    ]
)
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("category", pa.string(), nullable=False),
        pa.field("incidents", pa.int64()),
        pa.field("resolved", pa.int64()),
        pa.field("auto_resolved", pa.int64()),
        pa.field("auto_resolution_rate", pa.float64()),
        pa.field("mean_time_to_recover_s", pa.float64()),
        pa.field("open", pa.int64()),
    ]
)


def auto_resolved(incident: Incident) -> bool:
    return (
        incident.status == "resolved"
        and incident.approved_by is None
        and (incident.outcome or "").startswith("healed")
    )


def incident_table(incidents: list[Incident]) -> pa.Table:
    def timestamp(value: float | None) -> object:
        return None if value is None else int(value * 1_000_000)

    rows = [
        {
            **{name: getattr(incident, name) for name in INCIDENT_SCHEMA.names if hasattr(incident, name)},
            "opened_at": timestamp(incident.opened_at),
            "approved_at": timestamp(incident.approved_at),
            "resolved_at": timestamp(incident.resolved_at),
            "auto_resolved": auto_resolved(incident),
        }
        for incident in incidents
    ]
    return pa.Table.from_pylist(rows, schema=INCIDENT_SCHEMA)


def summary_table(incidents: list[Incident]) -> pa.Table:
    rows = []
    for category in sorted({incident.category for incident in incidents}):
        mine = [incident for incident in incidents if incident.category == category]
        recovered = [
            i.time_to_recover_s for i in mine if i.status == "resolved" and i.time_to_recover_s is not None
        ]
        automatic = sum(auto_resolved(incident) for incident in mine)
        rows.append(
            {
                "category": category,
                "incidents": len(mine),
                "resolved": sum(incident.status == "resolved" for incident in mine),
                "auto_resolved": automatic,
                "auto_resolution_rate": automatic / len(mine),
                "mean_time_to_recover_s": sum(recovered) / len(recovered) if recovered else None,
                "open": sum(incident.status in OPEN for incident in mine),
            }
        )
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def summary_metadata(incidents: list[Incident]) -> dict[str, dg.MetadataValue]:
    recovered = [
        i.time_to_recover_s for i in incidents if i.status == "resolved" and i.time_to_recover_s is not None
    ]
    failing = Counter(incident.source or incident.asset_key or "-" for incident in incidents)
    return {
        "incidents": dg.MetadataValue.int(len(incidents)),
        "auto_resolution_rate": dg.MetadataValue.float(
            sum(auto_resolved(i) for i in incidents) / len(incidents) if incidents else 0.0
        ),
        "mean_time_to_recover_s": dg.MetadataValue.float(
            sum(recovered) / len(recovered) if recovered else 0.0
        ),
        "open_incidents": dg.MetadataValue.int(sum(incident.status in OPEN for incident in incidents)),
        "top_failing_sources": dg.MetadataValue.json(dict(failing.most_common(5))),
    }


def build_healing_ops_assets(
    store_path: StateLocation, warehouse_kind: str | None = None
) -> list[dg.AssetsDefinition]:
    return [
        _ledger_asset(
            INCIDENTS_KEY,
            "Every healing incident (ops.healing_incidents): time, asset, run, category, confidence, "
            "evidence, action, who or what decided, outcome, time to recover.",
            ["incident_id"],
            incident_table,
            store_path,
            warehouse_kind,
        ),
        _ledger_asset(
            SUMMARY_KEY,
            "Per failure category (ops.healing_summary): incidents, auto-resolution rate, mean time to "
            "recover, open incidents; overall figures and the top failing sources in the metadata.",
            ["category"],
            summary_table,
            store_path,
            warehouse_kind,
            deps=[INCIDENTS_KEY],
        ),
    ]


def _ledger_asset(
    key: dg.AssetKey,
    description: str,
    primary_key: list[str],
    table: Callable[[list[Incident]], pa.Table],
    store_path: StateLocation,
    warehouse_kind: str | None,
    deps: list[dg.AssetKey] | None = None,
) -> dg.AssetsDefinition:
    """A warehouse table derived from the whole ledger, replaced every run, with the overall figures."""
    table_name = ".".join(key.path)

    @dg.asset(
        key=key,
        deps=deps,
        group_name=OPS_GROUP,
        kinds={warehouse_kind} if warehouse_kind else None,
        io_manager_key=WAREHOUSE_IO_MANAGER_KEY,
        pool=WAREHOUSE_POOL,
        description=description,
        metadata={**load_metadata(mode="replace", primary_key=primary_key), "dagster/table_name": table_name},
    )
    def ledger_table() -> dg.Output[pa.Table]:
        incidents = HealingStore(store_path).incidents()
        return dg.Output(table(incidents), metadata=summary_metadata(incidents))

    return ledger_table
