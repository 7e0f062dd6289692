"""What the healing layer needs to know about the asset graph: which assets a failed step materializes,
what is downstream of them (re-materialized with them), what feeds a stale asset, which source an asset
reads (circuit breakers and rate overrides are per source) and which step takes an asset's run config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

RAW_AND_STAGED_LAYERS = ("raw", "staged")
"""Key prefixes of the assets that read one source: `raw/<source>/<entity>`, `staged/<source>/<entity>`."""


@dataclass(frozen=True)
class HealingGraph:
    step_assets: dict[str, frozenset[dg.AssetKey]]
    """Step key (the node name) -> the assets it materializes."""
    asset_step: dict[dg.AssetKey, str]
    parents: dict[dg.AssetKey, frozenset[dg.AssetKey]]
    children: dict[dg.AssetKey, frozenset[dg.AssetKey]]
    step_checked: dict[str, frozenset[dg.AssetKey]] = field(default_factory=dict)
    """Step key of a check that runs in a step of its own -> the assets it checks."""

    @classmethod
    def from_asset_graph(cls, graph: object) -> HealingGraph:
        """From a Dagster asset graph (`Definitions.resolve_asset_graph()`, `repository_def.asset_graph`)."""
        step_assets: dict[str, frozenset[dg.AssetKey]] = {}
        asset_step: dict[dg.AssetKey, str] = {}
        step_checked: dict[str, frozenset[dg.AssetKey]] = {}
        for assets_def in graph.assets_defs:  # type: ignore[attr-defined]
            if not assets_def.is_executable:
                continue
            name = assets_def.node_def.name
            if not assets_def.keys:
                step_checked[name] = frozenset(check.asset_key for check in assets_def.check_keys)
                continue
            step_assets[name] = step_assets.get(name, frozenset()) | frozenset(assets_def.keys)
            for key in assets_def.keys:
                asset_step[key] = name
        keys = list(asset_step)
        parents = {key: frozenset(graph.get(key).parent_keys) for key in keys}  # type: ignore[attr-defined]
        children = {key: frozenset(graph.get(key).child_keys) for key in keys}  # type: ignore[attr-defined]
        return cls(step_assets, asset_step, parents, children, step_checked)

    def assets_of_step(self, step_key: str | None) -> frozenset[dg.AssetKey]:
        """The assets a step materializes, or those it checks when it is a check's own step: a check's step
        interrupted by a restart of the code server is its asset's failure (rerunning the asset runs its
        checks again). Taken for no asset, its retry had selected nothing, and an empty selection is
        every asset of the code location (a 30-minute chaos soak)."""
        if step_key is None:
            return frozenset()
        return self.step_assets.get(step_key) or self.step_checked.get(step_key, frozenset())

    def downstream(self, keys: Iterable[dg.AssetKey]) -> set[dg.AssetKey]:
        """`keys` and everything materializable downstream of them."""
        return self._closure(keys, self.children)

    def upstream(self, keys: Iterable[dg.AssetKey]) -> set[dg.AssetKey]:
        """`keys` and every materializable asset they are built from."""
        return self._closure(keys, self.parents)

    def _closure(
        self, keys: Iterable[dg.AssetKey], edges: dict[dg.AssetKey, frozenset[dg.AssetKey]]
    ) -> set[dg.AssetKey]:
        found: set[dg.AssetKey] = set()
        pending = [key for key in keys if key in self.asset_step]
        while pending:
            key = pending.pop()
            if key not in found:
                found.add(key)
                pending.extend(k for k in edges.get(key, ()) if k in self.asset_step)
        return found

    @staticmethod
    def source_of(key: dg.AssetKey | str | None) -> str | None:
        """The source an asset reads (`raw/shop/orders` -> `shop`); None for models built on the warehouse."""
        if key is None:
            return None
        path = key.path if isinstance(key, dg.AssetKey) else key.split("/")
        return path[1] if len(path) == 3 and path[0] in RAW_AND_STAGED_LAYERS else None
