"""Anomaly checks: the math on its own, then the checks on real Dagster materializations of a small asset
that records the same metadata the staged asset does (`dagster/row_count`, `profile/...`)."""

import dagster as dg
import pytest

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.keys import staged_key
from platform_assets.quality.anomaly_checks import (
    MEAN_SHIFT_CHECK,
    NULL_RATE_CHECK,
    VOLUME_CHECK,
    build_anomaly_checks,
    mean_shift,
    null_rate_drift,
    volume_anomaly,
)

STEADY = [1000.0, 1010.0, 990.0, 1005.0, 995.0]
"""Earlier row counts, newest first: changes of -10, +20, -15, +10 (mean +1.25)."""


@pytest.mark.parametrize(
    ("latest", "direction", "anomalous"),
    [
        (10_000, "both", True),
        (10_000, "spike", True),
        (10_000, "drop", False),
        (100, "both", True),
        (100, "drop", True),
        (100, "spike", False),
        (1_020, "both", False),
    ],
)
def test_volume_z_score(latest: float, direction: str, anomalous: bool) -> None:
    verdict = volume_anomaly(latest, STEADY, sensitivity=3, min_history=5, direction=direction)
    assert verdict.enough_history
    assert verdict.anomalous is anomalous
    assert verdict.change == latest - 1000.0
    assert verdict.mean_change == pytest.approx(1.25)


def test_volume_short_history_is_not_judged() -> None:
    verdict = volume_anomaly(10_000, STEADY[:4], sensitivity=3, min_history=5, direction="both")
    assert not verdict.anomalous and not verdict.enough_history and verdict.z_score is None


def test_volume_steady_history_has_a_noise_floor() -> None:
    """A constant history (stddev 0) does not make one more row infinitely anomalous."""
    assert not volume_anomaly(1001, [1000.0] * 5, sensitivity=3, min_history=5, direction="both").anomalous
    assert volume_anomaly(1200, [1000.0] * 5, sensitivity=3, min_history=5, direction="both").anomalous


def test_a_growing_table_is_judged_by_its_growth_not_its_size() -> None:
    """An upserted table's count is the whole table's: each count of a growing one is above the mean of the
    earlier ones. Steady growth and a catch-up after an outage (three rounds of growth in one run) are not
    flagged; ten times the usual growth is, and so is a loss of a hundred rows."""
    growing = [1200.0 - 20 * i for i in range(20)]  # newest first: +20 a run, up to 1200
    steady = volume_anomaly(1220, growing, sensitivity=3, min_history=5, direction="both")
    assert (steady.change, steady.mean_change, steady.z_score, steady.anomalous) == (20, 20, 0, False)
    catch_up = volume_anomaly(1260, growing, sensitivity=3, min_history=5, direction="both")
    assert not catch_up.anomalous and catch_up.change == 60
    assert volume_anomaly(1400, growing, sensitivity=3, min_history=5, direction="spike").anomalous
    assert volume_anomaly(1100, growing, sensitivity=3, min_history=5, direction="drop").anomalous


def test_null_rate_drift() -> None:
    assert null_rate_drift("c", 0.35, [0.1, 0.1, 0.1], max_increase=0.2).drifted
    assert not null_rate_drift("c", 0.25, [0.1, 0.1, 0.1], max_increase=0.2).drifted
    assert null_rate_drift("c", 0.35, [0.1, 0.1, 0.1], max_increase=0.2).limit == pytest.approx(0.3)


def test_mean_shift() -> None:
    history = [10.0, 10.2, 9.8, 10.1, 9.9]
    assert mean_shift("c", 12.0, history, sensitivity=3).drifted
    assert not mean_shift("c", 10.3, history, sensitivity=3).drifted
    assert not mean_shift("c", 10.0001, [10.0] * 5, sensitivity=3).drifted  # relative floor
    assert mean_shift("c", 11.0, [10.0] * 5, sensitivity=3).drifted


def _item(direction: str = "both") -> CatalogEntity:
    source = Source.model_validate(
        {
            "source": "shop",
            "connection": {"kind": "files", "root": "/deliveries"},
            "entities": {
                "orders": {
                    "file": {"format": "csv", "path": "*.csv"},
                    "primary_key": ["order_id"],
                    "columns": {
                        "order_id": {"type": "integer", "nullable": False},
                        "note": {"type": "string"},
                        "amount": {"type": "double"},
                    },
                    "anomalies": {
                        "volume": {"min_history": 5, "history": 10, "direction": direction},
                        "null_rate_max_increase": 0.1,
                    },
                }
            },
        }
    )
    return CatalogEntity(source, "orders", source.entities["orders"])


class Delivery(dg.Config):
    rows: int = 1000
    note_null_rate: float = 0.1
    amount_mean: float = 50.0
    with_profile: bool = True


@dg.asset(key=staged_key("shop", "orders"))
def orders(config: Delivery) -> dg.MaterializeResult:
    profile = (
        {
            "profile/null_rate/order_id": 0.0,
            "profile/null_rate/note": config.note_null_rate,
            "profile/null_rate/amount": 0.0,
            "profile/mean/amount": config.amount_mean,
        }
        if config.with_profile
        else {}
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(config.rows), **profile})


