"""The dbt marts over the demo domain agree with computations straight from the source files, and a second
run (the incremental path of fct_orders) leaves every mart exactly as it was.

One test for both: the second run needs a first one, and the whole graph is the slow part of either."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pyarrow.csv as pacsv
import pytest
from conftest import LocalPlatform

MARTS = ("fct_orders", "dim_customers", "fct_customer_lifetime_value", "fct_daily_revenue", "fct_web_funnel")
FUNNEL_STAGES = ("product_view", "add_to_cart", "checkout", "purchase")


def _mart(platform: LocalPlatform, name: str) -> pd.DataFrame:
    with platform.warehouse.connection() as con:
        frame = con.sql(f"SELECT * FROM analytics.{name}").df()
    return frame.sort_values(list(frame.columns[:1])).reset_index(drop=True)


def _source_orders(platform: LocalPlatform) -> pd.DataFrame:
    files = sorted(platform.orders_dir.glob("*.csv"))
    return pd.concat([pacsv.read_csv(f).to_pandas() for f in files], ignore_index=True)


def _source_web_events(platform: LocalPlatform) -> pd.DataFrame:
    files = sorted((platform.settings.sources_dir / "files" / "shop" / "web_events").glob("*.jsonl.gz"))
    return pd.concat([pd.read_json(f, lines=True, compression="gzip") for f in files], ignore_index=True)


def _source_customer_count(platform: LocalPlatform) -> int:
    with sqlite3.connect(platform.settings.sources_dir / "shop.sqlite") as db:
        ((count,),) = db.execute("SELECT count(*) FROM customers").fetchall()
    return count


def test_marts_agree_with_the_source_files_and_a_second_run_changes_none_incrementally(
    local_platform: LocalPlatform,
) -> None:
    result = local_platform.materialize_all()
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    _assert_marts_agree_with_the_sources(local_platform)
    _assert_a_second_run_is_incremental_and_changes_no_mart(local_platform)


def _assert_marts_agree_with_the_sources(local_platform: LocalPlatform) -> None:

    orders = _source_orders(local_platform)
    revenue = orders.loc[orders["status"] != "cancelled", "amount"].sum()

    fct_orders = _mart(local_platform, "fct_orders")
    assert len(fct_orders) == len(orders) and fct_orders["order_id"].is_unique
    assert fct_orders["amount"].sum() == pytest.approx(orders["amount"].sum(), abs=0.01)
    assert (fct_orders["items_amount"] - fct_orders["amount"]).abs().max() < 0.005
    cancelled = fct_orders["status"] == "cancelled"
    assert (fct_orders.loc[cancelled, "payment_status"] == "unpaid").all()
    assert (fct_orders.loc[fct_orders["status"] == "returned", "payment_status"] == "refunded").all()

    customers = _mart(local_platform, "dim_customers")
    assert len(customers) == _source_customer_count(local_platform)
    assert customers["order_count"].sum() == len(orders)
    assert customers["lifetime_value"].sum() == pytest.approx(revenue, abs=0.01 * len(customers))
    per_customer = orders.groupby("customer_id").size()
    ordered = customers.set_index("customer_id").loc[per_customer.index]
    assert ordered["order_count"].tolist() == per_customer.tolist()

    clv = _mart(local_platform, "fct_customer_lifetime_value")
    assert clv["customer_id"].tolist() == customers["customer_id"].tolist()
    assert clv["lifetime_value"].tolist() == pytest.approx(customers["lifetime_value"].tolist(), abs=0.005)
    kept = orders.loc[~orders["status"].isin(["cancelled", "returned"]), "amount"].sum()
    assert clv["net_lifetime_value"].sum() == pytest.approx(kept, abs=0.01 * len(clv))

    events = _source_web_events(local_platform)
    sessions = events.groupby("session_id").agg(
        session_date=("event_ts", lambda ts: pd.to_datetime(ts).min().date()),
        **{stage: ("event_type", lambda types, s=stage: (types == s).any()) for stage in FUNNEL_STAGES},
    )
    expected = sessions.groupby("session_date").agg(
        sessions=("purchase", "size"), **{f"{s}_sessions": (s, "sum") for s in FUNNEL_STAGES}
    )
    funnel = _mart(local_platform, "fct_web_funnel").set_index("session_date")
    funnel.index = pd.to_datetime(funnel.index).date
    assert list(funnel.index) == list(expected.index)
    for column in expected.columns:
        assert funnel[column].astype(int).tolist() == expected[column].astype(int).tolist(), column
    assert funnel["conversion_rate"].tolist() == pytest.approx(
        (expected["purchase_sessions"] / expected["sessions"]).tolist(), abs=0.0001
    )


def _assert_a_second_run_is_incremental_and_changes_no_mart(local_platform: LocalPlatform) -> None:
    before = {name: _mart(local_platform, name) for name in MARTS}
    # A marker on the oldest order, far outside the lookback window: a full rebuild would restore its status,
    # an incremental run leaves the row alone. (A made-up order would be deleted by the model's post-hook:
    # its key is not staged.)
    with local_platform.warehouse.connection() as con:
        (oldest, status) = con.execute(
            "SELECT order_id, status FROM analytics.fct_orders ORDER BY source_updated_at, order_id LIMIT 1"
        ).fetchone()
        con.execute("UPDATE analytics.fct_orders SET status = 'marker' WHERE order_id = ?", [oldest])

    again = local_platform.materialize_all()
    assert again.success
    assert all(e.passed for e in again.get_asset_check_evaluations())
    with local_platform.warehouse.connection() as con:
        marked_sql = "SELECT status FROM analytics.fct_orders WHERE order_id = ?"
        (marked,) = con.execute(marked_sql, [oldest]).fetchone()
        assert marked == "marker", "fct_orders was rebuilt instead of updated incrementally"
        con.execute("UPDATE analytics.fct_orders SET status = ? WHERE order_id = ?", [status, oldest])
    for name in MARTS:
        pd.testing.assert_frame_equal(_mart(local_platform, name), before[name], check_exact=True, obj=name)
