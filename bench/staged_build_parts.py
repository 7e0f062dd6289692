"""What building the staged table costs, part by part: the evidence behind scenario 1's analysis.

Scenario 1's staged step builds the staged table from the landed files (copies of the delivered CSV, parsed
by this one scan) with `staging_select` (typed columns, the rule columns `_cast_errors` and `_violations`,
six lineage columns). This script lands the benchmark world's CSV files once with the platform's raw asset
(cached under `--dir`), then builds the table from them several ways, each in a fresh DuckDB file,
alternating within each round so that every variant sees the same machine state:

- `staged`: the platform's SELECT as it is, under staging's memory limit;
- without the rule columns; without the lineage columns; the declared (typed) columns alone;
- the platform's SELECT again under a 2 GB limit: what staging's memory bound costs.

Run from the repository root: `.venv/bin/python bench/staged_build_parts.py --scale 10m` (~3 min here,
plus the world and the landing the first time). Writes a Markdown table to
`bench/results/staged_build_parts_<scale>.md`; every ratio is against `staged` in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import bench_world  # noqa: E402
import duckdb  # noqa: E402
from ingest_children import entity_spec  # noqa: E402

from platform_assets.catalog.loader import CatalogEntity  # noqa: E402
from platform_assets.catalog.model import Source  # noqa: E402
from platform_assets.staging.sql import CAST_ERRORS_COLUMN, VIOLATIONS_COLUMN, staging_select  # noqa: E402
from resources.landing.delivered import landed_schema, parse_copies  # noqa: E402
from resources.landing.query import DEFAULT_MEMORY_LIMIT  # noqa: E402
from resources.warehouses.duckdb_warehouse import quote_identifier  # noqa: E402

LINEAGE = ("_origin", "_record", "_source", "_extracted_at", "_run_id", "_loaded_at")


def landed_files(csv_dir: Path, landing_root: Path) -> tuple[CatalogEntity, list[Path]]:
    """The benchmark's CSV entity and its landed files (copies of the delivered CSV), landed by the raw asset
    unless already."""
    import dagster as dg

    from platform_assets.factories.raw_assets import build_raw_asset
    from resources.landing.zone import LandingZone

    connection, block, columns = entity_spec({"source": "csv", "csv_dir": str(csv_dir)})
    source = Source.model_validate(
        {
            "source": "bench",
            "connection": connection,
            "entities": {"orders": {**block, "primary_key": ["order_id"], "columns": columns}},
        }
    )
    item = CatalogEntity(source, "orders", source.entities["orders"])
    landing = LandingZone(root=str(landing_root))
    files = landing.committed_files("bench", "orders")
    if not files:
        started = time.perf_counter()
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(
                [build_raw_asset(item)],
                resources={"landing": landing},
                instance=instance,
            )
        assert result.success, "landing the benchmark CSV failed"
        files = landing.committed_files("bench", "orders")
        print(f"landed {len(files)} file(s) in {time.perf_counter() - started:.1f} s", flush=True)
    return item, files


def variants(item: CatalogEntity, files: list[Path]) -> dict[str, tuple[str, str]]:
    """Name -> (SELECT, memory limit)."""
    columns = {name for path in files for name in landed_schema(path).names}
    staged = staging_select(item.entity, files, columns, "bench-run", parsed=True)
    numbered_in_scan = staging_select(item.entity, files, columns, "bench-run")
    rules = ", ".join(quote_identifier(name) for name in (CAST_ERRORS_COLUMN, VIOLATIONS_COLUMN))
    lineage = ", ".join(quote_identifier(name) for name in LINEAGE)
    declared = ", ".join(quote_identifier(name) for name in item.entity.columns)
    return {
        "staged": (staged, DEFAULT_MEMORY_LIMIT),
        "without the rule columns": (f"SELECT * EXCLUDE ({rules}) FROM ({staged})", DEFAULT_MEMORY_LIMIT),
        "without the lineage columns": (
            f"SELECT * EXCLUDE ({lineage}) FROM ({staged})",
            DEFAULT_MEMORY_LIMIT,
        ),
        "declared columns only": (f"SELECT {declared} FROM ({staged})", DEFAULT_MEMORY_LIMIT),
        "staged, 2 GB memory limit": (staged, "2GB"),
        "staged, _record numbered in the scan (row_number)": (numbered_in_scan, DEFAULT_MEMORY_LIMIT),
    }


def build_seconds(select: str, memory_limit: str, work: Path, files: list[Path]) -> float:
    database = work / "build.duckdb"
    for path in (database, database.with_suffix(".duckdb.wal")):
        path.unlink(missing_ok=True)
    config = {"temp_directory": str(work), "memory_limit": memory_limit, "preserve_insertion_order": False}
    con = duckdb.connect(str(database), config=config)
    try:
        started = time.perf_counter()
        if "__parsed_" in select:  # as `StagingSplit` does: the copies parsed first, then the one SELECT
            parse_copies(con, files)
        con.execute(f"CREATE TABLE staged AS {select}")
        return time.perf_counter() - started
    finally:
        con.close()
        database.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=list(bench_world.SCALES), default="1m")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-ingest")
    args = parser.parse_args()
    rows = bench_world.SCALES[args.scale]
    world = bench_world.generate_files(rows, args.dir / "world")
    work = args.dir / "parts" / str(rows)
    item, files = landed_files(world / "csv", work / "landed-copies")
    built = variants(item, files)
    seconds: dict[str, list[float]] = {name: [] for name in built}
    for round_ in range(args.rounds):
        for name, (select, memory_limit) in built.items():
            seconds[name].append(build_seconds(select, memory_limit, work, files))
            print(f"round {round_ + 1}: {name}: {seconds[name][-1]:.2f} s", flush=True)
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=BENCH, capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        f"# The staged table of {rows:,} rows, built part by part",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; platform code: {revision}",
        f"- duckdb {duckdb.__version__}; command: `.venv/bin/python bench/staged_build_parts.py "
        f"--scale {args.scale} --rounds {args.rounds}`",
        f"- {len(files)} landed file(s); staging's memory limit {DEFAULT_MEMORY_LIMIT}",
        "",
        "| variant | seconds per round | median | vs staged (median of the same-round ratios) |",
        "|---|---|---|---|",
    ]
    for name, values in seconds.items():
        ratios = [value / staged for value, staged in zip(values, seconds["staged"], strict=True)]
        rounds = " / ".join(f"{value:.2f}" for value in values)
        lines.append(
            f"| {name} | {rounds} | {statistics.median(values):.2f} | {statistics.median(ratios):.2f}x |"
        )
    report = "\n".join(lines) + "\n"
    (BENCH / "results" / f"staged_build_parts_{args.scale}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
