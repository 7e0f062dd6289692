"""Incremental staging, through real Dagster materializations on DuckDB and PostgreSQL: a run after a new
delivery stages only the files extracted since the last run and upserts their good rows, and the table it
leaves is the one a full rebuild from every landed file gives; anything that could make the two differ (a
changed catalog entry, a missing table) rebuilds in full."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import pytest
from mini_platform import STAGED, MiniPlatform, good_row

from platform_assets.catalog.model import Entity
from platform_assets.quality import profile as quality_profile
from resources.warehouses.duckdb_warehouse import quote_identifier

COLUMNS = "order_id, email, code, status, amount, qty, note, nickname, _cast_errors, _origin, _record"


def _staged(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == STAGED]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def _corrected(i: int) -> str:
    return good_row(i).replace(f",{i}.5,", f",{i}.75,")


def test_a_new_delivery_is_upserted_and_the_table_equals_a_full_rebuild(platform: MiniPlatform) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 21)])
    first = platform.materialize()
    assert first.success
    assert _staged(first)["staging/mode"] == "full"

    bad_correction = "3,user3@shop.example,C03,paid,-1,3,OK,nick3"
    new = [*(_corrected(i) for i in range(15, 21)), *(good_row(i) for i in range(21, 26)), bad_correction]
    platform.deliver("orders_2.csv", new)
    second = platform.materialize()
    assert second.success
    metadata = _staged(second)
    assert metadata["staging/mode"] == "incremental"
    assert (metadata["landed_files"], metadata["staged_files"]) == (2, 1)
    assert metadata["load_mode"] == "upsert"
    assert metadata["rows_written"] == 11, "the 6 corrections and 5 new orders, not the table"
    assert metadata["rows_quarantined"] == 1
    assert metadata["dagster/row_count"] == 25, "recorded for the whole table after the upsert"
    assert metadata["profile"]["rows"] == 25
    incremental = platform.staged(COLUMNS)
    assert [row[0] for row in incremental] == list(range(1, 26))
    assert incremental[2][4] == 3.5, "the bad correction of order 3 left its earlier version staged"
    assert [row[4] for row in incremental[14:20]] == [i + 0.75 for i in range(15, 21)]

    platform.drop_staged()
    rebuilt = platform.materialize()
    assert rebuilt.success
    assert _staged(rebuilt)["staging/mode"] == "full"
    assert "missing" in str(_staged(rebuilt)["staging/reason"])
    assert platform.staged(COLUMNS) == incremental


def test_no_new_delivery_stages_nothing_keeps_the_table_and_its_profile(
    platform: MiniPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 11)])
    first = platform.materialize()
    assert first.success
    before = platform.staged(COLUMNS)

    def table_profiled(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run that staged nothing profiled the whole table")

    monkeypatch.setattr("platform_assets.factories.staged_assets.profile_table", table_profiled)
    again = platform.materialize()
    assert again.success
    metadata = _staged(again)
    assert (metadata["staging/mode"], metadata["staged_files"]) == ("incremental", 0)
    assert metadata["rows_written"] == 0
    assert metadata["dagster/row_count"] == 10
    assert metadata["profile"] == _staged(first)["profile"], "the profile recorded last still holds"
    assert platform.staged(COLUMNS) == before


def test_a_changed_catalog_entry_rebuilds_in_full(platform: MiniPlatform) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 11)])
    assert platform.materialize().success
    platform.deliver("orders_2.csv", [good_row(i) for i in range(11, 16)])
    changed = platform.materialize(max_bad_fraction=0.3)
    assert changed.success
    metadata = _staged(changed)
    assert metadata["staging/mode"] == "full"
    assert "staging definition" in str(metadata["staging/reason"])
    assert metadata["rows_written"] == 15


@pytest.fixture
def profiled_duplicates(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The duplicate key rows each whole-table profile was given (None: counted by the warehouse)."""
    given: list[int | None] = []
    profile_sql = quality_profile.profile_sql

    def spy(
        select_sql: str,
        entity: Entity,
        quote: Callable[[str], str] = quote_identifier,
        duplicate_key_rows: int | None = None,
    ) -> str:
        given.append(duplicate_key_rows)
        return profile_sql(select_sql, entity, quote, duplicate_key_rows)

    monkeypatch.setattr(quality_profile, "profile_sql", spy)
    return given


