"""Asset keys and warehouse names of each layer, in one place so that factories, dbt and tests agree."""

from __future__ import annotations

import dagster as dg

RAW_GROUP = "raw"
OPS_GROUP = "ops"
"""The operations assets: the schema registry and the healing ledger as warehouse tables."""
STAGED_GROUP = "staged"
STAGED_SCHEMA = "staged"
WAREHOUSE_IO_MANAGER_KEY = "warehouse_io_manager"
WAREHOUSE_POOL = "warehouse"
"""Concurrency pool of every step that writes the warehouse: DuckDB admits one writing process."""


INCIDENTS_KEY = dg.AssetKey(["ops", "healing_incidents"])
SCHEMA_REGISTRY_KEY = dg.AssetKey(["ops", "schema_registry"])


def raw_key(source: str, entity: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source, entity])


def staged_key(source: str, entity: str) -> dg.AssetKey:
    return dg.AssetKey(["staged", source, entity])


def staged_table(source: str, entity: str) -> str:
    """Table name of a staged entity inside the `staged` schema (dbt sources use it as `identifier`)."""
    return f"{source}__{entity}"
