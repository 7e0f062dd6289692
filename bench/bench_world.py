"""The benchmark's demo world at 100k, 1M or 10M order rows: files, a PostgreSQL table and REST pages.

`demo_shop` writes the whole e-commerce world row by row through numpy and its writers at about 10k orders
per 0.1 s, with a SQLite database and a products API that re-reads and sorts its file on every request: fine
for the demo, too slow to serve 10M rows or 10k pages. The benchmark therefore generates one entity, the
orders, with the same fast pyarrow generator as the memory benches (`file_extract_memory._chunk`: 10 mixed
columns, text with commas and quotes, decimals as text, timestamps, booleans), which is also the data of
the reference figures in `shared/design/ENVIRONMENT_NOTES.md`:

- `csv/orders_NN.csv`: at most 1M rows per file (a 10M world has ten files); `csv_small/orders_00.csv` is
  the first 100k rows, for the runs capped at 100k rows (dlt's default dict rows);
- `parquet/orders_NN.parquet` and `jsonl/orders_NN.jsonl`: the same rows (written by DuckDB from the CSV);
- a PostgreSQL table `bench_orders` (10 columns, `db_extract_memory.LOAD_SQL`) in a throwaway cluster of
  `tests/fixtures/postgres_server.py`, with an index on `(updated_at, order_id)` for incremental reads;
- REST pages: `serve_orders` serves the CSV rows as JSON pages of 1,000 rows on loopback from a separate
  process, cursor-paginated (`{"data": [...], "next_cursor": "N" | null}`).

Files are kept under `<dir>/<rows>/` with a manifest, so a second run of the benchmark reuses them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench"), str(REPO_ROOT / "tests")]

ROWS_PER_FILE = 1_000_000
ROWS_PER_CHUNK = 200_000
SMALL_ROWS = 100_000
"""The cap for the runs too slow to take more (dlt's default dict rows)."""
PAGE_ROWS = 1_000
SCALES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
TABLE = "bench_orders"
SMALL_TABLE = "bench_orders_small"
INDEX_SQL = "CREATE INDEX ON {table} (updated_at, order_id)"
UPDATED_SHARE = 10
UPDATE_SQL = f"""
UPDATE {TABLE}
SET updated_at = timestamp '2030-01-01' + order_id * interval '1 millisecond'
WHERE order_id % {UPDATED_SHARE} = 0
"""
"""Changes 10% of the rows: the incremental runs must land exactly those."""


def generate_files(rows: int, root: Path) -> Path:
    """CSV, Parquet and JSONL files of `rows` orders under `root/<rows>/`, unless already there."""
    import duckdb
    import numpy as np
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from file_extract_memory import _chunk

    world = root / str(rows)
    manifest = world / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["rows"] == rows:
        return world
    started = time.perf_counter()
    rng = np.random.default_rng(7)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # DuckDB 2.0 refuses it in connect()'s config
    for kind in ("csv", "csv_small", "parquet", "jsonl"):
        (world / kind).mkdir(parents=True, exist_ok=True)
        for stale in (world / kind).iterdir():
            stale.unlink()
    for index, first in enumerate(range(0, rows, ROWS_PER_FILE)):
        count = min(ROWS_PER_FILE, rows - first)
        csv_path = world / "csv" / f"orders_{index:02d}.csv"
        schema = _chunk(rng, 0, 1).schema
        with (
            pacsv.CSVWriter(csv_path, schema) as csv_writer,
            pq.ParquetWriter(world / "parquet" / f"orders_{index:02d}.parquet", schema) as parquet_writer,
        ):
            for start in range(first, first + count, ROWS_PER_CHUNK):
                chunk = _chunk(rng, start, min(ROWS_PER_CHUNK, first + count - start))
                csv_writer.write_table(chunk)
                parquet_writer.write_table(chunk)
        source = str(world / "parquet" / f"orders_{index:02d}.parquet")
        target = str(world / "jsonl" / f"orders_{index:02d}.jsonl")
        con.execute(f"COPY (SELECT * FROM read_parquet('{source}')) TO '{target}' (FORMAT json)")
    first_csv = str(world / "csv" / "orders_00.csv")
    small = str(world / "csv_small" / "orders_00.csv")
    con.execute(
        f"COPY (SELECT * FROM read_csv('{first_csv}', all_varchar = true) LIMIT {SMALL_ROWS}) TO '{small}' "
        "(FORMAT csv, HEADER)"
    )
    sizes = {
        kind: sum(p.stat().st_size for p in (world / kind).iterdir()) for kind in ("csv", "parquet", "jsonl")
    }
    manifest.write_text(json.dumps({"rows": rows, "bytes": sizes}))
    print(f"generated {rows:,} rows ({sizes}) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return world


def file_sizes(world: Path) -> dict[str, int]:
    return json.loads((world / "manifest.json").read_text())["bytes"]


@contextlib.contextmanager
def postgres_world(rows: int) -> Iterator[tuple[object, str]]:
    """A throwaway cluster with `bench_orders` (`rows` rows) and `bench_orders_small` (100k rows) in database
    `bench`; yields (cluster, SQLAlchemy URL). The table is re-created by `reset_table` between runs."""
    from fixtures.postgres_server import PostgresCluster

    with PostgresCluster() as cluster:
        cluster.create_database("bench")
        reset_table(cluster, rows)
        started = time.perf_counter()
        load_table(cluster, SMALL_TABLE, min(rows, SMALL_ROWS))
        print(f"loaded {SMALL_TABLE} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        yield cluster, cluster.url("bench")


def load_table(cluster: object, table: str, rows: int) -> None:
    from db_extract_memory import LOAD_SQL
    from db_extract_memory import TABLE as LOAD_TABLE

    sql = LOAD_SQL.format(rows=rows).replace(f"CREATE TABLE {LOAD_TABLE}", f"CREATE TABLE {table}")
    cluster.execute("bench", f"DROP TABLE IF EXISTS {table}")
    cluster.execute("bench", sql)
    cluster.execute("bench", INDEX_SQL.format(table=table))
    cluster.execute("bench", f"VACUUM ANALYZE {table}")


def reset_table(cluster: object, rows: int) -> None:
    """`bench_orders` as generated (before any update), so every tool's incremental run starts alike."""
    started = time.perf_counter()
    load_table(cluster, TABLE, rows)
    print(f"loaded {TABLE} ({rows:,} rows) in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def update_share(cluster: object) -> None:
    cluster.execute("bench", UPDATE_SQL)
    cluster.execute("bench", f"VACUUM ANALYZE {TABLE}")


# ------------------------------------------------------------------------------------------- REST server


class _PagesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    pages: ClassVar[list[bytes]] = []

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        cursor = parse_qs(url.query).get("cursor", ["0"])[-1]
        if url.path != "/v1/orders" or not cursor.isdigit() or int(cursor) >= max(len(self.pages), 1):
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.pages[int(cursor)] if self.pages else b'{"data":[],"next_cursor":null}'
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _render_pages(csv_files: list[Path], rows: int) -> list[bytes]:
    """The first `rows` rows of the CSV files as JSON pages (rendered once, before serving)."""
    import pyarrow.csv as pacsv

    records: list[dict] = []
    for path in csv_files:
        table = pacsv.read_csv(path)
        records += table.slice(0, rows - len(records)).to_pylist()
        if len(records) >= rows:
            break
    pages = []
    for number, start in enumerate(range(0, len(records), PAGE_ROWS)):
        more = start + PAGE_ROWS < len(records)
        page = {"data": records[start : start + PAGE_ROWS], "next_cursor": str(number + 1) if more else None}
        pages.append(json.dumps(page, default=str, separators=(",", ":")).encode())
    return pages


def serve_main(csv_dir: str, rows: int) -> None:
    """Child process: render the pages, print the URL, serve until killed."""
    _PagesHandler.pages = _render_pages(sorted(Path(csv_dir).glob("*.csv")), rows)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PagesHandler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


@contextlib.contextmanager
def serve_orders(csv_dir: Path, rows: int) -> Iterator[str]:
    """Serve the first `rows` rows of `csv_dir` as pages in a separate process; yields the base URL."""
    command = [sys.executable, __file__, "--serve", str(csv_dir), str(rows)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("the REST page server did not start")
        yield url
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve_main(sys.argv[2], int(sys.argv[3]))
