"""A short, human summary of a run of the whole platform: tables, row counts, check results."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from platform_assets.keys import RAW_LAYER
from resources.warehouses.base import Warehouse

REPORTED_SCHEMAS = ("staged", "analytics")
WARN = dg.AssetCheckSeverity.WARN.value


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    severity: str


def check_outcomes(result: dg.ExecuteInProcessResult) -> list[CheckOutcome]:
    outcomes = [
        CheckOutcome(
            asset=evaluation.asset_key.to_user_string(),
            check=evaluation.check_name,
            passed=evaluation.passed,
            severity=evaluation.severity.value,
        )
        for evaluation in result.get_asset_check_evaluations()
    ]
    return sorted(outcomes, key=lambda o: (o.asset, o.check))


def all_green(result: dg.ExecuteInProcessResult, *, strict: bool = False) -> bool:
    """What `dataplatform run` reports in its exit code: the run succeeded and no error-severity check
    failed. A failed warn-severity check (an orphan foreign key, a `severity: warn` rule) is reported, not
    a failure: otherwise a source with a known, accepted warning would fail every run. `strict` counts
    warnings as failures, for a deployment that wants them fixed before it goes green."""
    failing = (o for o in check_outcomes(result) if not o.passed)
    return result.success and not any(strict or o.severity != WARN for o in failing)


def table_row_counts(warehouse: Warehouse) -> list[tuple[str, str, int]]:
    """(schema, table, rows) of every table and view the platform owns in the warehouse."""
    counts = []
    for schema in sorted(REPORTED_SCHEMAS):
        for table in warehouse.tables(schema):
            ((rows,),) = warehouse.query(f"SELECT count(*) FROM {warehouse.table_ref(schema, table)}")
            counts.append((schema, table, int(rows)))
    return counts


def landed_rows(result: dg.ExecuteInProcessResult) -> list[tuple[str, int | None, int, str]]:
    """(raw asset, rows landed by this run, bytes landed, where from) for every raw asset the run
    materialized: an incremental source that had nothing new lands 0. Rows are None for delivered files
    landed as their bytes: staging counts their records as it parses them."""
    landed = []
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[0] != RAW_LAYER:
            continue
        metadata = event.materialization.metadata
        rows = metadata.get("dagster/row_count")
        landed.append(
            (
                event.asset_key.to_user_string(),
                None if rows is None else int(rows.value),
                int(metadata["bytes"].value),
                str(metadata["source_location"].value),
            )
        )
    return sorted(landed)


def format_summary(result: dg.ExecuteInProcessResult, warehouse: Warehouse, *, strict: bool = False) -> str:
    lines = [f"Run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}", "", "Landed this run"]
    for asset, rows, size, location in landed_rows(result):
        landed = f"{size:>12,} bytes (rows counted when staged)" if rows is None else f"{rows:>12,} rows"
        lines.append(f"  {asset:<44} {landed}  from {location}")
    lines += ["", "Tables"]
    for schema, table, rows in table_row_counts(warehouse):
        lines.append(f"  {schema + '.' + table:<44} {rows:>12,} rows")
    outcomes = check_outcomes(result)
    failed = [o for o in outcomes if not o.passed and o.severity != WARN]
    warned = [o for o in outcomes if not o.passed and o.severity == WARN]
    lines += [
        "",
        f"Checks: {len(outcomes) - len(failed) - len(warned)} passed, {len(failed)} failed, "
        f"{len(warned)} warnings",
    ]
    lines += [f"  FAIL  {o.asset} :: {o.check} ({o.severity})" for o in failed]
    lines += [f"  WARN  {o.asset} :: {o.check}" for o in warned]
    if warned:
        lines.append(
            f"  (warnings {'fail the run: --strict' if strict else 'do not fail the run; --strict'})"
        )
    failed_steps = sorted(result.get_failed_step_keys())
    if failed_steps:
        lines += ["", "Failed steps: " + ", ".join(failed_steps)]
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    not_built = sorted(
        key.to_user_string() for key in result.job_def.asset_layer.selected_asset_keys - materialized
    )
    if not_built:
        lines += ["", "Not rebuilt (a step or a blocking check upstream failed): " + ", ".join(not_built)]
    lines += ["", f"Warehouse ({warehouse.kind}): {warehouse.describe()}"]
    return "\n".join(lines)
