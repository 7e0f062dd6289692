"""What `dataplatform run --select` materializes: catalog names for sources and entities, dbt's selection
syntax for the marts, Dagster's for anything else.

- `shop` : every raw and staged asset of the source `shop`;
- `shop.orders` : the raw and staged assets of that entity;
- `dbt:<dbt selection>` : dbt models, as `dbt build --select` reads it (`dbt:fct_orders+`, `dbt:tag:daily`);
- an expression with `:`, `*` or `+` : Dagster's asset selection syntax, as the UI and `dg launch --assets`
  read it (`group:ops`, `key:staged/shop/*+`).

Several are united. A name that matches nothing is an error listing what exists, never an empty run. The
checks of the selected assets run with them.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from platform_assets.keys import RAW_LAYER, STAGED_LAYER

DBT_PREFIX = "dbt:"
_DAGSTER_SYNTAX = (":", "*", "+")


class SelectionError(ValueError):
    """A `--select` expression that selects nothing: which, and what exists."""


def selected_keys(definitions: dg.Definitions, expressions: Iterable[str]) -> set[dg.AssetKey]:
    """The asset keys `expressions` select in `definitions` (see the module docstring)."""
    graph = definitions.resolve_asset_graph()
    keys: set[dg.AssetKey] = set()
    for expression in expressions:
        selection = _selection(definitions, expression.strip())
        found = selection.resolve(graph)
        if not found:
            raise SelectionError(
                f"--select {expression!r} selects no asset. {_known(graph.get_all_asset_keys())}"
            )
        keys |= found
    return keys


def _selection(definitions: dg.Definitions, expression: str) -> dg.AssetSelection:
    if expression.startswith(DBT_PREFIX):
        dbt_assets = [
            assets
            for assets in definitions.assets or ()
            if isinstance(assets, dg.AssetsDefinition) and "dbt" in _kinds(assets)
        ]
        return build_dbt_asset_selection(dbt_assets, dbt_select=expression.removeprefix(DBT_PREFIX))
    if any(mark in expression for mark in _DAGSTER_SYNTAX):
        return dg.AssetSelection.from_string(expression)
    parts = expression.split(".")
    if len(parts) > 2 or not all(parts):
        raise SelectionError(
            f"--select {expression!r}: write SOURCE, SOURCE.ENTITY, dbt:<dbt selection> or a Dagster asset "
            f"selection (e.g. key:staged/shop/orders+)"
        )
    return dg.AssetSelection.key_prefixes([RAW_LAYER, *parts], [STAGED_LAYER, *parts])


def _kinds(assets: dg.AssetsDefinition) -> set[str]:
    return {kind for spec in assets.specs for kind in spec.kinds}


def _known(keys: Iterable[dg.AssetKey]) -> str:
    entities = sorted({".".join(key.path[1:]) for key in keys if key.path[0] in (RAW_LAYER, STAGED_LAYER)})
    return f"Sources and entities: {', '.join(entities[:30])}{' ...' if len(entities) > 30 else ''}."
