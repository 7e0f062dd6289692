"""Quarantine in staging, through real Dagster materializations on DuckDB and PostgreSQL: rows breaking an
error-severity row rule go to `ops.quarantine` (one row per broken rule, the row as JSON), the rest to the
staged table, every delivered row in exactly one of them; warn-severity rules only report; duplicates are not
quarantined but fail the blocking check, which stops what is downstream; a delivery with more bad rows than
`max_bad_fraction` (and more than one) fails the staging step and writes nothing."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from mini_platform import STAGED, MiniPlatform, good_row

from platform_assets.keys import STAGED_SCHEMA, staged_table


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _staged_materialization(result: dg.ExecuteInProcessResult) -> dg.AssetMaterialization:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == STAGED]
    return event.materialization


BAD_ROWS = {
    # line in the file (header = 1) -> (row, rules it breaks)
    42: (",a@shop.example,C41,paid,1,1,OK,nick", {("order_id", "nullable")}),
    43: ("42,not-an-email,C42,paid,1,1,OK,nick", {("email", "regex")}),
    44: ("43,b@shop.example,TOOLONG,paid,1,1,OK,nick", {("code", "max_length")}),
    45: ("44,c@shop.example,AB,lost,1,1,OK,nick", {("code", "min_length"), ("status", "allowed_values")}),
    46: ("45,d@shop.example,C45,paid,-3,1,OK,nick", {("amount", "min")}),
    47: ("46,e@shop.example,C46,paid,5000,1,OK,nick", {("amount", "max")}),
    48: ("47,f@shop.example,C47,paid,1,many,OK,nick", {("qty", "type")}),
    49: ("48,g@shop.example,C48,paid,1,1,lower,nick", {("note", "check")}),
    50: ("49,h@shop.example,C49,,1,1,OK,nick", {("status", "nullable")}),
}
WARN_ONLY = "50,i@shop.example,C50,shipped,1,1,OK,x"


def test_error_rules_quarantine_rows_warn_rules_report_and_no_row_is_lost(platform: MiniPlatform) -> None:
    good = [good_row(i) for i in range(1, 41)]
    platform.deliver("orders_1.csv", [*good, *(row for row, _ in BAD_ROWS.values()), WARN_ONLY])
    delivered_lines = set(range(2, 2 + len(good) + len(BAD_ROWS) + 1))

    result = platform.materialize()
    assert result.success, "under max_bad_fraction: quarantine, load the rest, carry on"
    assert platform.downstream_runs == [result.run_id]

    materialization = _staged_materialization(result)
    expected_by_rule = {f"{column}: {rule}": 1 for _, broken in BAD_ROWS.values() for column, rule in broken}
    assert materialization.metadata["rows_quarantined"].value == len(BAD_ROWS)
    assert materialization.metadata["quarantined_by_rule"].value == expected_by_rule
    assert materialization.metadata["bad_fraction"].value == pytest.approx(len(BAD_ROWS) / 50)
    assert materialization.metadata["rows_written"].value == 41

    quarantined = platform.quarantine()
    assert len(quarantined) == sum(len(broken) for _, broken in BAD_ROWS.values())
    assert {q["asset_key"] for q in quarantined} == {STAGED.to_user_string()}
    assert {q["run_id"] for q in quarantined} == {result.run_id}
    assert all(q["quarantined_at"] is not None for q in quarantined)
    by_line: dict[int, set[tuple[str, str]]] = {}
    for q in quarantined:
        row = json.loads(q["row_json"])
        assert row["_origin"] == "orders/orders_1.csv"
        by_line.setdefault(row["_record"], set()).add((q["column"], q["rule"]))
    assert by_line == {line: broken for line, (_, broken) in BAD_ROWS.items()}
    typed = next(json.loads(q["row_json"]) for q in quarantined if q["rule"] == "type")
    assert typed["order_id"] == 47 and typed["qty"] is None and typed["_cast_errors"] == "qty=many"
    regex = next(json.loads(q["row_json"]) for q in quarantined if q["rule"] == "regex")
    assert regex["email"] == "not-an-email" and regex["amount"] == 1.0

    staged = platform.staged('order_id, nickname, "_record"')
    assert [order_id for order_id, _, _ in staged] == [*range(1, 41), 50]
    assert {record for _, _, record in staged} | set(by_line) == delivered_lines, "nothing dropped"
    assert not {record for _, _, record in staged} & set(by_line), "nothing both staged and quarantined"

    contract = _check(result, "schema_contract")
    assert contract.passed and contract.severity == dg.AssetCheckSeverity.ERROR
    assert contract.metadata["rows_checked"].value == 41
    warnings = _check(result, "quality_warnings")
    assert not warnings.passed
    assert warnings.severity == dg.AssetCheckSeverity.WARN
    assert warnings.metadata["violations_by_rule"].value == {"nickname: min_length": 1}
    assert warnings.metadata["rows_checked"].value == 41
    (offending,) = [r.data for r in warnings.metadata["offending_rows"].value.records]
    assert offending["order_id"] == "50" and offending["rule"] == "min_length"
    assert offending["value"] == "x" and offending["origin"] == "orders/orders_1.csv"
    assert offending["record"] == 51


def test_a_bad_row_found_again_by_later_runs_is_quarantined_once(platform: MiniPlatform) -> None:
    """An incremental run stages only the new delivery, so an old bad row is not found again; a full
    rebuild (here: the staged table was dropped) finds every bad row again and upserts it (one row per
    landed row and rule, tagged with the latest run) instead of adding it twice."""
    platform.deliver("orders_1.csv", [*(good_row(i) for i in range(1, 21)), BAD_ROWS[46][0]])
    first = platform.materialize()
    platform.deliver("orders_2.csv", [*(good_row(i) for i in range(21, 41)), BAD_ROWS[43][0]])
    second = platform.materialize()
    assert first.success and second.success
    assert sorted((q["rule"], q["run_id"]) for q in platform.quarantine()) == sorted(
        [("min", first.run_id), ("regex", second.run_id)]
    )
    platform.drop_staged()
    third = platform.materialize()
    assert third.success
    quarantined = platform.quarantine()
    assert sorted((q["rule"], q["run_id"]) for q in quarantined) == [
        ("min", third.run_id),
        ("regex", third.run_id),
    ]
    assert sorted(q["row_key"] for q in quarantined) == ["orders/orders_1.csv#22", "orders/orders_2.csv#22"]


def test_duplicates_are_not_quarantined_and_the_blocking_check_stops_downstream(
    platform: MiniPlatform,
) -> None:
    rows = [good_row(i) for i in range(1, 11)]
    rows.append("3,other@shop.example,X03,paid,1,1,OK,nick")  # primary key 3 twice
    rows.append("11,user5@shop.example,C05,paid,1,1,OK,nick")  # (email, code) of order 5 again
    platform.deliver("orders_1.csv", rows)

    result = platform.materialize()
    assert not result.success
    assert platform.downstream_runs == [], "duplicates stop what is downstream"
    assert platform.quarantine() == []
    if platform.warehouse.kind == "postgres":
        # PostgreSQL's replace builds the primary key's unique index: the load itself refuses the
        # duplicate (atomically, nothing changed), before the check could run.
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "Key (order_id)=(3) is duplicated" in str(failure.event_specific_data.error)  # type: ignore[union-attr]
        assert staged_table("acme", "orders") not in platform.warehouse.tables(STAGED_SCHEMA)
        return
    contract = _check(result, "schema_contract")
    assert not contract.passed and contract.severity == dg.AssetCheckSeverity.ERROR
    assert contract.metadata["violations_by_rule"].value == {"order_id: unique": 2, "email, code: unique": 2}
    offending = [r.data for r in contract.metadata["offending_rows"].value.records]
    assert sorted((r["column"], r["order_id"], r["record"]) for r in offending) == [
        ("email, code", "11", 13),
        ("email, code", "5", 6),
        ("order_id", "3", 4),
        ("order_id", "3", 12),
    ]
    assert _check(result, "quality_warnings").passed
    assert len(platform.staged("order_id")) == 12, "which copy is wrong is unknowable: both stay"
    assert _staged_materialization(result).metadata["rows_quarantined"].value == 0


def test_a_full_rebuild_judges_each_delivery_on_its_own_bad_rows(platform: MiniPlatform) -> None:
    """2 bad rows of a 5-row file are 40% of that delivery, and 2% of the 100 rows a rebuild stages: the
    rebuild must refuse the delivery as the incremental run does, not let history dilute it."""
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 96)])
    assert platform.materialize().success
    bad = [f"{i},u{i}@shop.example,C{i},paid,-1,1,OK,nick" for i in (96, 97)]
    platform.deliver("orders_2.csv", [*(good_row(i) for i in range(98, 101)), *bad])
    platform.drop_staged()
    result = platform.materialize(max_bad_fraction=0.25)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "staged__acme__orders"
    message = failure.event_specific_data.error.cause.message  # type: ignore[union-attr]
    assert "2 of 5 rows (40.0%) of one delivery (orders/orders_2.csv, " in message
    assert platform.quarantine() == []


def _below_min(i: int) -> str:
    """Order `i` with a negative amount: it breaks the `min` rule of `amount`, and no other."""
    return f"{i},u{i}@shop.example,C{i:02d},paid,-1,{i},OK,nick"


def test_a_single_bad_row_is_quarantined_however_small_its_delivery(platform: MiniPlatform) -> None:
    """One bad row of a three-row delivery is 33% of it, over a 5% `max_bad_fraction`: the row is
    quarantined and the two others staged, in the incremental run and in a full rebuild alike; a second
    bad row in the delivery refuses it."""
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 4)])
    assert platform.materialize(max_bad_fraction=0.05).success
    platform.deliver("orders_2.csv", [good_row(4), _below_min(5), good_row(6)])
    incremental = platform.materialize(max_bad_fraction=0.05)
    assert incremental.success
    assert _staged_materialization(incremental).metadata["staging/mode"].value == "incremental"
    assert [order_id for (order_id,) in platform.staged("order_id")] == [1, 2, 3, 4, 6]
    assert [(q["column"], q["rule"]) for q in platform.quarantine()] == [("amount", "min")]

    platform.drop_staged()
    assert platform.materialize(max_bad_fraction=0.05).success
    assert [order_id for (order_id,) in platform.staged("order_id")] == [1, 2, 3, 4, 6]

    platform.deliver("orders_3.csv", [good_row(7), _below_min(8), _below_min(9)])
    refused = platform.materialize(max_bad_fraction=0.05)
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.cause.message  # type: ignore[union-attr]
    assert "2 of 3 rows (66.7%) of one delivery (orders/orders_3.csv, " in message


def test_the_refused_delivery_is_named_though_a_single_bad_row_is_a_larger_share(
    platform: MiniPlatform,
) -> None:
    """One bad row of three (33%) is no refusal, so the delivery the step names is the one that is
    refused: two bad rows of ten (20%), not the largest share."""
    platform.deliver("orders_1.csv", [good_row(1), good_row(2), _below_min(3)])
    platform.deliver("orders_2.csv", [*(good_row(i) for i in range(4, 12)), _below_min(12), _below_min(13)])
    result = platform.materialize(max_bad_fraction=0.05)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.cause.message  # type: ignore[union-attr]
    assert "2 of 10 rows (20.0%) of one delivery (orders/orders_2.csv, " in message
    assert platform.quarantine() == []


def test_too_many_bad_rows_fail_the_step_and_write_nothing(platform: MiniPlatform) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 11)])
    assert platform.materialize().success
    before = platform.staged("*")

    platform.deliver("orders_2.csv", [f"{i},u{i}@shop.example,C{i},paid,-1,1,OK,nick" for i in range(11, 16)])
    result = platform.materialize(max_bad_fraction=0.25)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "staged__acme__orders"
    message = failure.event_specific_data.error.cause.message  # type: ignore[union-attr]
    assert "5 of 5 rows (100.0%)" in message, "an incremental run's share is of the new delivery"
    assert "max_bad_fraction 25.0%" in message
    assert "amount: min 5" in message
    assert "Nothing was written" in message
    assert platform.staged("*") == before
    assert platform.quarantine() == []
    assert platform.warehouse.tables("staged") == ["acme__orders"], "what the failed run built is gone"
    assert platform.downstream_runs[-1:] != [result.run_id]

    again = platform.materialize(max_bad_fraction=1.0)
    assert again.success, "raising the threshold lets the same delivery through, bad rows quarantined"
    (staged,) = again.asset_materializations_for_node("staged__acme__orders")
    assert staged.metadata["staging/mode"].value == "full", "a changed catalog entry rebuilds"
    assert staged.metadata["bad_fraction"].value == 1.0, "the rebuild judges the delivery, not 5 of 15 rows"
    assert len(platform.staged("order_id")) == 10
    assert {q["rule"] for q in platform.quarantine()} == {"min"}
