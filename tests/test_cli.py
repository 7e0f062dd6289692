"""`dataplatform demo`, the README's main command: generates, materializes everything, prints a summary
and reports success in its exit code; configuration errors are one clear line, not a traceback."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest

from platform_assets.catalog.loader import CATALOG_DIR
from platform_assets.cli import main
from platform_assets.definitions import build_definitions
from platform_assets.factories.dbt_models import DBT_PROJECT
from resources.environment import PlatformSettings
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse


def _check_count(tmp_path: Path) -> int:
    """Every asset check of the code location (schema contracts, quality warnings, anomaly and
    relationship checks, dbt tests): the demo runs them all."""
    graph = build_definitions(PlatformSettings.local(tmp_path / "count")).resolve_asset_graph()
    return len(list(graph.asset_check_keys))


def test_demo_materializes_everything_then_run_lands_only_what_is_new_and_a_warning_fails_only_strict(
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
    checks = re.search(r"Checks: (\d+) passed, 0 failed", output)
    assert checks, output
    assert int(checks.group(1)) == _check_count(tmp_path), "every check of the graph ran and passed"
    assert int(checks.group(1)) >= 6 * 2 + 42, "schema_contract and quality_warnings per staged entity, dbt"
    warehouse = DuckDBWarehouse(path=str(tmp_path / "data" / "warehouse.duckdb"))
    assert "quarantine" not in warehouse.tables("ops"), "the demo world's deliveries break no rule"
    assert (tmp_path / "data" / "warehouse.duckdb").exists()

    assert main(["run"]) == 0, "a second run on unchanged sources"
    again = capsys.readouterr().out
    landed = dict(re.findall(r"^  (raw/\S+) +([\d,]+) rows", again, flags=re.MULTILINE))
    assert len(landed) == 6, again
    # shop_db's tables re-read their 300 s lookback window (rows changed within it), upserted by key.
    assert {key: rows for key, rows in landed.items() if not key.startswith("raw/shop_db/")} == dict.fromkeys(
        ["raw/shop/order_items", "raw/shop/orders", "raw/shop/web_events", "raw/shop_api/products"], "0"
    ), "the run history kept every source's state"
    tables = re.compile(r"^  ([a-z_]+\.[a-z_]+) +([\d,]+) rows$", flags=re.MULTILINE)
    assert dict(tables.findall(again)) == dict(tables.findall(output)), "a rerun changes no table"
    assert dict(tables.findall(again))["staged.shop__orders"] == "500"

    # The replay command re-stages one entity in full and says what its quarantine released (the release
    # itself is pinned in test_quarantine_reconciles); an entity the catalog lacks is a usage error.
    assert main(["replay", "shop.orders"]) == 0
    assert "staged/shop/orders: 0 quarantined row(s) released, 0 superseded; 0 still held back" in (
        capsys.readouterr().out
    )
    assert main(["replay", "shop.nope"]) == 2
    assert "no staged entity 'shop.nope' in the catalog" in capsys.readouterr().err

    # A web event whose `url` breaks its `severity: warn` rule (max_length 2048), delivered in a new file: the
    # quality_warnings check fails at WARN severity, on this run and on every later one while the row is
    # staged; it fails the run only with --strict.
    events_dir = tmp_path / "data" / "sources" / "files" / "shop" / "web_events"
    first = gzip.decompress(sorted(events_dir.glob("*.jsonl.gz"))[0].read_bytes()).decode().splitlines()[0]
    warned = {**json.loads(first), "event_id": "ev-999999999", "url": "/" + "x" * 3000}
    (events_dir / "zz_long_url.jsonl.gz").write_bytes(gzip.compress(json.dumps(warned).encode() + b"\n"))
    assert main(["run", "--select", "shop.web_events"]) == 0, "a warning does not fail the run"
    output = capsys.readouterr().out
    assert "SUCCESS" in output and re.search(r"Checks: \d+ passed, 0 failed, 1 warnings", output), output
    assert "  WARN  staged/shop/web_events :: quality_warnings" in output
    assert main(["run", "--strict", "--select", "shop.web_events"]) == 1, (
        "--strict: the warning fails the run"
    )
    assert "  WARN  staged/shop/web_events :: quality_warnings" in capsys.readouterr().out

    # A selective run: one entity (raw + staged, with its checks) and one dbt model by dbt's syntax.
    assert main(["run", "--select", "shop.web_events", "--select", "dbt:stg_shop__orders"]) == 0
    selected = capsys.readouterr().out
    assert "  WARN  staged/shop/web_events :: quality_warnings" in selected, "its checks ran with it"
    landed = re.findall(r"^  (raw/\S+) +[\d,]+ rows", selected, flags=re.MULTILINE)
    assert landed == ["raw/shop/web_events"], selected
    assert "START sql view model analytics.stg_shop__orders" in selected, selected
    assert "model analytics.fct_daily_revenue" not in selected, "dbt built the selected model only"
    assert main(["run", "--select", "shop.nope"]) == 2
    assert "--select 'shop.nope' selects no asset. Sources and entities: shop.order_items" in (
        capsys.readouterr().err
    )


def test_demo_fails_with_exit_code_when_a_blocking_check_fails(
    tmp_path: Path, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["generate", "--scale", "0.05"]) == 0
    orders = sorted((data_dir / "sources" / "files" / "shop" / "orders").glob("*.csv"))[0]
    header, first, *rest = orders.read_text().splitlines(keepends=True)
    orders.write_text("".join([header, first, first, *rest]))  # an order delivered twice
    assert main(["run"]) == 1
    output = capsys.readouterr().out
    assert "FAILURE" in output
    assert "FAIL  staged/shop/orders :: schema_contract (ERROR)" in output
    assert "Failed steps: staged__shop__orders_schema_contract" in output
    not_rebuilt = re.search(
        r"^Not rebuilt \(a step or a blocking check upstream failed\): (.*)$", output, re.M
    )
    assert not_rebuilt, output
    assert {
        "dim_customers",
        "fct_customer_lifetime_value",
        "fct_daily_revenue",
        "fct_orders",
        "fct_web_funnel",
        "int_customer_orders",
        "int_order_items_summary",
        "int_order_payments",
        "stg_shop__order_items",
        "stg_shop__orders",
        "stg_shop__web_events",
        "stg_shop_api__products",
        "stg_shop_db__customers",
        "stg_shop_db__payments",
    } <= set(not_rebuilt.group(1).split(", ")), "the blocking check stops the whole dbt step"


def test_run_reports_a_broken_catalog_before_dbt_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalog is checked before `dbt parse` (seconds to half a minute) is started: the error comes at
    once, and the dbt manifest is neither built nor rewritten."""
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, catalog)
    shop = catalog / "shop.yaml"
    shop.write_text(shop.read_text().replace("primary_key: [order_id]", "primary_kee: [order_id]", 1))
    monkeypatch.setenv("PLATFORM_CATALOG_DIR", str(catalog))
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHOP_API_URL", "http://127.0.0.1:9")  # the demo API service is not needed
    manifest = DBT_PROJECT.manifest_path
    before = manifest.stat().st_mtime_ns if manifest.exists() else None
    assert main(["run"]) == 2
    captured = capsys.readouterr()
    assert f"{shop}:" in captured.err and "entities.orders.primary_kee: Extra inputs" in captured.err
    assert "dbt manifest" not in captured.out
    assert (manifest.stat().st_mtime_ns if manifest.exists() else None) == before, "dbt did not parse"


def test_unknown_environment_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLATFORM_ENV", "prod-eu")
    assert main(["generate"]) == 2
    assert capsys.readouterr().err.startswith("dataplatform: error: PLATFORM_ENV='prod-eu' is not a known")


def test_the_demo_joins_the_cli_through_entry_points_and_the_platform_names_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`generate`, `demo` and `serve-api` come from the demo shop's entry point, not from an import in the
    platform (the import contracts forbid that); `prepare` and `run` are the platform's own."""
    from importlib.metadata import entry_points

    from platform_assets.cli import COMMANDS_GROUP, RUN_SERVICES_GROUP

    assert {e.value for e in entry_points(group=COMMANDS_GROUP)} == {"demo_shop.commands:register"}
    assert {e.value for e in entry_points(group=RUN_SERVICES_GROUP)} == {"demo_shop.commands:demo_api"}
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for command in ("prepare", "run", "generate", "demo", "serve-api"):
        assert command in listed
    source = (Path(__file__).parents[1] / "platform_assets" / "cli.py").read_text()
    assert "demo_shop" not in source
