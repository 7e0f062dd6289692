"""Re-delivery, through real files and Dagster materializations on DuckDB and PostgreSQL: a file delivered
again with changed content replaces that file's earlier rows, so the keys it no longer holds leave the
staged table, unless a later file holds them."""

from __future__ import annotations

import dagster as dg
from mini_platform import STAGED, MiniPlatform, good_row


def _staged_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == STAGED]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_a_shrunk_redelivery_with_a_changed_key_removes_the_rows_it_no_longer_holds(
    platform: MiniPlatform,
) -> None:
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 11)])
    assert platform.materialize().success
    corrected_9 = good_row(9).replace(",9.5,", ",9.75,")
    platform.deliver("orders_2.csv", [corrected_9, good_row(11), good_row(12)])
    assert _staged_metadata(platform.materialize())["staging/mode"] == "incremental"

    # orders_1.csv again: shrunk to six rows, key 5 now 50; 7..10 gone (9 is also in the later orders_2).
    platform.deliver("orders_1.csv", [*(good_row(i) for i in (1, 2, 3, 4, 6)), good_row(50)])
    redelivered = platform.materialize()
    assert redelivered.success
    metadata = _staged_metadata(redelivered)
    assert metadata["staging/mode"] == "full"
    assert "re-delivered file(s) replace their earlier rows: orders/orders_1.csv" in str(
        metadata["staging/reason"]
    )
    staged = platform.staged('order_id, amount, "_origin"')
    assert [row[0] for row in staged] == [1, 2, 3, 4, 6, 9, 11, 12, 50]
    assert staged[5] == (9, 9.75, "orders/orders_2.csv"), "a later file holds key 9: it stays"
    assert staged[8] == (50, 50.5, "orders/orders_1.csv")

    platform.deliver("orders_3.csv", [good_row(13)])
    after = platform.materialize()
    assert _staged_metadata(after)["staging/mode"] == "incremental", "staging is incremental again"
    assert [row[0] for row in platform.staged("order_id")] == [1, 2, 3, 4, 6, 9, 11, 12, 13, 50]


def test_a_refused_delivery_redelivered_corrected_is_staged(platform: MiniPlatform) -> None:
    """Seen with a public dataset: a delivery refused for its share of bad rows, then delivered again
    corrected under the same name (what the refusal asks for), was refused again for the bad copy it
    replaces. A replaced copy is no delivery of its own any more: only the later copy is judged."""
    platform.deliver("orders_1.csv", [good_row(i) for i in range(1, 21)])
    assert platform.materialize().success
    bad_status = [good_row(i).replace(",paid,", ",lost,") for i in (21, 22)]
    platform.deliver("orders_2.csv", [*bad_status, *(good_row(i) for i in range(23, 27))])
    refused = platform.materialize()
    assert not refused.success, "2 of 6 rows (33%) of one delivery break a rule: over max_bad_fraction 25%"

    platform.deliver("orders_2.csv", [good_row(i) for i in range(21, 27)])
    corrected = platform.materialize()
    assert corrected.success, "the corrected copy replaces the refused one"
    assert [row[0] for row in platform.staged("order_id")] == list(range(1, 27))
    assert platform.quarantine() == [], "nothing of the refused copy is held back"
