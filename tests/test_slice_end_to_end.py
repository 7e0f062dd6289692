"""The thin slice, end to end on the embedded default: orders CSV -> raw Parquet -> staged DuckDB table
(bad rows quarantined; blocking schema contract) -> dbt staging model -> daily revenue mart."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pyarrow.csv as pacsv
import pytest
from conftest import LocalPlatform

STAGED_ORDERS = dg.AssetKey(["staged", "shop", "orders"])
MART = dg.AssetKey(["fct_daily_revenue"])


def _orders_from_csv(platform: LocalPlatform) -> pd.DataFrame:
    files = sorted(platform.orders_dir.glob("*.csv"))
    return pd.concat([pacsv.read_csv(f).to_pandas() for f in files], ignore_index=True)


def _mart(platform: LocalPlatform) -> pd.DataFrame:
    with platform.warehouse.connection() as con:
        return con.sql("SELECT * FROM analytics.fct_daily_revenue ORDER BY order_date").df()


def _contract_evaluation(
    result: dg.ExecuteInProcessResult, name: str = "schema_contract"
) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == STAGED_ORDERS and e.check_name == name
    ]
    return evaluation


def _assert_the_mart_matches_the_source_orders(
    local_platform: LocalPlatform, result: dg.ExecuteInProcessResult
) -> None:
    assert result.success

    orders = _orders_from_csv(local_platform)
    ((staged_rows,),) = local_platform.warehouse.query("SELECT count(*) FROM staged.shop__orders")
    assert staged_rows == len(orders) > 1000

    orders["order_date"] = pd.to_datetime(orders["order_ts"]).dt.date
    revenue = orders[orders["status"] != "cancelled"]
    expected = pd.DataFrame(
        {
            "orders": orders.groupby("order_date").size(),
            "cancelled_orders": orders[orders["status"] == "cancelled"].groupby("order_date").size(),
            "revenue": revenue.groupby("order_date")["amount"].sum().round(2),
        }
    ).fillna(0)
    mart = _mart(local_platform).set_index("order_date")
    mart.index = pd.to_datetime(mart.index).date
    assert list(mart.index) == list(expected.index)
    assert mart["orders"].tolist() == expected["orders"].astype(int).tolist()
    assert mart["cancelled_orders"].tolist() == expected["cancelled_orders"].astype(int).tolist()
    assert mart["revenue"].astype(float).tolist() == pytest.approx(expected["revenue"].tolist(), abs=0.005)

    evaluations = result.get_asset_check_evaluations()
    assert _contract_evaluation(result).passed
    assert _contract_evaluation(result, "quality_warnings").passed
    dbt_tests = [e for e in evaluations if e.asset_key != STAGED_ORDERS]
    assert len(dbt_tests) >= 4 and all(e.passed for e in dbt_tests)
    staged = [e for e in result.get_asset_materialization_events() if e.asset_key == STAGED_ORDERS]
    assert staged[0].materialization.metadata["rows_quarantined"].value == 0


def test_the_mart_matches_the_source_then_bad_orders_are_quarantined_and_duplicates_fail_the_blocking_check(
    local_platform: LocalPlatform,
) -> None:
    """One test: the bad delivery needs a first run, and the whole slice's first run is the slow part."""
    _assert_the_mart_matches_the_source_orders(local_platform, local_platform.materialize_all())
    mart_before = _mart(local_platform)

    # A new delivery: orders 1, 3, 4 and 5 are corrections of delivered orders; the second row has no key;
    # order 900001 is delivered twice in the same file; 60 corrections of orders 100-159 make the 3 bad rows
    # 4.5% of the delivery, within the default max_bad_fraction of 5% (which bounds each delivery).
    header = "order_id,customer_id,order_ts,status,currency,amount,updated_at\n"
    good = (
        "1,10,2026-01-02 10:00:00,paid,EUR,12.50,2026-01-02 10:00:00\n"
        "5,14,2026-01-03 09:00:00,shipped,EUR,7.25,2026-01-03 09:00:00\n"
    )
    bad = (
        ",11,2026-01-02 11:00:00,paid,EUR,20.00,2026-01-02 11:00:00\n"
        "3,12,2026-01-02 12:00:00,paid,EUR,-5.00,2026-01-02 12:00:00\n"
        "4,13,2026-01-02 13:00:00,paid,EUR,twelve,2026-01-02 13:00:00\n"
    )
    duplicated = (
        "900001,15,2026-01-03 10:00:00,paid,EUR,1.00,2026-01-03 10:00:00\n"
        "900001,16,2026-01-03 11:00:00,paid,EUR,2.00,2026-01-03 11:00:00\n"
    )
    delivery = local_platform.orders_dir / "orders_bad.csv"
    corrections = "".join(
        f"{i},10,2026-01-04 10:00:00,paid,EUR,3.00,2026-01-04 10:00:00\n" for i in range(100, 160)
    )
    delivery.write_text(header + good + bad + duplicated + corrections)
    result = local_platform.materialize_all()

    staged = next(e for e in result.get_asset_materialization_events() if e.asset_key == STAGED_ORDERS)
    assert staged.materialization.metadata["rows_quarantined"].value == 3
    assert staged.materialization.metadata["quarantined_by_rule"].value == {
        "order_id: nullable": 1,
        "amount: min": 1,
        "amount: type": 1,
    }
    quarantined = local_platform.warehouse.query(
        'SELECT "column", rule, row_json FROM ops.quarantine WHERE run_id = ?', [result.run_id]
    )
    rows = {(column, rule): json.loads(row) for column, rule, row in quarantined}
    assert rows[("amount", "type")]["_cast_errors"] == "amount=twelve"
    assert rows[("amount", "type")]["order_id"] == 4
    assert rows[("amount", "min")]["amount"] == -5.0
    assert rows[("order_id", "nullable")]["_record"] == 4
    assert all(row["_origin"] == "orders/orders_bad.csv" for row in rows.values())
    # Each key is taken from its latest GOOD extraction: a bad correction is quarantined (recorded above,
    # with its rule and value) and the version before it stays staged instead of the key vanishing.
    kept = local_platform.warehouse.query(
        "SELECT order_id, amount FROM staged.shop__orders WHERE order_id IN (3, 4) ORDER BY order_id"
    )
    assert [order_id for order_id, _ in kept] == [3, 4]
    assert all(amount is not None and amount >= 0 for _, amount in kept)

    evaluation = _contract_evaluation(result)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    metadata = evaluation.metadata
    # The table passed its contract on the run before: this one checks the rows it staged (2 good orders,
    # 900001 twice, 60 corrections) and the keys they bring, not the table.
    assert metadata["rows_checked"].value == 64
    assert str(metadata["scope"].value).startswith(f"rows staged by run {result.run_id}")
    assert metadata["violations_by_rule"].value == {"order_id: unique": 2}
    offending = [record.data for record in metadata["offending_rows"].value.records]
    assert sorted((r["order_id"], r["record"], r["origin"]) for r in offending) == [
        ("900001", 7, "orders/orders_bad.csv"),
        ("900001", 8, "orders/orders_bad.csv"),
    ]

    mart_materializations = [e for e in result.get_asset_materialization_events() if e.asset_key == MART]
    assert mart_materializations == []
    started = {str(e.step_key) for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "staged__shop__orders" in started
    assert "dbt_models" not in started, "the blocking check must stop the dbt step"
    assert not result.success
    assert _mart(local_platform).equals(mart_before)
