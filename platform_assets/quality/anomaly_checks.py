"""Anomaly checks of a staged table against its own history (severity WARN, never blocking).

History is the staged asset's previous materializations in the Dagster instance (at most
`anomalies.volume.history` of them, before the latest): their `dagster/row_count` (recorded by the
warehouse IO manager) and the profile entries `profile/null_rate/<column>`, `profile/mean/<column>`
(recorded by the staged asset, see `quality_profile`). Each check compares the latest materialization with
that history, and passes, saying so in its metadata, while fewer than `anomalies.volume.min_history`
earlier values exist.

- `volume_anomaly`: the change of the row count since the previous materialization against the changes
  between the earlier ones: z = (change - mean change) / scale; flagged when z > sensitivity
  (`direction: spike`), z < -sensitivity (`drop`) or |z| > sensitivity (`both`). scale = max(sample stddev
  of the changes, sqrt(mean row count), 1): a count-noise floor, so a perfectly steady history does not
  make a one-row change infinitely anomalous. Changes, not counts: an upserted table's count is the whole
  table's, which grows, and every count of a growing table is above the mean of its past ones; the chaos
  soak's tables were flagged after a catch-up run (a source back after an outage) on growth alone.
- `null_rate_drift`: per declared column, flagged when the null rate exceeds its historical mean by more
  than `anomalies.null_rate_max_increase`.
- `mean_shift`: per measurement column (numeric, not a key or reference), flagged when |mean - historical
  mean of means| > `anomalies.mean_shift_sensitivity` * scale, scale = max(stddev of the historical means,
  0.1% of |historical mean|) (the floor again keeps a constant history from flagging rounding noise).
"""

import itertools
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.keys import staged_key
from platform_assets.quality.profile import MEAN_PREFIX, NULL_RATE_PREFIX, measure_columns

ROW_COUNT = "dagster/row_count"
VOLUME_CHECK = "volume_anomaly"
NULL_RATE_CHECK = "null_rate_drift"
MEAN_SHIFT_CHECK = "mean_shift"
MEAN_SHIFT_RELATIVE_FLOOR = 1e-3


@dataclass(frozen=True)
class VolumeVerdict:
    anomalous: bool
    enough_history: bool
    z_score: float | None
    change: float | None
    """Rows gained (negative: lost) since the previous materialization."""
    mean_change: float | None
    stddev_change: float | None
    history_size: int


@dataclass(frozen=True)
class Drift:
    """One column's latest value against its history."""

    column: str
    latest: float
    historical_mean: float
    limit: float
    """The value beyond which the latest counts as drifted (for a mean shift: the allowed distance)."""
    drifted: bool
    history_size: int
    z_score: float | None = None


def volume_anomaly(
    latest: float, history: Sequence[float], *, sensitivity: float, min_history: int, direction: str
) -> VolumeVerdict:
    """`history`: the earlier row counts, newest first (`metadata_series`)."""
    if len(history) < max(min_history, 2):
        return VolumeVerdict(False, False, None, None, None, None, len(history))
    changes = [newer - older for newer, older in itertools.pairwise(history)]
    change = latest - history[0]
    mean_change = statistics.fmean(changes)
    stddev = statistics.stdev(changes) if len(changes) > 1 else 0.0
    z = (change - mean_change) / max(stddev, math.sqrt(max(statistics.fmean(history), 0.0)), 1.0)
    flagged = {"spike": z > sensitivity, "drop": z < -sensitivity, "both": abs(z) > sensitivity}[direction]
    return VolumeVerdict(flagged, True, z, change, mean_change, stddev, len(history))


def null_rate_drift(column: str, latest: float, history: Sequence[float], *, max_increase: float) -> Drift:
    mean = statistics.fmean(history) if history else latest
    limit = mean + max_increase
    return Drift(column, latest, mean, limit, latest > limit + 1e-12, len(history))


def mean_shift(column: str, latest: float, history: Sequence[float], *, sensitivity: float) -> Drift:
    mean = statistics.fmean(history) if history else latest
    stddev = statistics.stdev(history) if len(history) > 1 else 0.0
    scale = max(stddev, MEAN_SHIFT_RELATIVE_FLOOR * abs(mean), 1e-12)
    z = (latest - mean) / scale
    return Drift(column, latest, mean, sensitivity * scale, abs(z) > sensitivity, len(history), z)