def _materialize(
    instance: dg.DagsterInstance, item: CatalogEntity, **delivery: object
) -> dict[str, dg.AssetCheckEvaluation]:
    result = dg.materialize(
        [orders, *build_anomaly_checks(item)],
        instance=instance,
        run_config=dg.RunConfig({orders.op.name: Delivery(**delivery)}),  # type: ignore[arg-type]
    )
    assert result.success
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


STEADY_RUNS = [
    {"rows": 1000, "note_null_rate": 0.10, "amount_mean": 50.0},
    {"rows": 1010, "note_null_rate": 0.11, "amount_mean": 50.5},
    {"rows": 990, "note_null_rate": 0.09, "amount_mean": 49.5},
    {"rows": 1005, "note_null_rate": 0.10, "amount_mean": 50.2},
    {"rows": 995, "note_null_rate": 0.10, "amount_mean": 49.8},
]


def _with_history(instance: dg.DagsterInstance, item: CatalogEntity, *, runs: bool = True) -> None:
    """Five steady materializations: real runs (their checks must pass), or reported without a run (the
    same events in the instance, faster)."""
    for run in STEADY_RUNS:
        if runs:
            checks = _materialize(instance, item, **run)
            assert all(evaluation.passed for evaluation in checks.values())
        else:
            metadata = {
                "dagster/row_count": dg.MetadataValue.int(int(run["rows"])),
                "profile/null_rate/note": run["note_null_rate"],
                "profile/mean/amount": run["amount_mean"],
            }
            instance.report_runless_asset_event(dg.AssetMaterialization(orders.key, metadata=metadata))


def test_short_history_passes_and_says_so() -> None:
    item = _item()
    with dg.DagsterInstance.ephemeral() as instance:
        checks = _materialize(instance, item, rows=10)
        checks = _materialize(instance, item, rows=100_000, note_null_rate=0.9, amount_mean=1e6)
    assert set(checks) == {VOLUME_CHECK, NULL_RATE_CHECK, MEAN_SHIFT_CHECK}
    assert all(evaluation.passed for evaluation in checks.values())
    volume = checks[VOLUME_CHECK]
    assert volume.severity == dg.AssetCheckSeverity.WARN
    assert volume.metadata["insufficient_history"].value is True
    assert volume.metadata["history_size"].value == 1
    assert "not judged" in (checks[NULL_RATE_CHECK].description or "")


def test_volume_spike_and_drop() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        _with_history(instance, _item())
        spike = _materialize(instance, _item(), rows=10_000)[VOLUME_CHECK]
    assert not spike.passed
    assert spike.severity == dg.AssetCheckSeverity.WARN
    assert spike.metadata["z_score"].value > 3
    assert spike.metadata["history_size"].value == 5
    assert spike.metadata["direction"].value == "both"
    assert spike.metadata["row_change"].value == 10_000 - 995
    assert spike.metadata["historical_mean_change"].value == pytest.approx(-1.25)

    for direction, flagged in (("drop", True), ("both", True), ("spike", False)):
        with dg.DagsterInstance.ephemeral() as instance:
            _with_history(instance, _item(direction), runs=False)
            drop = _materialize(instance, _item(direction), rows=100)[VOLUME_CHECK]
        assert drop.passed is not flagged, direction


def test_null_rate_jump_and_mean_shift_are_flagged_per_column() -> None:
    item = _item()
    with dg.DagsterInstance.ephemeral() as instance:
        _with_history(instance, item)
        checks = _materialize(instance, item, note_null_rate=0.5, amount_mean=80.0)
        steady = _materialize(instance, item, note_null_rate=0.12, amount_mean=50.1)
    null_rate = checks[NULL_RATE_CHECK]
    assert not null_rate.passed
    assert null_rate.metadata["columns_drifted"].value == 1
    rows = {record.data["column"]: record.data for record in null_rate.metadata["drift"].value.records}
    assert rows["note"]["drifted"] is True and rows["amount"]["drifted"] is False
    assert rows["note"]["max_null_rate"] == pytest.approx(0.2)

    shift = checks[MEAN_SHIFT_CHECK]
    assert not shift.passed
    (amount,) = shift.metadata["drift"].value.records
    assert amount.data["column"] == "amount" and amount.data["drifted"] is True
    assert amount.data["z_score"] > 3
    assert checks[VOLUME_CHECK].passed

    assert all(evaluation.passed for evaluation in steady.values())


def test_materializations_without_a_profile_are_skipped() -> None:
    item = _item()
    with dg.DagsterInstance.ephemeral() as instance:
        _with_history(instance, item, runs=False)
        _materialize(instance, item, with_profile=False)
        checks = _materialize(instance, item, note_null_rate=0.5)
    assert not checks[NULL_RATE_CHECK].passed
    assert checks[VOLUME_CHECK].metadata["history_size"].value == 6
