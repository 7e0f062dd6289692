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
    assert drifted.success
    assert scans, "the quantities that are words were scanned before deciding"
    (staged,) = [e for e in drifted.get_asset_materialization_events() if e.asset_key.path[0] == "staged"]
    metadata = {key: value.value for key, value in staged.materialization.metadata.items()}
    # As a scan first decides it: the new file alone types qty as text (not the last staged version), so
    # the run rebuilds in full; over every file the words are within the tolerance, so qty stays an
    # integer and the five worded rows are quarantined for their type.
    assert (metadata["staging/mode"], metadata["rows_quarantined"]) == ("full", 5)
    assert "schema differs" in str(metadata["staging/reason"])