def _duplicates_counted_by_the_warehouse(platform: MiniPlatform) -> int:
    table = platform.warehouse.table_ref("staged", "acme__orders")
    distinct = f"SELECT count(*) FROM (SELECT DISTINCT order_id FROM {table}) AS keys"
    ((count,),) = platform.warehouse.query(f"SELECT count(*) - ({distinct}) FROM {table}")
    return int(count)


def test_an_upsert_onto_a_table_without_duplicate_keys_is_profiled_without_counting_them(
    platform: MiniPlatform, profiled_duplicates: list[int | None]
) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 11)])
    assert platform.materialize().success
    assert profiled_duplicates == [], "a full run profiles its rows while staging them"
    platform.deliver("orders_2.csv", [_corrected(5), good_row(11)])
    after = _staged(platform.materialize())
    assert after["staging/mode"] == "incremental"
    assert profiled_duplicates == [0], "known from the delta, not counted over the table"
    assert after["profile/duplicate_key_rows"] == 0 == _duplicates_counted_by_the_warehouse(platform)
    assert after["dagster/row_count"] == 11


@pytest.mark.parametrize("warehouse_settings", ["duckdb"], indirect=True)
def test_the_warehouse_counts_duplicate_keys_while_the_previous_profile_recorded_some(
    platform: MiniPlatform, profiled_duplicates: list[int | None]
) -> None:
    """On DuckDB only: PostgreSQL's primary key refuses a duplicate key, so no staged table there has one."""
    twice = "11,other11@shop.example,C99,paid,11.5,11,OK,nick11"  # a second order 11 in one extraction
    platform.deliver("orders_1.csv", [*(good_row(i) for i in range(1, 12)), twice])
    first = platform.materialize()
    assert not first.success, "the blocking schema contract fails the duplicate"
    assert _staged(first)["profile/duplicate_key_rows"] == 1

    platform.deliver("orders_2.csv", [good_row(12)])
    still = _staged(platform.materialize())
    assert (still["staging/mode"], profiled_duplicates) == ("incremental", [None])
    assert still["profile/duplicate_key_rows"] == 1 == _duplicates_counted_by_the_warehouse(platform)

    platform.deliver("orders_3.csv", [_corrected(11)])
    corrected = platform.materialize()
    assert corrected.success, "the upsert replaced both copies of order 11"
    assert profiled_duplicates == [None, None]
    assert (
        _staged(corrected)["profile/duplicate_key_rows"]
        == 0
        == _duplicates_counted_by_the_warehouse(platform)
    )

    platform.deliver("orders_4.csv", [good_row(13)])
    assert _staged(platform.materialize())["profile/duplicate_key_rows"] == 0
    assert profiled_duplicates == [None, None, 0]


def _contract(result: dg.ExecuteInProcessResult) -> tuple[bool, dict[str, object]]:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "schema_contract"]
    return evaluation.passed, {key: value.value for key, value in evaluation.metadata.items()}


def test_the_contract_after_an_upsert_validates_its_rows_and_keys_and_the_whole_table_after_a_failure(
    platform: MiniPlatform,
) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 21)])
    passed, first = _contract(platform.materialize())
    assert passed and first["scope"] == "whole table" and first["rows_checked"] == 20

    platform.deliver("orders_2.csv", [good_row(i) for i in range(21, 26)])
    second = platform.materialize()
    passed, checked = _contract(second)
    assert passed and checked["rows_checked"] == 5, "the delta, not the 25 rows of the table"
    assert str(checked["scope"]).startswith(f"rows staged by run {second.run_id}")

    # Order 30 brings the (email, code) of order 1, staged two runs ago: a key the delta brings repeats.
    platform.deliver("orders_3.csv", [good_row(1).replace("1,", "30,", 1)])
    passed, duplicated = _contract(platform.materialize())
    assert not passed and duplicated["rows_checked"] == 1
    assert duplicated["violations_by_rule"] == {"email, code: unique": 2}

    # The table failed its contract: the next upsert's check reads it all, and the duplicate still fails it.
    platform.deliver("orders_4.csv", [good_row(31)])
    passed, whole = _contract(platform.materialize())
    assert not passed and whole["scope"] == "whole table" and whole["rows_checked"] == 27
    assert whole["violations_by_rule"] == {"email, code: unique": 2}
