"""Freshness policies of the platform, derived from the catalog, in one place: asset code never sets one.

Dagster 1.13 freshness (`dg.FreshnessPolicy.time_window`) is evaluated by the instance's freshness daemon
(on by default in OSS, part of `dagster dev` and `dagster-daemon`), which records a `FreshnessStateChange`
(PASS / WARN / FAIL) in the event log and shows the state in the UI; `sensors/healing/quality_events.py` turns
a FAIL into a quality event.

- **Staged assets**: `freshness.max_lag_minutes` of the entity is the fail window (the entity is stale
  when its last materialization is older); the warn window is `WARN_FRACTION` (80 %) of it, so a late
  source shows up as WARN before it fails. Dagster counts in whole minutes: a lag under one minute is
  raised to one, and no warn window is set when 80 % of the lag is under one minute. Entities without
  `freshness` get no policy.
- **Persisted dbt models** (tables, incremental models, snapshots: the marts): a mart can be no fresher
  than its inputs, and it is expected to be rebuilt after each refresh of them, so its fail window is the
  *smallest* `max_lag_minutes` among the staged assets it reads (transitively, through views), plus
  `MART_MARGIN` (60 minutes: time for the dbt build that follows a staged refresh, including waiting for
  the warehouse pool). Staged inputs without freshness are ignored; a model with none gets no policy.
  Views (`stg_*`, `int_*`) get none: they are computed when queried, so they are exactly as fresh as the
  staged tables they read, which carry their own policy (a policy on them would only repeat the alert).

`apply_freshness_policies` maps the policies onto the code location's assets in `definitions.py` (at the
root, as dagster-open-platform applies its shared policies), so factories and the dbt translator stay
unaware of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Freshness
from platform_assets.keys import staged_key

WARN_FRACTION = 0.8
"""Warn window as a share of the fail window."""
MART_MARGIN = timedelta(minutes=60)
"""Added to a mart's tightest upstream lag: the dbt build after a staged refresh needs time."""
MIN_WINDOW = timedelta(minutes=1)
"""Dagster refuses freshness windows under one minute."""
PERSISTED_DBT_MATERIALIZATIONS = frozenset({"table", "incremental", "snapshot"})
DBT_MATERIALIZATION_METADATA = "dagster-dbt/materialization_type"


def time_window_policy(max_lag: timedelta) -> dg.FreshnessPolicy:
    """Fail after `max_lag` (at least one minute), warn after `WARN_FRACTION` of it."""
    fail = max(max_lag, MIN_WINDOW)
    warn = timedelta(seconds=math.floor(fail.total_seconds() * WARN_FRACTION))
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn if warn >= MIN_WINDOW else None)


def staged_max_lags(catalog: Iterable[CatalogEntity]) -> dict[dg.AssetKey, timedelta]:
    """Declared maximum lag of each staged asset whose entity declares `freshness`."""
    return {
        staged_key(item.source_name, item.name): _lag(item.entity.freshness)
        for item in catalog
        if item.entity.freshness is not None
    }


def _lag(freshness: Freshness) -> timedelta:
    return timedelta(minutes=freshness.max_lag_minutes)


def mart_max_lags(
    specs: Iterable[dg.AssetSpec], staged_lags: Mapping[dg.AssetKey, timedelta]
) -> dict[dg.AssetKey, timedelta]:
    """Maximum lag of each persisted dbt model: the smallest lag of its staged ancestors plus the margin.

    Ancestors are followed through every spec given (views and other models included), so a mart that
    reads a staged table through `stg_*` and `int_*` views still inherits its lag."""
    specs = list(specs)
    parents = {spec.key: [dep.asset_key for dep in spec.deps] for spec in specs}
    memo: dict[dg.AssetKey, timedelta | None] = {}

    def tightest(key: dg.AssetKey, visiting: frozenset[dg.AssetKey]) -> timedelta | None:
        if key in staged_lags:
            return staged_lags[key]
        if key in memo:
            return memo[key]
        lags = [
            lag
            for parent in parents.get(key, [])
            if parent not in visiting
            for lag in [tightest(parent, visiting | {parent})]
            if lag is not None
        ]
        memo[key] = min(lags) if lags else None
        return memo[key]

    lags = {}
    for spec in specs:
        if not _is_persisted_dbt_model(spec):
            continue
        lag = tightest(spec.key, frozenset({spec.key}))
        if lag is not None:
            lags[spec.key] = lag + MART_MARGIN
    return lags


def _is_persisted_dbt_model(spec: dg.AssetSpec) -> bool:
    return "dbt" in spec.kinds and spec.metadata.get(DBT_MATERIALIZATION_METADATA) in (
        PERSISTED_DBT_MATERIALIZATIONS
    )


def freshness_policies(
    catalog: Iterable[CatalogEntity], specs: Iterable[dg.AssetSpec]
) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    """The policy of every asset that gets one: staged assets from the catalog, persisted dbt models
    from their staged ancestors."""
    specs = list(specs)
    staged = staged_max_lags(catalog)
    present = {spec.key for spec in specs}
    lags = {key: lag for key, lag in staged.items() if key in present}
    lags.update(mart_max_lags(specs, staged))
    return {key: time_window_policy(lag) for key, lag in lags.items()}


AssetLike = dg.AssetsDefinition | dg.AssetSpec


def specs_of(assets: Iterable[AssetLike]) -> list[dg.AssetSpec]:
    return [
        spec for asset in assets for spec in ([asset] if isinstance(asset, dg.AssetSpec) else asset.specs)
    ]


def apply_freshness_policies(
    assets: Sequence[AssetLike], catalog: Iterable[CatalogEntity]
) -> list[AssetLike]:
    """`assets` with the policy of `freshness_policies` on each asset that gets one (an asset that already
    declares a policy keeps it). Applied to every asset of the code location in `definitions.py`, with
    Dagster's public `map_asset_specs` (`Definitions.map_asset_specs` is still a preview API in 1.13)."""
    policies = freshness_policies(catalog, specs_of(assets))

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        policy = policies.get(spec.key)
        if policy is None or spec.freshness_policy is not None:
            return spec
        return spec.replace_attributes(freshness_policy=policy)

    return list(dg.map_asset_specs(attach, assets))


def declared_policies(definitions: dg.Definitions) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    """Every freshness policy the assets of `definitions` carry (what the quality-events sensor watches)."""
    assets = [asset for asset in definitions.assets or [] if isinstance(asset, AssetLike)]
    return {spec.key: spec.freshness_policy for spec in specs_of(assets) if spec.freshness_policy}
