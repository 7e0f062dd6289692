"""Validation of a large staged table: the platform's contract check against plain pandas, side by side.

The table (`--rows`, default 5 million, 7 columns with nulls, ranges, allowed values and a regex) is
staged once into a DuckDB warehouse file. Then each measurement runs in a fresh child process, one after
the other, and reports wall seconds and the child's own peak RSS (VmHWM):

- `platform`: `validate_staged_table` (what the blocking `schema_contract` check runs): Pandera batch by
  batch over `warehouse.stream_table`, uniqueness pushed down to the warehouse;
- `pandas`: the plain baseline: the whole table read into one DataFrame, the same Pandera schema
  validated over it at once, uniqueness with `DataFrame.duplicated`.

Both find the same violations (checked). Run: `.venv/bin/python bench/validation_memory.py [--rows N]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

CATALOG = {
    "source": "bench",
    "connection": {"kind": "files", "root": "/unused"},
    "entities": {
        "orders": {
            "file": {"format": "csv", "path": "*.csv"},
            "primary_key": ["order_id"],
            "columns": {
                "order_id": {"type": "integer"},
                "customer_id": {"type": "integer", "nullable": False, "min": 1},
                "status": {"type": "string", "allowed_values": ["placed", "paid", "shipped"]},
                "email": {"type": "string", "regex": r"[a-z0-9]+@shop\.example"},
                "amount": {"type": "double", "min": 0, "max": 10000},
                "quantity": {"type": "integer", "min": 1},
                "note": {"type": "string", "max_length": 20},
            },
        }
    },
}


def _item():
    from platform_assets.catalog.loader import CatalogEntity
    from platform_assets.catalog.model import Source

    source = Source.model_validate(CATALOG)
    return CatalogEntity(source, "orders", source.entities["orders"])


def stage(path: Path, rows: int) -> None:
    """The staged table as staging leaves it: typed columns, `_cast_errors`, lineage; 0.1% bad rows."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA staged")
    con.execute(
        f"""
        CREATE TABLE staged.bench__orders AS
        SELECT i AS order_id,
               CASE WHEN i % 1000 = 7 THEN NULL ELSE 1 + i % 50000 END AS customer_id,
               ['placed', 'paid', 'shipped'][1 + i % 3] AS status,
               CASE WHEN i % 1000 = 11 THEN 'not-an-email' ELSE 'c' || (i % 50000) || '@shop.example' END
                   AS email,
               CASE WHEN i % 1000 = 13 THEN -1.0 ELSE (i % 997) * 1.5 END::DOUBLE AS amount,
               1 + i % 5 AS quantity,
               CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || (i % 100) END AS note,
               NULL::VARCHAR AS _cast_errors,
               'bench.csv' AS _origin,
               i AS _record
        FROM range({rows}) AS r(i)
        """
    )
    con.close()


def run_platform(path: Path) -> dict[str, object]:
    from platform_assets.quality.contract_validation import validate_staged_table
    from resources.warehouses.duckdb_warehouse import DuckDBWarehouse

    report = validate_staged_table(DuckDBWarehouse(path=str(path)), _item())
    return {"rows": report.rows_checked, "violations": dict(report.counts)}


def run_pandas(path: Path) -> dict[str, object]:
    import duckdb
    import pandera.errors

    from platform_assets.quality.pandera_schemas import row_schema, to_pandas

    con = duckdb.connect(str(path), read_only=True)
    frame = to_pandas(con.sql("SELECT * FROM staged.bench__orders").to_arrow_table())
    con.close()
    counts: dict[str, int] = {}
    item = _item()
    try:
        row_schema(item.entity, "error").validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        for (column, check), count in cases.groupby(["column", "check"]).size().items():
            counts[f"{column}: {check}"] = int(count)
    duplicates = int(frame.duplicated(subset=["order_id"], keep=False).sum())
    if duplicates:
        counts["order_id: unique"] = duplicates
    return {"rows": len(frame), "violations": counts}


def child(kind: str, path: Path) -> None:
    from peak_memory import peak_rss_mb, reset_peak

    reset_peak()
    started = time.perf_counter()
    outcome = run_platform(path) if kind == "platform" else run_pandas(path)
    outcome.update(seconds=round(time.perf_counter() - started, 2), peak_rss_mb=round(peak_rss_mb(), 1))
    print(json.dumps(outcome))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--child", choices=["platform", "pandas"])
    parser.add_argument("--warehouse", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.warehouse)
        return
    with tempfile.TemporaryDirectory() as scratch:
        warehouse = Path(scratch) / "bench.duckdb"
        stage(warehouse, args.rows)
        results = {}
        for kind in ("pandas", "platform"):
            output = subprocess.run(
                [sys.executable, __file__, "--child", kind, "--warehouse", str(warehouse)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[kind] = json.loads(output.strip().splitlines()[-1])
    base, ours = results["pandas"], results["platform"]
    print(f"| validation of {args.rows:,} rows | seconds | rows/s | peak RSS MB |")
    print("|---|---|---|---|")
    for kind, result in (("plain pandas (whole table)", base), ("platform (batches + pushdown)", ours)):
        rate = int(args.rows / result["seconds"]) if result["seconds"] else 0
        print(f"| {kind} | {result['seconds']} | {rate:,} | {result['peak_rss_mb']} |")
    print(
        f"\nplatform / pandas: time x{ours['seconds'] / base['seconds']:.2f}, "
        f"peak RSS x{ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}"
    )
    print(f"violations (platform): {ours['violations']}")
    print(f"violations (pandas):   {base['violations']}")


if __name__ == "__main__":
    main()
