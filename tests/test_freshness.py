"""Freshness policies: staged assets from the catalog's `max_lag_minutes`, persisted dbt models from their
tightest staged ancestor plus the margin, views and raw assets none; on the real platform definitions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.catalog.loader import load_catalog
from platform_assets.definitions import build_definitions
from platform_assets.keys import RAW_ASSETS, staged_key
from platform_assets.policies.freshness import (
    MART_MARGIN,
    WARN_FRACTION,
    mart_max_lags,
    time_window_policy,
)
from resources.environment import PlatformSettings


def windows(policy: dg.FreshnessPolicy | None) -> tuple[timedelta, timedelta | None] | None:
    if policy is None:
        return None
    warn = policy.warn_window.to_timedelta() if policy.warn_window else None
    return policy.fail_window.to_timedelta(), warn


def expected(lag_minutes: float) -> tuple[timedelta, timedelta]:
    return timedelta(minutes=lag_minutes), timedelta(minutes=lag_minutes * WARN_FRACTION)


def test_time_window_policy_fails_at_the_lag_and_warns_at_80_percent() -> None:
    assert windows(time_window_policy(timedelta(minutes=1440))) == expected(1440)
    assert windows(time_window_policy(timedelta(minutes=90))) == (
        timedelta(minutes=90),
        timedelta(minutes=72),
    )


def test_time_window_policy_respects_dagsters_one_minute_resolution() -> None:
    # Under a minute: raised to one minute, no warn window (80 % of it would be under a minute too).
    assert windows(time_window_policy(timedelta(seconds=20))) == (timedelta(minutes=1), None)
    assert windows(time_window_policy(timedelta(minutes=1.1))) == (timedelta(minutes=1.1), None)
    assert windows(time_window_policy(timedelta(minutes=2))) == (timedelta(minutes=2), timedelta(seconds=96))


def dbt_spec(key: str, deps: list[str | dg.AssetKey], materialized: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key, deps=deps, kinds={"dbt"}, metadata={"dagster-dbt/materialization_type": materialized}
    )


def test_mart_lag_is_the_tightest_staged_ancestor_through_views_plus_margin() -> None:
    orders, customers, events = (staged_key("s", name) for name in ("orders", "customers", "events"))
    lags = {orders: timedelta(hours=24), customers: timedelta(hours=2)}
    specs = [
        dbt_spec("stg_orders", [orders], "view"),
        dbt_spec("stg_customers", [customers], "view"),
        dbt_spec("int_joined", ["stg_orders", "stg_customers"], "view"),
        dbt_spec("mart_joined", ["int_joined"], "table"),
        dbt_spec("mart_orders", ["stg_orders"], "incremental"),
        dbt_spec("mart_events", [events], "table"),  # its only staged input declares no freshness
        dbt_spec("mart_of_mart", ["mart_orders"], "table"),
    ]
    assert mart_max_lags(specs, lags) == {
        dg.AssetKey("mart_joined"): timedelta(hours=2) + MART_MARGIN,
        dg.AssetKey("mart_orders"): timedelta(hours=24) + MART_MARGIN,
        dg.AssetKey("mart_of_mart"): timedelta(hours=24) + MART_MARGIN,
    }


@pytest.fixture
def platform_graph(tmp_path: Path, dbt_manifest: Path):
    settings = PlatformSettings.local(tmp_path)
    catalog = load_catalog(variables=settings.catalog_vars())
    return catalog, build_definitions(settings).resolve_asset_graph()


def test_staged_assets_carry_the_catalogs_max_lag(platform_graph) -> None:
    catalog, graph = platform_graph
    declared = [item for item in catalog if item.entity.freshness is not None]
    assert declared, "the shipped catalog declares freshness on some entities"
    for item in catalog:
        policy = graph.get(staged_key(item.source_name, item.name)).freshness_policy
        freshness = item.entity.freshness
        assert windows(policy) == (expected(freshness.max_lag_minutes) if freshness else None), item.name


def test_marts_carry_their_tightest_staged_ancestors_lag_plus_margin(platform_graph) -> None:
    catalog, graph = platform_graph
    staged_lags = {
        staged_key(item.source_name, item.name): item.entity.freshness.max_lag_minutes
        for item in catalog
        if item.entity.freshness is not None
    }
    marts = dg.AssetSelection.groups("dbt_marts").resolve(graph)
    assert {"fct_daily_revenue", "fct_orders", "dim_customers"} <= {key.to_user_string() for key in marts}
    with_policy = 0
    for key in marts:
        ancestors = dg.AssetSelection.assets(key).upstream().resolve(graph)
        lags = [staged_lags[ancestor] for ancestor in ancestors if ancestor in staged_lags]
        margin = MART_MARGIN.total_seconds() / 60
        want = (
            (timedelta(minutes=min(lags) + margin), timedelta(minutes=(min(lags) + margin) * WARN_FRACTION))
            if lags
            else None
        )
        assert windows(graph.get(key).freshness_policy) == want, key.to_user_string()
        with_policy += want is not None
    assert with_policy, "at least one mart reads a staged entity that declares freshness"
    # fct_daily_revenue reads staged/shop/orders only.
    orders_lag = staged_lags[staged_key("shop", "orders")]
    assert windows(graph.get(dg.AssetKey("fct_daily_revenue")).freshness_policy) == expected(
        orders_lag + MART_MARGIN.total_seconds() / 60
    )


def test_raw_assets_and_dbt_views_carry_no_policy(platform_graph) -> None:
    _, graph = platform_graph
    for key in (RAW_ASSETS | dg.AssetSelection.groups("dbt_staging", "dbt_intermediate")).resolve(graph):
        assert graph.get(key).freshness_policy is None, key.to_user_string()
