"""The quarantine reconciles, through real files and Dagster materializations on DuckDB and PostgreSQL: a
quarantined row leaves `held` once a later good version of its key is staged (`superseded`), or once a
replay stages the row itself after its rule was relaxed (`released`)."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
import quality_rule_checks
from mini_platform import STAGED, MiniPlatform, good_row

from platform_assets.cli import replay


def _statuses(platform: MiniPlatform) -> dict[int, tuple[str | None, bool]]:
    """order_id -> (status, whether resolved_at is set) of each quarantined row."""
    return {
        json.loads(q["row_json"])["order_id"]: (q["status"], q["resolved_at"] is not None)
        for q in platform.quarantine()
    }


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == STAGED]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_a_quarantined_key_is_superseded_when_a_later_good_version_is_staged(platform: MiniPlatform) -> None:
    bad_21 = good_row(21).replace(",21.5,", ",-1,")
    bad_22 = good_row(22).replace(",22.5,", ",-2,")
    platform.deliver("orders_1.csv", [*(good_row(i) for i in range(1, 21)), bad_21, bad_22])
    assert platform.materialize().success
    assert _statuses(platform) == {21: ("held", False), 22: ("held", False)}

    platform.deliver("orders_2.csv", [good_row(21)])
    corrected = platform.materialize()
    assert corrected.success
    assert _metadata(corrected)["quarantine/superseded"] == 1
    assert _statuses(platform) == {21: ("superseded", True), 22: ("held", False)}
    assert 21 in [row[0] for row in platform.staged("order_id")]


def test_a_replay_releases_the_rows_a_relaxed_rule_now_accepts(
    platform: MiniPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower = good_row(21).replace(",OK,", ",lower,")
    platform.deliver("orders_1.csv", [*(good_row(i) for i in range(1, 21)), lower])
    assert platform.materialize().success
    assert _statuses(platform) == {21: ("held", False)}

    # The custom check is relaxed in code: the catalog entry, and so the staging fingerprint, is unchanged.
    monkeypatch.setattr(quality_rule_checks, "is_upper", lambda values: pd.Series(True, index=values.index))
    ordinary = platform.materialize()
    assert _metadata(ordinary)["staging/mode"] == "incremental"
    assert _statuses(platform) == {21: ("held", False)}, "a run with nothing new re-stages nothing"

    replayed = replay(platform.definitions(), platform.instance, STAGED)
    assert replayed.success
    metadata = _metadata(replayed)
    assert metadata["staging/mode"] == "full" and "replay" in str(metadata["staging/reason"])
    assert (metadata["quarantine/released"], metadata["rows_quarantined"]) == (1, 0)
    assert _statuses(platform) == {21: ("released", True)}
    assert platform.staged("order_id, note")[-1] == (21, "lower")
