"""The dbt project builds on a real PostgreSQL server (`--target postgres`) and gives the same marts as on
DuckDB from the same staged data, also after an incremental re-run of fct_orders.

The staged tables come from the DuckDB platform's ingestion, copied into a fresh Postgres database with
the platform's own loader; dbt runs as a subprocess the way an operator would, configured through the
PLATFORM_PG_* environment variables of profiles.yml, with its own target path in tmp so the project's
target/ is left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import LocalPlatform

from resources.warehouses.postgres_warehouse import PostgresWarehouse

pytestmark = pytest.mark.slow  # ingestion plus four dbt builds: about a minute

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"
COPY_BATCH_ROWS = 10_000

MART_KEYS = {
    "fct_orders": "order_id",
    "dim_customers": "customer_id",
    "fct_customer_lifetime_value": "customer_id",
    "fct_daily_revenue": "order_date",
    "fct_web_funnel": "session_date",
}
TOLERANCE = 0.0101
"""Amounts are rounded to the cent on both engines, Postgres through numeric: a value exactly between
two cents may land on the other one."""


def _dbt_build_command(target: str, tmp_path: Path, duckdb_path: Path) -> list[str]:
    command = [
        str(DBT), "build", "--target", target, "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(tmp_path / f"dbt-target-{target}"),
        "--log-path", str(tmp_path / f"dbt-logs-{target}"), "--no-use-colors",
    ]  # fmt: skip
    if target == "duckdb":
        command += ["--vars", json.dumps({"duckdb_path": str(duckdb_path)})]
    return command


def _dbt_builds(tmp_path: Path, env: dict[str, str], duckdb_path: Path) -> None:
    """`dbt build` on both targets at once (they share nothing but the project directory)."""
    runs = {
        target: subprocess.Popen(
            _dbt_build_command(target, tmp_path, duckdb_path),
            cwd=DBT_PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for target in ("duckdb", "postgres")
    }
    for target, run in runs.items():
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f"dbt build --target {target} failed:\n{output[-6000:]}"
        assert "ERROR=0" in output and "PASS=" in output, output[-2000:]


def _postgres_env(url: str) -> dict[str, str]:
    parsed = sa.make_url(url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PLATFORM_PG_")}
    env.update(
        PLATFORM_PG_HOST=str(parsed.host),
        PLATFORM_PG_PORT=str(parsed.port),
        PLATFORM_PG_USER=str(parsed.username),
        PLATFORM_PG_PASSWORD=str(parsed.password or ""),
        PLATFORM_PG_DATABASE=str(parsed.database),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    env.pop("DBT_TARGET", None)
    return env


def _normalized(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Engine-neutral values, rows in key order: numbers as floats, dates and times as pandas timestamps
    in microseconds. Postgres sums bigints into an unconstrained numeric, which its reader hands over as
    text: `_assert_marts_agree` converts those after looking at the DuckDB column's type."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values.dtype):
            continue
        if pd.api.types.is_numeric_dtype(values.dtype):
            frame[column] = values.astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(values.dtype):
            frame[column] = values.astype("datetime64[us]")
        elif isinstance(values.dropna().iloc[0] if values.notna().any() else None, dt.date):
            frame[column] = pd.to_datetime(values).astype("datetime64[us]")
    return frame.sort_values(key).reset_index(drop=True)


def _duckdb_mart(platform: LocalPlatform, name: str) -> pd.DataFrame:
    with platform.warehouse.connection() as con:
        frame = con.sql(f"SELECT * FROM analytics.{name}").df()
    return _normalized(frame, MART_KEYS[name])


def _postgres_mart(postgres: PostgresWarehouse, name: str) -> pd.DataFrame:
    frame = postgres.read_arrow(f"SELECT * FROM analytics.{name}").to_pandas()
    return _normalized(frame, MART_KEYS[name])


def _assert_marts_agree(platform: LocalPlatform, postgres: PostgresWarehouse) -> None:
    for name, key in MART_KEYS.items():
        expected, actual = _duckdb_mart(platform, name), _postgres_mart(postgres, name)
        assert list(actual.columns) == list(expected.columns), name
        for column in expected.select_dtypes("number").columns:
            actual[column] = pd.to_numeric(actual[column]).astype("float64")
        assert len(actual) == len(expected), name
        assert actual[key].tolist() == expected[key].tolist(), f"{name}: key sets differ"
        for column in expected.select_dtypes("number").columns:
            assert actual[column].sum() == pytest.approx(
                expected[column].sum(), abs=TOLERANCE * len(expected)
            ), f"{name}.{column}"
        pd.testing.assert_frame_equal(
            actual, expected, check_dtype=False, check_exact=False, rtol=0, atol=TOLERANCE, obj=name
        )


def _copy_staged_tables(platform: LocalPlatform, postgres: PostgresWarehouse) -> list[str]:
    with platform.warehouse.connection() as con:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'staged' "
                "ORDER BY table_name"
            ).fetchall()
        ]
    for table in tables:
        batches = platform.warehouse.stream_table("staged", table, batch_rows=COPY_BATCH_ROWS)
        postgres.load("staged", table, batches, mode="replace")
    return tables


def _change_an_order(run_sql: Callable[[str], list[tuple]], table: str) -> int:
    """Moves the latest shipped order to delivered, as the shop does, so that the incremental run has a
    change inside its lookback window to pick up. Returns the order id."""
    ((order_id,),) = run_sql(f"SELECT max(order_id) FROM {table} WHERE status = 'shipped'")
    run_sql(
        f"UPDATE {table} SET status = 'delivered', "
        f"updated_at = (SELECT max(updated_at) FROM {table}) WHERE order_id = {int(order_id)}"
    )
    return int(order_id)


def test_postgres_marts_equal_the_duckdb_marts_across_incremental_runs(
    local_platform: LocalPlatform, postgres_database: str, tmp_path: Path
) -> None:
    assert local_platform.materialize_ingestion().success
    postgres = PostgresWarehouse(url=postgres_database)
    tables = _copy_staged_tables(local_platform, postgres)
    assert {"shop__orders", "shop_db__payments", "shop__web_events"} <= set(tables)

    env = _postgres_env(postgres_database)
    _dbt_builds(tmp_path, env, local_platform.settings.warehouse_path)
    _assert_marts_agree(local_platform, postgres)

    # The second run takes the incremental path of fct_orders on both engines: a changed order is
    # rebuilt, and a marker far outside the lookback window survives (a full rebuild would undo it).
    changed = _change_an_order(postgres.query, "staged.shop__orders")
    assert _change_an_order(local_platform.warehouse.query, "staged.shop__orders") == changed
    # The marker: the oldest order's status changed in the mart. A made-up order would not do: the model's
    # post-hook deletes orders that are no longer staged.
    ((oldest, status),) = postgres.query(
        "SELECT order_id, status FROM analytics.fct_orders ORDER BY source_updated_at, order_id LIMIT 1"
    )
    postgres.query("UPDATE analytics.fct_orders SET status = 'marker' WHERE order_id = %s", [oldest])

    _dbt_builds(tmp_path, env, local_platform.settings.warehouse_path)
    ((marked,),) = postgres.query("SELECT status FROM analytics.fct_orders WHERE order_id = %s", [oldest])
    assert marked == "marker", "fct_orders was rebuilt on Postgres instead of updated incrementally"
    postgres.query("UPDATE analytics.fct_orders SET status = %s WHERE order_id = %s", [status, oldest])
    ((status,),) = postgres.query("SELECT status FROM analytics.fct_orders WHERE order_id = %s", [changed])
    assert status == "delivered"
    _assert_marts_agree(local_platform, postgres)
