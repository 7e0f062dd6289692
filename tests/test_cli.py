"""`dataplatform demo`, the README's main command: generates, materializes everything, prints a summary
and reports success in its exit code; configuration errors are one clear line, not a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from platform_assets.cli import main


def test_demo_materializes_everything_then_run_lands_only_what_is_new(
    tmp_path: Path, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["demo", "--seed", "5", "--scale", "0.05"]) == 0
    output = capsys.readouterr().out
    assert "SUCCESS" in output
    assert "staged.shop__orders" in output and "500 rows" in output
    assert "analytics.fct_daily_revenue" in output
    assert re.search(r"raw/shop_api/products +\d+ rows  from http://127\.0\.0\.1:\d+/v1/products", output)
    assert re.search(r"raw/shop_db/customers +\d+ rows  from sqlite:///.*shop\.sqlite customers", output)
    assert "Checks: 48 passed, 0 failed" in output, "a schema contract per staged entity, 42 dbt tests"
    assert (tmp_path / "data" / "warehouse.duckdb").exists()

    assert main(["run"]) == 0, "a second run on unchanged sources"
    again = capsys.readouterr().out
    landed = dict(re.findall(r"^  (raw/\S+) +([\d,]+) rows", again, flags=re.MULTILINE))
    assert len(landed) == 6 and set(landed.values()) == {"0"}, "the run history kept every source's state"
    assert "staged.shop__orders" in again and "500 rows" in again


def test_demo_fails_with_exit_code_when_a_blocking_check_fails(
    tmp_path: Path, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["generate", "--scale", "0.05"]) == 0
    orders = sorted((data_dir / "sources" / "files" / "shop" / "orders").glob("*.csv"))[0]
    orders.write_text(orders.read_text().replace(",EUR,", ",EURO,", 1))
    assert main(["run"]) == 1
    output = capsys.readouterr().out
    assert "FAILURE" in output
    assert "FAIL  staged/shop/orders :: schema_contract (ERROR)" in output
    assert "Failed steps: staged__shop__orders_schema_contract" in output
    assert (
        "Not rebuilt (a step or a blocking check upstream failed): dim_customers, "
        "fct_customer_lifetime_value, fct_daily_revenue, fct_orders, fct_web_funnel, int_customer_orders, "
        "int_order_items_summary, int_order_payments, stg_shop__order_items, stg_shop__orders, "
        "stg_shop__web_events, stg_shop_api__products, stg_shop_db__customers, stg_shop_db__payments"
        in output
    ), "the blocking check stops the whole dbt step"


def test_unknown_environment_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLATFORM_ENV", "prod-eu")
    assert main(["generate"]) == 2
    assert capsys.readouterr().err.startswith("dataplatform: error: PLATFORM_ENV='prod-eu' is not a known")
