"""`dataplatform reset` (the `reset_extraction` job): an incremental table's watermark moved back lands the
range again once, staged without a duplicate; the reset is a materialization of the raw asset with who,
why and the state before, and `--undo` restores that state. `dataplatform backfill` re-reads a bounded
range, upserted, and leaves the watermark as it was."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.cli import main
from platform_assets.keys import raw_key
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse

CATALOG = """\
source: tiny_db
connection: {{kind: database, url: "sqlite:///{db}"}}
entities:
  customers:
    table:
      table: customers
      incremental: {{mode: timestamp, cursor_column: updated_at, lookback_seconds: 0}}
    primary_key: [customer_id]
    columns:
      customer_id: {{type: integer}}
      email: {{type: string}}
      updated_at: {{type: string}}
"""


def _landed(output: str) -> int:
    found = re.search(r"^  raw/tiny_db/customers +([\d,]+) rows", output, flags=re.MULTILINE)
    assert found, output
    return int(found.group(1).replace(",", ""))


def test_a_reset_or_a_backfill_lands_its_range_once_and_undo_restores_the_watermark(
    tmp_path: Path, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "tiny.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, email TEXT, updated_at TEXT)"
        )
        connection.executemany(
            "INSERT INTO customers VALUES (?, ?, ?)",
            [(i, f"c{i}@example.com", f"2026-01-{i:02d} 12:00:00") for i in range(1, 11)],
        )
    connection.close()
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "tiny_db.yaml").write_text(CATALOG.format(db=db))
    monkeypatch.setenv("PLATFORM_CATALOG_DIR", str(tmp_path / "catalog"))
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main(["run", "--select", "tiny_db"]) == 0
    assert _landed(capsys.readouterr().out) == 10
    assert main(["run", "--select", "tiny_db"]) == 0
    assert _landed(capsys.readouterr().out) == 0, "nothing new"

    assert (
        main(
            [
                "reset",
                "tiny_db.customers",
                "--since",
                "2026-01-07 12:00:00",
                "--by",
                "on-call",
                "--reason",
                "rows 7-10 fixed in place",
            ]
        )
        == 0
    )
    reset_output = capsys.readouterr().out
    assert "-> {'cursor_column': 'updated_at', 'cursor': '2026-01-07 11:59:59.999999'}" in reset_output

    assert main(["run", "--select", "tiny_db"]) == 0
    assert _landed(capsys.readouterr().out) == 4, "rows 7..10 again, the row at --since included"
    warehouse = DuckDBWarehouse(path=str(tmp_path / "data" / "warehouse.duckdb"))
    ((rows, keys),) = warehouse.query(
        "SELECT count(*), count(DISTINCT customer_id) FROM staged.tiny_db__customers"
    )
    assert (rows, keys) == (10, 10), "re-extracted rows are upserted, never duplicated"

    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "data" / "dagster_home")) as instance:
        history = instance.fetch_materializations(raw_key("tiny_db", "customers"), limit=10).records
    reset = next(r.asset_materialization for r in history if "reset/by" in r.asset_materialization.metadata)
    assert reset.metadata["reset/by"].value == "on-call"
    assert reset.metadata["reset/reason"].value == "rows 7-10 fixed in place"
    assert reset.metadata["reset/previous_state"].value["watermark"]["cursor"] == "2026-01-10 12:00:00"

    # Undo restores the state from before the latest reset, and only while no run landed since.
    assert main(["reset", "tiny_db.customers", "--undo", "--by", "on-call", "--reason", "oops"]) == 2
    assert "is no reset (a run has landed since" in capsys.readouterr().err
    assert main(["reset", "tiny_db", "--by", "on-call", "--reason", "re-read everything"]) == 0
    assert "-> None" in capsys.readouterr().out
    assert main(["reset", "tiny_db.customers", "--undo", "--by", "on-call", "--reason", "not needed"]) == 0
    assert main(["run", "--select", "tiny_db"]) == 0
    assert _landed(capsys.readouterr().out) == 0, "the undo put the watermark back"

    assert main(["reset", "tiny_db.nope", "--by", "x", "--reason", "y"]) == 2
    assert "'tiny_db.nope' is no entity or source with incremental entities" in capsys.readouterr().err

    # A backfill re-reads a bounded range (rows 3..5 fixed in place, their cursor unchanged) and leaves the
    # watermark where it was: row 6, fixed too but outside the range, is not read; the next run lands nothing.
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE customers SET email = 'fixed' || customer_id WHERE customer_id BETWEEN 3 AND 6"
        )
    connection.close()
    assert main(["backfill", "tiny_db.customers", "--since", "2026-01-05", "--until", "2026-01-03"]) == 2
    assert "since '2026-01-05' is after until '2026-01-03': an empty range" in capsys.readouterr().err
    assert (
        main(["backfill", "tiny_db", "--since", "2026-01-03 12:00:00", "--until", "2026-01-05 12:00:00"]) == 0
    )
    assert _landed(capsys.readouterr().out) == 3
    fixed = warehouse.query(
        "SELECT customer_id FROM staged.tiny_db__customers WHERE email LIKE 'fixed%' ORDER BY customer_id"
    )
    assert [row[0] for row in fixed] == [3, 4, 5]
    ((rows, keys),) = warehouse.query(
        "SELECT count(*), count(DISTINCT customer_id) FROM staged.tiny_db__customers"
    )
    assert (rows, keys) == (10, 10)
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "data" / "dagster_home")) as instance:
        latest = instance.get_latest_materialization_event(raw_key("tiny_db", "customers"))
    assert latest is not None and latest.asset_materialization is not None
    backfill = latest.asset_materialization.metadata
    assert (backfill["backfill/since"].value, backfill["backfill/until"].value) == (
        "2026-01-03 12:00:00",
        "2026-01-05 12:00:00",
    )
    assert backfill["watermark_after"].value == backfill["watermark_before"].value
    assert backfill["watermark_after"].value["cursor"] == "2026-01-10 12:00:00"
    assert main(["run", "--select", "tiny_db"]) == 0
    assert _landed(capsys.readouterr().out) == 0, "the backfill left the watermark where it was"
