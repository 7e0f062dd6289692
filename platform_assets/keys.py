"""Asset keys and warehouse names of each layer, in one place so that factories, dbt and tests agree."""

from __future__ import annotations

import dagster as dg

RAW_LAYER = "raw"
"""First part of every raw asset's key."""
STAGED_LAYER = "staged"
"""First part of every staged asset's key."""
OPS_GROUP = "ops"
"""The operations assets: the schema registry and the healing ledger as warehouse tables."""
STAGED_SCHEMA = "staged"
WAREHOUSE_IO_MANAGER_KEY = "warehouse_io_manager"
WAREHOUSE_POOL = "warehouse"
"""Concurrency pool of every step that writes the warehouse: DuckDB admits one writing process."""


INCIDENTS_KEY = dg.AssetKey(["ops", "healing_incidents"])
SCHEMA_REGISTRY_KEY = dg.AssetKey(["ops", "schema_registry"])


def raw_key(source: str, entity: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_LAYER, source, entity])


def staged_key(source: str, entity: str) -> dg.AssetKey:
    return dg.AssetKey([STAGED_LAYER, source, entity])


def layer_group(layer: str, source: str) -> str:
    """The asset group of a source's raw or staged assets, `raw_<source>` / `staged_<source>`. The UI labels
    a node with the last part of its key, the entity: in one group per layer, a catalog of 50 sources
    showed 500 staged nodes, 50 of them named `ent02`; per source, a group holds one source's entities and
    its name says which source they are."""
    return f"{layer}_{source}"


RAW_ASSETS = dg.AssetSelection.key_prefixes([RAW_LAYER])
"""Every raw asset, whatever its source's group."""
STAGED_ASSETS = dg.AssetSelection.key_prefixes([STAGED_LAYER])
"""Every staged asset, whatever its source's group."""


def staged_table(source: str, entity: str) -> str:
    """Table name of a staged entity inside the `staged` schema (dbt sources use it as `identifier`)."""
    return f"{source}__{entity}"
