"""The summary and exit status of a whole-platform run, on real in-process Dagster runs: a failed
warn-severity check is listed and fails the run only under `--strict`; an error-severity one always fails
it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from platform_assets.run_summary import all_green, format_summary
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse


def _run(severity: dg.AssetCheckSeverity) -> dg.ExecuteInProcessResult:
    """One asset with a passing check and a failing, non-blocking check of `severity`."""

    @dg.asset
    def orders() -> None:
        return None

    @dg.asset_check(asset=orders)
    def has_rows() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    @dg.asset_check(asset=orders)
    def orphan_keys() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=severity)

    definitions = dg.Definitions(assets=[orders], asset_checks=[has_rows, orphan_keys])
    job = definitions.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        return job.execute_in_process(instance=instance, raise_on_error=False)


def test_a_failed_warning_is_listed_and_fails_the_run_only_when_strict(tmp_path: Path) -> None:
    result = _run(dg.AssetCheckSeverity.WARN)
    assert result.success
    assert all_green(result)
    assert not all_green(result, strict=True)
    summary = format_summary(result, DuckDBWarehouse(path=str(tmp_path / "w.duckdb")))
    assert "Checks: 1 passed, 0 failed, 1 warnings" in summary
    assert "  WARN  orders :: orphan_keys" in summary
    assert "(warnings do not fail the run; --strict)" in summary


def test_a_failed_error_check_fails_the_run_strict_or_not(tmp_path: Path) -> None:
    result = _run(dg.AssetCheckSeverity.ERROR)
    assert not all_green(result) and not all_green(result, strict=True)
    summary = format_summary(result, DuckDBWarehouse(path=str(tmp_path / "w.duckdb")), strict=True)
    assert "Checks: 1 passed, 1 failed, 0 warnings" in summary
    assert "  FAIL  orders :: orphan_keys (ERROR)" in summary
