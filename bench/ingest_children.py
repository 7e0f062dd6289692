"""What one measured child process of `run_all.py` does: one tool loading one source into a DuckDB file.

`python bench/ingest_children.py '<json spec>'` resets this process's peak RSS (`VmHWM`) first thing,
imports what the tool needs, runs it, and prints one JSON line: rows, seconds (the load call only, imports
and set-up excluded), `peak_mb` (`VmHWM`, imports included) and, for the platform, the seconds of each
Dagster step. Tools (`spec["tool"]`):

- `platform`: a real Dagster materialization (`dg.materialize`, in-process executor) of the catalog
  entity's raw asset, its staged asset and the staged asset's blocking schema-contract check, against a
  persistent instance in `spec["instance"]` (so an incremental run in a later child sees the first run's
  state, as a run worker does) with the warehouse resources of the `local` environment (landing zone,
  `DuckDBWarehouse`, `WarehouseIOManager`);
- `duckdb_csv`: `CREATE TABLE ... AS SELECT * FROM read_csv(...)`;
- `duckdb_pg`: PostgreSQL `COPY ... TO STDOUT (FORMAT csv)` written by psycopg2 into a FIFO that DuckDB's
  `read_csv` reads (DuckDB's postgres extension cannot be installed offline); incremental: the rows past
  the table's greatest `updated_at`, then delete + insert by key;
- `pg_copy`: psycopg2's `COPY ... FROM STDIN (FORMAT csv, HEADER)` of the CSV files into a new typed
  PostgreSQL table, one transaction (scenario 5's baseline; the platform then runs with
  `spec["warehouse_kind"] = "postgres"`, the `postgres` environment's `PostgresWarehouse`);
- `dlt_csv_arrow` / `dlt_csv_dicts`: a dlt resource yielding pyarrow record batches from
  `pyarrow.csv.open_csv` (dlt's fastest path) / `csv.DictReader` dicts (dlt's default), duckdb destination;
- `dlt_sql`: dlt's `sql_table` (backend `pyarrow` or the default `sqlalchemy`), `replace`, or `merge` on
  `order_id` with `dlt.sources.incremental("updated_at")`;
- `dlt_rest`: dlt's `rest_api_source` with a cursor paginator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The platform's code: this repository, or the tree named by BENCH_PLATFORM_SRC (run_all.py --platform-src).
PLATFORM_SRC = os.environ.get("BENCH_PLATFORM_SRC") or str(Path(__file__).resolve().parent.parent)
sys.path[:0] = [PLATFORM_SRC, str(Path(__file__).resolve().parent)]

from peak_memory import reset_peak, status_mb  # noqa: E402

reset_peak()

import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

CSV_COLUMNS = {
    "order_id": {"type": "integer", "nullable": False},
    "customer_id": {"type": "string", "nullable": False},
    "amount": {"type": "double", "nullable": False, "min": 0},
    "quantity": {"type": "integer", "nullable": False, "min": 1},
    "status": {
        "type": "string",
        "nullable": False,
        "allowed_values": ["placed", "paid", "shipped", "delivered", "cancelled", "returned"],
    },
    "placed_at": {"type": "timestamp", "nullable": False},
    "country": {"type": "string", "allowed_values": ["DE", "FR", "NL", "PL"]},
    "note": {"type": "string"},
    "is_gift": {"type": "boolean"},
    "score": {"type": "double", "min": 0, "max": 1},
}
"""The contract of the CSV (and REST) orders: every row is checked against it by the blocking check."""
TABLE_COLUMNS = {
    "order_id": {"type": "integer", "nullable": False},
    "customer_id": {"type": "integer", "nullable": False},
    "amount": {"type": "double", "nullable": False, "min": 0},
    "weight": {"type": "double"},
    "status": {"type": "string", "allowed_values": ["placed", "paid", "shipped", "delivered", "cancelled"]},
    "note": {"type": "string"},
    "created_at": {"type": "timestamp"},
    "updated_at": {"type": "timestamp", "nullable": False},
    "order_date": {"type": "date"},
    "is_paid": {"type": "boolean"},
}


def entity_spec(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(connection, entity block, columns) of the catalog entity a platform child materializes."""
    source = spec["source"]
    if source == "csv":
        return (
            {"kind": "files", "root": spec["csv_dir"]},
            {"file": {"path": "*.csv", "format": "csv"}},
            CSV_COLUMNS,
        )
    if source == "rest":
        endpoint = {
            "path": "/v1/orders",
            "record_path": "data",
            "pagination": {"kind": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
        }
        return {"kind": "rest", "base_url": spec["url"]}, {"endpoint": endpoint}, CSV_COLUMNS
    table: dict[str, Any] = {"table": spec["table"]}
    if spec.get("incremental"):
        table["incremental"] = {"mode": "timestamp", "cursor_column": "updated_at", "lookback_seconds": 0}
    return {"kind": "database", "url": spec["url"]}, {"table": table}, TABLE_COLUMNS


def run_platform(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from platform_assets.catalog.loader import CatalogEntity
    from platform_assets.catalog.model import Source
    from platform_assets.factories.raw_assets import build_raw_asset
    from platform_assets.factories.staged_assets import build_contract_check, build_staged_asset
    from resources.landing.zone import LandingZone
    from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
    from resources.warehouses.io_manager import WarehouseIOManager

    connection, block, columns = entity_spec(spec)
    kind = spec.get("warehouse_kind", "duckdb")
    source = Source.model_validate(
        {
            "source": "bench",
            "connection": connection,
            "entities": {"orders": {**block, "primary_key": ["order_id"], "columns": columns}},
        }
    )
    item = CatalogEntity(source, "orders", source.entities["orders"])
    assets = [build_raw_asset(item), build_staged_asset(item, kind), build_contract_check(item)]
    warehouse = _postgres_warehouse(spec) if kind == "postgres" else DuckDBWarehouse(path=spec["warehouse"])
    resources = {
        "landing": LandingZone(root=spec["landing"]),
        "warehouse": warehouse,
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
    }
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.local_temp(tempdir=spec["instance"]) as instance:
        profiler = _profiler(spec)
        started = time.perf_counter()
        result = dg.materialize(assets, resources=resources, instance=instance, run_config=quiet)
        seconds = time.perf_counter() - started
        _stop_profiler(profiler, spec)
        if not result.success:
            raise RuntimeError("the materialization failed")
        [check] = result.get_asset_check_evaluations()
        if not check.passed:
            raise RuntimeError(f"the contract check failed: {check.metadata}")
        # A CSV delivery landed as its bytes has no raw row count: its rows are counted once staged.
        landed = [
            int(event.step_materialization_data.materialization.metadata["dagster/row_count"].value)
            for event in result.get_asset_materialization_events()
            if event.asset_key.path[0] == "raw"
            and "dagster/row_count" in event.step_materialization_data.materialization.metadata
        ]
        load_seconds = [
            float(event.step_materialization_data.materialization.metadata["load_seconds"].value)
            for event in result.get_asset_materialization_events()
            if event.asset_key.path[0] == "staged"
        ]
        stats = [s for s in instance.get_run_step_stats(result.run_id) if s.end_time and s.start_time]
        steps = {stat.step_key: round(stat.end_time - stat.start_time, 2) for stat in stats}
        windows = {stat.step_key: [stat.start_time, stat.end_time] for stat in stats}
    staged = warehouse.query(f"SELECT count(*) FROM {warehouse.table_ref('staged', 'bench__orders')}")[0][0]
    return {
        "rows": landed[0] if landed else staged,
        "staged_rows": staged,
        "seconds": seconds,
        "load_seconds": load_seconds[0],
        "steps": steps,
        "windows": windows,
    }


def _postgres_warehouse(spec: dict[str, Any]) -> Any:
    """The warehouse of the `postgres` environment (`PLATFORM_ENV=postgres`), built as the code location
    builds it, pointed at `spec["pg_url"]`'s database (the throwaway cluster trusts loopback logins, so the
    password variable is empty)."""
    from sqlalchemy import make_url

    from resources.environment import PG_PASSWORD_VAR, PlatformSettings, build_warehouse

    url = make_url(spec["pg_url"])
    os.environ.setdefault(PG_PASSWORD_VAR, "")
    environ = {
        "PLATFORM_ENV": "postgres",
        "PLATFORM_PG_HOST": str(url.host),
        "PLATFORM_PG_PORT": str(url.port),
        "PLATFORM_PG_USER": str(url.username),
        "PLATFORM_PG_DATABASE": str(url.database),
    }
    return build_warehouse(PlatformSettings.from_env(environ))


def _profiler(spec: dict[str, Any]) -> Any:
    if not spec.get("profile"):
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.005)
    profiler.start()
    return profiler


def _stop_profiler(profiler: Any, spec: dict[str, Any]) -> None:
    if profiler is not None:
        profiler.stop()
        Path(spec["profile"]).write_text(profiler.output_text(unicode=True, color=False, show_all=False))


def run_duckdb_csv(spec: dict[str, Any]) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(spec["warehouse"])
    started = time.perf_counter()
    con.execute(f"CREATE OR REPLACE TABLE orders AS SELECT * FROM read_csv('{spec['csv_dir']}/*.csv')")
    seconds = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM orders").fetchone()[0]
    con.close()
    return {"rows": rows, "seconds": seconds}


def run_duckdb_pg(spec: dict[str, Any]) -> dict[str, Any]:
    """COPY TO STDOUT into a FIFO, read by DuckDB's CSV reader while psycopg2 writes it."""
    import os
    import tempfile
    import threading

    import duckdb
    import psycopg2

    con = duckdb.connect(spec["warehouse"])
    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'orders'").fetchone()[0]
    incremental = spec.get("incremental") and exists
    started = time.perf_counter()
    select = f"SELECT * FROM {spec['table']}"
    if incremental:
        (watermark,) = con.execute("SELECT max(updated_at)::VARCHAR FROM orders").fetchone()
        select += f" WHERE updated_at > '{watermark}'"
    with tempfile.TemporaryDirectory() as scratch:
        fifo = os.path.join(scratch, "copy.csv")
        os.mkfifo(fifo)
        errors: list[BaseException] = []

        def copy() -> None:
            try:
                pg = psycopg2.connect(spec["dsn"])
                with pg, pg.cursor() as cursor, open(fifo, "wb") as out:
                    cursor.copy_expert(f"COPY ({select}) TO STDOUT (FORMAT csv, HEADER)", out, size=1 << 20)
                pg.close()
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        writer = threading.Thread(target=copy, daemon=True)
        writer.start()
        types = (
            "{'order_id': 'BIGINT', 'customer_id': 'INTEGER', 'amount': 'DECIMAL(12,2)', 'weight': 'DOUBLE', "
            "'status': 'VARCHAR', 'note': 'VARCHAR', 'created_at': 'TIMESTAMPTZ', 'updated_at': 'TIMESTAMP', "
            "'order_date': 'DATE', 'is_paid': 'BOOLEAN'}"
        )
        read = f"read_csv('{fifo}', header = true, columns = {types})"
        if incremental:
            con.execute("BEGIN")
            con.execute(f"CREATE TEMP TABLE changed AS SELECT * FROM {read}")
            con.execute("DELETE FROM orders WHERE order_id IN (SELECT order_id FROM changed)")
            rows = con.execute("INSERT INTO orders SELECT * FROM changed").fetchone()[0]
            con.execute("COMMIT")
        else:
            con.execute(f"CREATE OR REPLACE TABLE orders AS SELECT * FROM {read}")
            rows = con.execute("SELECT count(*) FROM orders").fetchone()[0]
        writer.join()
        if errors:
            raise errors[0]
    seconds = time.perf_counter() - started
    con.close()
    return {"rows": rows, "seconds": seconds}


PG_COPY_COLUMNS = """
    order_id bigint, customer_id text, amount double precision, quantity bigint, status text,
    placed_at timestamp, country text, note text, is_gift boolean, score double precision
"""
"""The benchmark CSV's columns with the types the platform's staged table gives them."""


def run_pg_copy(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain `COPY ... FROM STDIN (FORMAT csv, HEADER)` of every CSV file through psycopg2 into a new typed
    table, one transaction: the floor for loading these files into PostgreSQL from a client."""
    import psycopg2

    files = sorted(Path(spec["csv_dir"]).glob("*.csv"))
    connection = psycopg2.connect(spec["dsn"])
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE orders ({PG_COPY_COLUMNS})")
        for path in files:
            with path.open("rb") as handle:
                cursor.copy_expert("COPY orders FROM STDIN (FORMAT csv, HEADER)", handle, size=1 << 20)
    connection.commit()
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders")
        (rows,) = cursor.fetchone()
    connection.close()
    return {"rows": rows, "seconds": seconds}


def _pipeline(spec: dict[str, Any]) -> Any:
    import dlt

    return dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(spec["warehouse"]),
        dataset_name="bench",
        pipelines_dir=spec["dlt_dir"],
        progress=None,
    )


def _loaded_rows(pipeline: Any, table: str) -> int:
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return int(counts.get(table, 0))


def run_dlt_csv(spec: dict[str, Any]) -> dict[str, Any]:
    import csv

    import dlt
    import pyarrow.csv as pacsv

    files = sorted(Path(spec["csv_dir"]).glob("*.csv"))

    @dlt.resource(name="orders", write_disposition="replace")
    def arrow_batches() -> Any:
        for path in files:
            yield from pacsv.open_csv(path)

    @dlt.resource(name="orders", write_disposition="replace")
    def dict_rows() -> Any:
        for path in files:
            with path.open(newline="") as handle:
                yield from csv.DictReader(handle)

    pipeline = _pipeline(spec)
    started = time.perf_counter()
    pipeline.run(arrow_batches() if spec["tool"] == "dlt_csv_arrow" else dict_rows())
    return {"rows": _loaded_rows(pipeline, "orders"), "seconds": time.perf_counter() - started}


def run_dlt_sql(spec: dict[str, Any]) -> dict[str, Any]:
    import dlt
    from dlt.sources.sql_database import sql_table

    incremental = dlt.sources.incremental("updated_at") if spec.get("incremental") else None
    resource = sql_table(
        credentials=spec["url"],
        table=spec["table"],
        backend=spec.get("backend", "pyarrow"),
        chunk_size=100_000,
        incremental=incremental,
        primary_key="order_id",
    )
    pipeline = _pipeline(spec)
    started = time.perf_counter()
    pipeline.run(resource, write_disposition="merge" if spec.get("incremental") else "replace")
    return {"rows": _loaded_rows(pipeline, spec["table"]), "seconds": time.perf_counter() - started}


def run_dlt_rest(spec: dict[str, Any]) -> dict[str, Any]:
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": spec["url"],
                "paginator": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
            },
            "resources": [
                {
                    "name": "orders",
                    "endpoint": {"path": "v1/orders", "data_selector": "data"},
                    "write_disposition": "replace",
                }
            ],
        }
    )
    pipeline = _pipeline(spec)
    started = time.perf_counter()
    pipeline.run(source)
    return {"rows": _loaded_rows(pipeline, "orders"), "seconds": time.perf_counter() - started}


TOOLS = {
    "platform": run_platform,
    "duckdb_csv": run_duckdb_csv,
    "duckdb_pg": run_duckdb_pg,
    "pg_copy": run_pg_copy,
    "dlt_csv_arrow": run_dlt_csv,
    "dlt_csv_dicts": run_dlt_csv,
    "dlt_sql": run_dlt_sql,
    "dlt_rest": run_dlt_rest,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = TOOLS[spec["tool"]](spec)
    # On a line of its own after a marker: DuckDB may have drawn a progress bar on stdout.
    print("\nBENCH_RESULT " + json.dumps({**result, "peak_mb": status_mb("VmHWM")}), flush=True)


if __name__ == "__main__":
    main()
