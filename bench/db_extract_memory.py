"""Peak memory and throughput of a full database extraction landed as Parquet, against a process that
only connects.

Starts a throwaway PostgreSQL cluster (the test fixture's `PostgresCluster`), loads a table of `--rows`
rows and 10 mixed columns server-side (`generate_series`), then runs each measurement in a fresh child
process and reads the child's own peak RSS:

- baseline: import everything, connect, describe the table, extract nothing;
- copy: `DatabaseSource.extract` on the COPY fast path, every batch written with `ParquetWriter` (what
  landing does);
- cursor: the same through the server-side cursor (`postgres_copy=False`).

Verdict: peak RSS within 300 MB of the baseline. Usage (from the repository root):

    .venv/bin/python bench/db_extract_memory.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

BUDGET_MB = 300
TABLE = "bench_orders"
LOAD_SQL = """
CREATE TABLE bench_orders AS
SELECT g::bigint AS order_id,
       (g % 100000)::integer AS customer_id,
       ((g % 100000) / 100.0)::numeric(12, 2) AS amount,
       (g % 1000) / 7.0::double precision AS weight,
       (ARRAY['placed', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 5] AS status,
       CASE WHEN g % 10 = 0 THEN NULL ELSE md5(g::text) END AS note,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS created_at,
       timestamp '2026-01-01' + g * interval '1.5 second' AS updated_at,
       date '2026-01-01' + (g % 365) AS order_date,
       g % 3 = 0 AS is_paid
FROM generate_series(1, {rows}) g
"""
MODES = ("baseline", "copy", "cursor")


def child(mode: str, url: str, parquet_path: str, batch_rows: int) -> None:
    """One measurement; prints a JSON line with rows, seconds and this process's peak RSS."""
    from peak_memory import peak_rss_mb, reset_peak

    reset_peak()
    import pyarrow.parquet as pq

    from resources.databases.config import DatabaseConnection, TableExtraction
    from resources.databases.source import DatabaseSource

    source = DatabaseSource(DatabaseConnection(url=url), postgres_copy=mode != "cursor")
    extraction = TableExtraction(table=TABLE)
    started = time.perf_counter()
    rows = 0
    if mode == "baseline":
        source.describe_table(extraction)
    else:
        result = source.extract(extraction, primary_key=[], watermark=None, batch_rows=batch_rows)
        with pq.ParquetWriter(parquet_path, result.schema, compression="zstd") as writer:
            for batch in result:
                writer.write_batch(batch)
        rows = result.rows
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak_mb}))


def measure(mode: str, url: str, parquet_path: Path, batch_rows: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, "--url", url, "--parquet", str(parquet_path)]
    completed = subprocess.run(
        [*command, "--batch-rows", str(batch_rows)], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.parquet, args.batch_rows)
        return

    from fixtures.postgres_server import PostgresCluster

    with PostgresCluster() as cluster, tempfile.TemporaryDirectory() as scratch:
        database = cluster.create_database("bench")
        started = time.perf_counter()
        cluster.execute(database, LOAD_SQL.format(rows=int(args.rows)))
        cluster.execute(database, f"VACUUM ANALYZE {TABLE}")
        print(f"loaded {args.rows:,} rows in {time.perf_counter() - started:.1f} s\n", file=sys.stderr)
        url = cluster.url(database)
        results = {
            mode: measure(mode, url, Path(scratch) / f"{mode}.parquet", args.batch_rows) for mode in MODES
        }

    baseline = results["baseline"]["peak_mb"]
    print(
        f"| path | rows | seconds | rows/s | peak RSS MB | delta over baseline MB | within {BUDGET_MB} MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, result in results.items():
        delta = result["peak_mb"] - baseline
        rate = f"{result['rows'] / result['seconds']:,.0f}" if result["rows"] else "-"
        verdict = "-" if mode == "baseline" else ("yes" if delta <= BUDGET_MB else "NO")
        print(
            f"| {mode} | {result['rows']:,} | {result['seconds']:.2f} | {rate} | {result['peak_mb']:.0f} "
            f"| {delta:+.0f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
