"""The drift decision needs the types the landed text parses as. Staging reads every value anyway, so a
delivery whose text parses as declared is decided from staging's own counts of type failures, without a
scan of its own; only a delivery whose text did not (here: a quantity that is a word) is scanned and staged
again under the decision the scan gives, which is the one a scan first would have given."""

from __future__ import annotations

import pytest
from mini_platform import MiniPlatform, good_row

from platform_assets.staging import schema_registry


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every pass `delivered_schema` makes over landed values (a spy on our own function, not a mock)."""
    calls: list[object] = []
    scan = schema_registry._parse_counts

    def spied(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return scan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(schema_registry, "_parse_counts", spied)
    return calls


def test_text_that_parses_as_declared_is_not_scanned_and_text_that_does_not_is(
    platform: MiniPlatform, scans: list[object]
) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 21)])
    assert platform.materialize().success
    assert scans == [], "every value parsed as declared: staging's own counts decided the drift"

    worded = [good_row(i).replace(f",{i},OK,", ",many,OK,") for i in range(21, 26)]
    platform.deliver("orders_2.csv", worded)
    drifted = platform.materialize()
    assert not drifted.success
    assert scans, "the quantities that are words were scanned before deciding"
    # As a scan first decides it, delivery by delivery: every qty of the new file is a word, so the file
    # types qty as text (within all 25 rows the five words would have been a tolerated 20%), and the
    # catalog's `on_drift: fail` refuses it.
    failure = next(e for e in drifted.all_events if e.event_type_value == "STEP_FAILURE")
    assert "qty: type changed from integer to string" in str(failure.event_specific_data)
    assert len(platform.staged("order_id")) == 20, "the table is left as it was"


def test_a_drift_scan_over_many_landed_files_stays_within_the_staging_memory(platform: MiniPlatform) -> None:
    """The scan reads each landed copy in a scan of its own (its records numbered in file order); sixty of
    them in one query held sixty CSV readers' buffers at once and ran out of the 256 MB limit (found by the
    chaos soak: every later run of the entity failed, and shrinking the batch cannot help)."""
    for day in range(60):
        platform.deliver(f"orders_{day:02d}.csv", [good_row(day * 2 + 1), good_row(day * 2 + 2)])
    assert platform.materialize().success
    worded = [good_row(i).replace(f",{i},OK,", ",many,OK,") for i in (500, 501)]  # a lone word: a bad row
    platform.deliver("orders_worded.csv", worded)
    drifted = platform.materialize()
    failure = next(e for e in drifted.all_events if e.event_type_value == "STEP_FAILURE")
    assert "qty: type changed from integer to string" in failure.step_failure_data.error.to_string()
