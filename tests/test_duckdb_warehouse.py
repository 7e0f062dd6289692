"""The DuckDB warehouse: atomic table replacement, and patience with another process's write lock
(dbt runs as a subprocess on the same file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from resources.duckdb_warehouse import DuckDBWarehouse, qualified_name, quote_identifier

HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process with the database open for writing, as a running dbt build would have it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_identifiers_are_quoted_so_names_never_become_sql() -> None:
    assert quote_identifier('a"; DROP TABLE x; --') == '"a""; DROP TABLE x; --"'
    assert qualified_name("staged", "shop__orders") == '"staged"."shop__orders"'


def test_replace_table_swaps_in_the_new_contents_or_keeps_the_old(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    assert warehouse.replace_table("staged", "t", "SELECT * FROM range(3) AS r(id)") == 3
    assert warehouse.replace_table("staged", "t", "SELECT * FROM range(5) AS r(id)") == 5
    with pytest.raises(duckdb.Error):
        warehouse.replace_table(
            "staged", "t", "SELECT id / 0 AS id, error('load failed') FROM range(9) AS r(id)"
        )
    assert warehouse.query('SELECT count(*) FROM "staged"."t"') == [(5,)]


def test_waits_for_another_process_to_release_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold_lock(path, seconds=1.5)
    assert DuckDBWarehouse(path=str(path), lock_timeout_seconds=60).query("SELECT 42") == [(42,)]
    holder.wait(timeout=30)


def test_gives_up_after_the_lock_timeout_with_duckdbs_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = _hold_lock(path, seconds=10)
    try:
        with pytest.raises(duckdb.IOException, match="lock"):
            DuckDBWarehouse(path=str(path), lock_timeout_seconds=0.5).query("SELECT 1")
    finally:
        holder.kill()
        holder.wait(timeout=30)
