"""`ops/schema_registry`: the schema versions of every staged entity as a warehouse table
(`ops.schema_registry`), one row per (asset_key, version).

Versions are recorded by the staged assets in their materialization metadata (`schema/*`, see
`schema_registry`); this asset reads each staged asset's materialization history (the latest
`HISTORY_LIMIT` materializations, newest first) and upserts one row per version it finds, with the run
that first recorded it. Re-running it is idempotent; versions older than the history it reads stay in the
table from earlier runs. It reads the staged assets' history, not their tables, so it declares no
dependency on them: it runs on a cron (`platform_assets/policies/triggers.py`), and its one node does not
hang off every staged asset in the lineage.
"""

import json
from collections.abc import Sequence

import dagster as dg
import pyarrow as pa

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.keys import (
    OPS_GROUP,
    SCHEMA_REGISTRY_KEY,
    WAREHOUSE_IO_MANAGER_KEY,
    WAREHOUSE_POOL,
    staged_key,
)
from platform_assets.staging.schema_registry import (
    diff_from_metadata,
    recorded_delivered_names,
    version_from_metadata,
)
from resources.warehouses.io_manager import load_metadata

SCHEMA_REGISTRY_TABLE = "ops.schema_registry"
HISTORY_LIMIT = 1000
"""Materializations read per staged asset and run."""

REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("asset_key", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("fingerprint", pa.string()),
        pa.field("columns_json", pa.string()),
        pa.field("timezones_json", pa.string()),
        pa.field("diff_json", pa.string()),
        pa.field("delivered_names_json", pa.string()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
        pa.field("run_id", pa.string()),
    ]
)


def registry_rows(instance: dg.DagsterInstance, asset_keys: Sequence[dg.AssetKey]) -> pa.Table:
    """One row per (asset key, schema version) found in the assets' materialization history."""
    rows: dict[tuple[str, int], dict[str, object]] = {}
    for key in asset_keys:
        records = instance.fetch_materializations(key, limit=HISTORY_LIMIT, ascending=False).records
        for record in records:  # newest first: the last one seen of a version is the run that recorded it
            materialization = record.asset_materialization
            version = version_from_metadata(materialization.metadata) if materialization else None
            if materialization is None or version is None:
                continue
            rows[(key.to_user_string(), version.version)] = {
                "asset_key": key.to_user_string(),
                "version": version.version,
                "fingerprint": version.fingerprint,
                "columns_json": json.dumps(version.columns, sort_keys=True),
                "timezones_json": json.dumps(version.timezones, sort_keys=True),
                "diff_json": json.dumps(diff_from_metadata(materialization.metadata), sort_keys=True),
                "delivered_names_json": json.dumps(
                    recorded_delivered_names(materialization.metadata), sort_keys=True
                ),
                "recorded_at": version.recorded_at,
                "run_id": record.run_id,
            }
    ordered = [rows[key] for key in sorted(rows)]
    return pa.Table.from_pylist(ordered, schema=REGISTRY_SCHEMA)


def build_schema_registry_asset(
    catalog: Sequence[CatalogEntity], warehouse_kind: str | None = None
) -> dg.AssetsDefinition:
    staged = [staged_key(item.source_name, item.name) for item in catalog]

    @dg.asset(
        key=SCHEMA_REGISTRY_KEY,
        group_name=OPS_GROUP,
        kinds={warehouse_kind} if warehouse_kind else None,
        io_manager_key=WAREHOUSE_IO_MANAGER_KEY,
        pool=WAREHOUSE_POOL,
        description=f"Schema versions of every staged entity ({SCHEMA_REGISTRY_TABLE}): one row per "
        f"(asset_key, version) with its fingerprint, columns, zoned timestamp columns, diff against the "
        f"previous version and the delivered names of columns staged under normalized ones.",
        metadata={
            **load_metadata(mode="upsert", primary_key=["asset_key", "version"]),
            "dagster/table_name": SCHEMA_REGISTRY_TABLE,
        },
    )
    def schema_registry(context: dg.AssetExecutionContext) -> pa.Table:
        table = registry_rows(context.instance, staged)
        context.log.info(f"{table.num_rows} schema version(s) of {len(staged)} staged asset(s)")
        return table

    return schema_registry