def metadata_series(
    materializations: Sequence[dg.AssetMaterialization], name: str
) -> tuple[float | None, list[float]]:
    """The latest materialization's numeric value of entry `name`, and the earlier ones' (newest first),
    skipping materializations that do not carry it."""

    def value(materialization: dg.AssetMaterialization) -> float | None:
        entry = materialization.metadata.get(name)
        raw = entry.value if isinstance(entry, dg.MetadataValue) else entry
        return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None

    if not materializations:
        return None, []
    earlier = [value(m) for m in materializations[1:]]
    return value(materializations[0]), [v for v in earlier if v is not None]


def recent_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, limit: int
) -> list[dg.AssetMaterialization]:
    """The latest `limit` materializations of the asset, newest first."""
    records = instance.fetch_materializations(asset_key, limit=limit).records
    return [r.asset_materialization for r in records if r.asset_materialization is not None]


def build_anomaly_checks(item: CatalogEntity) -> list[dg.AssetChecksDefinition]:
    """One multi-check (a single step reading the history once) with the three checks above."""
    key = staged_key(item.source_name, item.name)
    settings = item.entity.anomalies
    volume = settings.volume
    specs = [
        dg.AssetCheckSpec(
            VOLUME_CHECK,
            asset=key,
            description=f"Row count change since the previous materialization against the changes over the "
            f"last {volume.history}: |z| beyond {volume.sensitivity} ({volume.direction}). Warns only.",
        ),
        dg.AssetCheckSpec(
            NULL_RATE_CHECK,
            asset=key,
            description=f"Null rate per column against its historical mean: a rise of more than "
            f"{settings.null_rate_max_increase:g} (share of rows) warns.",
        ),
        dg.AssetCheckSpec(
            MEAN_SHIFT_CHECK,
            asset=key,
            description=f"Mean of each numeric column against the history of means: a shift beyond "
            f"{settings.mean_shift_sensitivity} historical stddevs warns.",
        ),
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{item.source_name}__{item.name}__anomalies",
        can_subset=True,
        description="Volume, null-rate and mean anomalies against the run history.",
    )
    def anomalies(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        history = recent_materializations(context.instance, key, volume.history + 1)
        results = {
            VOLUME_CHECK: lambda: _volume_result(item, history),
            NULL_RATE_CHECK: lambda: _null_rate_result(item, history),
            MEAN_SHIFT_CHECK: lambda: _mean_shift_result(item, history),
        }
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
            result = results[check_key.name]()
            if not result.passed:
                context.log.warning(f"{key.to_user_string()} {check_key.name}: {result.description}")
            yield result

    return [anomalies]


def _result(name: str, passed: bool, description: str, metadata: Mapping[str, object]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=dict(metadata),
    )


def _volume_result(item: CatalogEntity, history: Sequence[dg.AssetMaterialization]) -> dg.AssetCheckResult:
    volume = item.entity.anomalies.volume
    latest, earlier = metadata_series(history, ROW_COUNT)
    base = {
        "direction": volume.direction,
        "sensitivity": volume.sensitivity,
        "min_history": volume.min_history,
    }
    if latest is None:
        return _result(
            VOLUME_CHECK, True, "No row count recorded yet: nothing to compare.", {**base, "history_size": 0}
        )
    verdict = volume_anomaly(
        latest,
        earlier,
        sensitivity=volume.sensitivity,
        min_history=volume.min_history,
        direction=volume.direction,
    )
    metadata = {**base, "row_count": int(latest), "history_size": verdict.history_size}
    if not verdict.enough_history:
        return _result(
            VOLUME_CHECK,
            True,
            f"Only {verdict.history_size} earlier row count(s), {volume.min_history} needed: not judged yet.",
            {**metadata, "insufficient_history": True},
        )
    assert verdict.z_score is not None and verdict.change is not None
    assert verdict.mean_change is not None and verdict.stddev_change is not None
    metadata |= {
        "z_score": round(verdict.z_score, 3),
        "row_change": int(verdict.change),
        "historical_mean_change": round(verdict.mean_change, 3),
        "historical_stddev_change": round(verdict.stddev_change, 3),
    }
    description = (
        f"{int(latest):,} rows, {int(verdict.change):+,} since the previous materialization, against a mean "
        f"change of {verdict.mean_change:+,.1f} (z = {verdict.z_score:+.2f}, limit {volume.sensitivity}, "
        f"{volume.direction})"
    )
    return _result(VOLUME_CHECK, not verdict.anomalous, description, metadata)


def _drift_table(drifts: Sequence[Drift], limit_name: str) -> dg.TableMetadataValue:
    with_z = any(d.z_score is not None for d in drifts)
    columns = [
        dg.TableColumn("column", "string"),
        dg.TableColumn("latest", "float"),
        dg.TableColumn("historical_mean", "float"),
        dg.TableColumn(limit_name, "float"),
        *([dg.TableColumn("z_score", "float")] if with_z else []),
        dg.TableColumn("history_size", "int"),
        dg.TableColumn("drifted", "bool"),
    ]
    records = [
        dg.TableRecord(
            {
                "column": d.column,
                "latest": round(d.latest, 6),
                "historical_mean": round(d.historical_mean, 6),
                limit_name: round(d.limit, 6),
                **({"z_score": round(d.z_score, 3) if d.z_score is not None else 0.0} if with_z else {}),
                "history_size": d.history_size,
                "drifted": d.drifted,
            }
        )
        for d in drifts
    ]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def _column_drifts(
    item: CatalogEntity,
    history: Sequence[dg.AssetMaterialization],
    prefix: str,
    columns: Sequence[str],
    judge: Callable[[str, float, list[float]], Drift],
) -> tuple[list[Drift], list[str]]:
    """Drifts of the columns with enough history, and the columns left unjudged."""
    min_history = item.entity.anomalies.volume.min_history
    drifts, unjudged = [], []
    for column in columns:
        latest, earlier = metadata_series(history, prefix + column)
        if latest is None or len(earlier) < min_history:
            unjudged.append(column)
        else:
            drifts.append(judge(column, latest, earlier))
    return drifts, unjudged


def _drift_result(
    name: str,
    what: str,
    drifts: list[Drift],
    unjudged: list[str],
    limit_name: str,
    extra: Mapping[str, object],
) -> dg.AssetCheckResult:
    drifted = [d.column for d in drifts if d.drifted]
    metadata: dict[str, object] = {
        **extra,
        "columns_judged": len(drifts),
        "columns_drifted": len(drifted),
        "columns_without_enough_history": ", ".join(unjudged) or "-",
        "drift": _drift_table(drifts, limit_name),
    }
    if not drifts and not unjudged:
        return _result(name, True, "No column to judge.", metadata)
    if not drifts:
        return _result(name, True, f"No column has enough history yet: {what.lower()} not judged.", metadata)
    if drifted:
        return _result(name, False, f"{what} drifted in: {', '.join(drifted)}.", metadata)
    return _result(name, True, f"{what} within limits in {len(drifts)} column(s).", metadata)


def _null_rate_result(item: CatalogEntity, history: Sequence[dg.AssetMaterialization]) -> dg.AssetCheckResult:
    max_increase = item.entity.anomalies.null_rate_max_increase
    drifts, unjudged = _column_drifts(
        item,
        history,
        NULL_RATE_PREFIX,
        list(item.entity.columns),
        lambda column, latest, earlier: null_rate_drift(column, latest, earlier, max_increase=max_increase),
    )
    return _drift_result(
        NULL_RATE_CHECK,
        "Null rate",
        drifts,
        unjudged,
        "max_null_rate",
        {"null_rate_max_increase": max_increase},
    )


def _mean_shift_result(
    item: CatalogEntity, history: Sequence[dg.AssetMaterialization]
) -> dg.AssetCheckResult:
    sensitivity = item.entity.anomalies.mean_shift_sensitivity
    drifts, unjudged = _column_drifts(
        item,
        history,
        MEAN_PREFIX,
        measure_columns(item.entity),
        lambda column, latest, earlier: mean_shift(column, latest, earlier, sensitivity=sensitivity),
    )
    return _drift_result(
        MEAN_SHIFT_CHECK, "Mean", drifts, unjudged, "allowed_shift", {"mean_shift_sensitivity": sensitivity}
    )
