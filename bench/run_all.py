"""The ingestion benchmarks of issue 7: the platform against DuckDB alone and against dlt, side by side.

    .venv/bin/python bench/run_all.py --scale 1m            # scenarios 1-4 at 1M order rows
    .venv/bin/python bench/run_all.py --scale 100k --scenarios 1 2
    .venv/bin/python bench/run_all.py --summary-only        # rebuild the tables, summary.md and the chart

Scenarios (data: `bench_world.py`; each measurement a fresh child process, `ingest_children.py`):

1. `csv`: CSV files -> a DuckDB table. Platform: raw asset (CSV -> landed Parquet) + staged asset (DuckDB
   over the landed Parquet, streamed into the warehouse) + its blocking schema-contract check, one Dagster
   materialization. Baselines: DuckDB alone (`CREATE TABLE AS SELECT * FROM read_csv`), dlt with pyarrow
   record batches (its best), dlt with dict rows (its default; on the first 100k rows only, being ~100x
   slower).
2. `pg`: a PostgreSQL table -> a DuckDB table, full, then incremental: every tool's first run, then 10% of
   the rows get a later `updated_at`, then every tool's second run (which must land exactly those).
   Baselines: `COPY TO STDOUT` piped into DuckDB (DuckDB's postgres extension cannot be installed offline),
   dlt `sql_table` with backend `pyarrow` (best) and with its default `sqlalchemy` (100k-row table).
3. `rest`: REST pages (1,000 rows each, cursor-paginated, served from another process on loopback) -> a
   DuckDB table. Baseline: dlt `rest_api_source`. At most `--rest-rows` rows (default 1M).
4. `demo`: the whole demo graph (dbt included) on the demo world (`--demo-scale`, 1.0 = 10k orders), in
   process; `--profile` adds a pyinstrument profile of it (and of the platform's scenario-1 run, and of
   its scenario-2 incremental run: that one measured with the profiler on, a few % slower).
5. `csv -> pg`: the CSV files -> the PostgreSQL warehouse (raw + staged + check, the `postgres`
   environment's `PostgresWarehouse`), against plain psycopg2 `COPY ... FROM STDIN (FORMAT csv)` of the
   same files into a typed table; each run in a fresh database of one throwaway cluster. Reported twice:
   the whole materialization, and its load step alone (the staged asset's `load_seconds`: the IO
   manager's `PostgresWarehouse.load`, staging's scratch file -> COPY -> primary key). DuckDB's
   `postgres` extension would be a second baseline, but it does not install offline here (no download;
   the PyPI packages shipping it are built for DuckDB 1.5, this is 2.0). `--profile` adds a profile.

Rounds: every scenario runs `--rounds` times (default 3) in one script run, platform and baselines
alternating within each round (scenarios 1, 3 and 5 also swap who goes first every other round); the
tables give the median and the spread (min-max) of the seconds, and each ratio is the median (min-max)
of the per-round ratios, platform against the baseline of the same round. The summary states each goal
of issue 19 as met or missed, from those medians.

Seconds: the load call only (`dg.materialize`, `pipeline.run`, the SQL), imports and set-up excluded. Peak
RSS: the highest of the child's own `VmHWM` (reset when it starts, imports included) and the summed
`VmRSS` of the child and all its descendants, sampled every 50 ms (dbt in scenario 4 is a grandchild).
Results: `bench/results/ingest_<scale>.json` and `.md`, then `summary.md` and `ingest.png` over every
scale measured so far.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = REPO_ROOT / "bench"
RESULTS = BENCH / "results"
sys.path[:0] = [str(REPO_ROOT), str(BENCH), str(REPO_ROOT / "tests")]

import bench_world  # noqa: E402

CHILD = BENCH / "ingest_children.py"
DEMO_CHILD = BENCH / "demo_graph.py"
SAMPLE_SECONDS = 0.05


# ------------------------------------------------------------------------------------------- measuring


def _tree_rss_mb(root: int) -> float:
    """Summed VmRSS of `root` and its descendants (0 for processes gone meanwhile)."""
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def run_child(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a measuring child, sampling the RSS of its process tree; its JSON line plus `tree_peak_mb`."""
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while process.poll() is None:
            samples.append((time.time(), _tree_rss_mb(process.pid)))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"child failed: {' '.join(command)[:300]}\n{stderr[-4000:]}")
    [line] = [line for line in stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    result["tree_peak_mb"] = max([result["peak_mb"], *(mb for _, mb in samples)])
    # The highest tree RSS sampled during each Dagster step: which step sets the peak.
    result["step_peak_mb"] = {
        step: round(max((mb for at, mb in samples if start <= at <= end), default=0.0))
        for step, (start, end) in result.pop("windows", {}).items()
    }
    return result


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    result = run_child([sys.executable, str(CHILD), json.dumps(spec)])
    print(
        f"  {spec['tool']:<14} {spec.get('label', ''):<28} {result['rows']:>10,} rows "
        f"{result['seconds']:7.2f} s {result['rows'] / result['seconds']:>12,.0f} rows/s "
        f"{result['tree_peak_mb']:6.0f} MB {result.get('steps', '')}",
        file=sys.stderr,
        flush=True,
    )
    return result


class Workdir:
    """A fresh directory per tool (warehouse file, landing zone, Dagster instance, dlt pipelines)."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = root / name
        shutil.rmtree(self.path, ignore_errors=True)
        (self.path / "instance").mkdir(parents=True)

    def spec(self, **extra: Any) -> dict[str, Any]:
        return {
            "warehouse": str(self.path / "warehouse.duckdb"),
            "landing": str(self.path / "landing"),
            "instance": str(self.path / "instance"),
            "dlt_dir": str(self.path / "dlt"),
            **extra,
        }

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


FAILED = {"rows": 0, "seconds": float("nan"), "tree_peak_mb": float("nan")}


def one_run(work_root: Path, name: str, **spec: Any) -> dict[str, Any]:
    """One measurement in a fresh work directory; a failed child is reported and recorded as failed."""
    work = Workdir(work_root, name)
    try:
        return measure(work.spec(**spec))
    except RuntimeError as error:
        print(f"  FAILED {name}: {str(error)[-1500:]}", file=sys.stderr)
        return {**FAILED, "error": str(error)[-300:]}
    finally:
        work.remove()


def _ok(result: dict[str, Any]) -> bool:
    loaded = result["rows"] > 0 or result.get("expect_empty", False)
    return "error" not in result and result["seconds"] == result["seconds"] and loaded


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of the finite values (NaN when there are none)."""
    finite = sorted(value for value in values if value == value)
    if not finite:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(finite), "min": finite[0], "max": finite[-1]}


def row(
    scenario: str, tool: str, config: str, results: dict[str, Any] | list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """One table row over the rounds' results of one tool: the median seconds and the spread, rows/s of
    each round (for per-round ratios), the highest peak RSS, and the steps of the median round."""
    rounds = results if isinstance(results, list) else [results]
    good = [result for result in rounds if _ok(result)]
    seconds = spread([result["seconds"] if _ok(result) else float("nan") for result in rounds])
    median_run = (
        min(good, key=lambda result: abs(result["seconds"] - seconds["median"])) if good else rounds[0]
    )
    rows = median_run["rows"]
    errors = [result["error"] for result in rounds if "error" in result]
    return {
        "scenario": scenario,
        "tool": tool,
        "config": config,
        "rows": rows,
        "rounds": len(rounds),
        "seconds": round(seconds["median"], 3),
        "seconds_min": round(seconds["min"], 3),
        "seconds_max": round(seconds["max"], 3),
        "seconds_rounds": [round(result["seconds"], 3) for result in rounds],
        "rows_per_s": rows / seconds["median"] if rows else float("nan"),
        "rows_per_s_rounds": [
            result["rows"] / result["seconds"] if _ok(result) else float("nan") for result in rounds
        ],
        **({"error": errors[-1], "failed_rounds": len(errors)} if errors else {}),
        "peak_mb": round(max((result["tree_peak_mb"] for result in good), default=float("nan")), 1),
        "steps": median_run.get("steps", {}),
        "step_peak_mb": median_run.get("step_peak_mb", {}),
        **extra,
    }


def _rounds_of(entry: dict[str, Any], key: str = "rows_per_s_rounds") -> list[float]:
    """Per-round rows/s of a row; rows written before rounds existed count as one round."""
    return entry.get(key) or [entry["rows_per_s"]]


def _speeds(entry: dict[str, Any]) -> list[float]:
    """Per-round speed of a row: rows/s, or runs/s for a run that loads nothing (an empty incremental
    run), where only the seconds compare."""
    if entry["rows"] == 0 and entry.get("seconds_rounds"):
        return [1 / seconds if seconds else float("nan") for seconds in entry["seconds_rounds"]]
    return _rounds_of(entry)


def per_round_ratio(platform_row: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """Median and spread of platform speed / baseline speed (rows/s; for empty runs, the inverse ratio of
    seconds), round by round (the same round's runs were side by side); rows of different lengths fall
    back to the ratio of medians."""
    mine, theirs = _speeds(platform_row), _speeds(other)
    if len(mine) != len(theirs):
        ratio = statistics.median(mine) / statistics.median(theirs)
        return {"median": ratio, "min": ratio, "max": ratio}
    return spread([a / b if b == b and b else float("nan") for a, b in zip(mine, theirs, strict=True)])


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout


def use_platform_source(revision: str, root: Path) -> str:
    """Point every child at the platform code to measure (`BENCH_PLATFORM_SRC`); describes it."""
    if revision == "worktree":
        os.environ.pop("BENCH_PLATFORM_SRC", None)
        head = _git("rev-parse", "--short", "HEAD").strip()
        changed = [
            line for line in _git("status", "--short").splitlines() if not line[3:].startswith("bench/")
        ]
        return f"working tree at {head}" + (f" with {len(changed)} uncommitted change(s)" if changed else "")
    if revision == "snapshot":
        head = _git("rev-parse", "--short", "HEAD").strip()
        stamp = datetime.now(UTC).strftime("%H%M%S")
        tree = root / f"src-snapshot-{stamp}"
        files = _git("ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
        tree.mkdir(parents=True)
        for name in filter(None, files):
            source = REPO_ROOT / name
            if source.is_file():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, tree / name)
        changed = [
            line for line in _git("status", "--short").splitlines() if not line[3:].startswith("bench/")
        ]
        os.environ["BENCH_PLATFORM_SRC"] = str(tree)
        return (
            f"snapshot of the working tree at {datetime.now(UTC):%H:%M} UTC: {head} with {len(changed)} "
            "uncommitted change(s) (copied before the first measurement: edits during the run do not leak in)"
        )
    if Path(revision).is_dir():  # a tree prepared by hand, e.g. an earlier snapshot with one change
        os.environ["BENCH_PLATFORM_SRC"] = str(Path(revision).resolve())
        return f"the tree {revision}"
    sha = _git("rev-parse", "--short", revision).strip()
    tree = root / f"src-{sha}"
    if not (tree / "platform_assets").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO_ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    os.environ["BENCH_PLATFORM_SRC"] = str(tree)
    return f"commit {sha} (`git archive`, uncommitted work excluded)"


# ------------------------------------------------------------------------------------------- scenarios


def alternating(
    rounds: int, runs: list[tuple[str, Callable[[], dict[str, Any]]]], *, swap: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Each named run once per round, in the given order (reversed every other round when `swap`, so
    neither side always runs first on a warm or busy machine); {name: [result of each round]}."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in runs}
    for number in range(rounds):
        print(f" round {number + 1}/{rounds}", file=sys.stderr)
        ordered = runs[::-1] if swap and number % 2 else runs
        for name, run in ordered:
            results[name].append(run())
    return results


def scenario_csv(
    world: Path, work: Path, profile: Path | None, dlt_default: bool, rounds: int
) -> list[dict[str, Any]]:
    csv_dir, small = str(world / "csv"), str(world / "csv_small")
    print("scenario 1: CSV files -> staged DuckDB table", file=sys.stderr)
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("duckdb", lambda: one_run(work, "duckdb", tool="duckdb_csv", csv_dir=csv_dir)),
        ("platform", lambda: one_run(work, "platform", tool="platform", source="csv", csv_dir=csv_dir)),
        ("dlt_arrow", lambda: one_run(work, "dlt_arrow", tool="dlt_csv_arrow", csv_dir=csv_dir)),
    ]
    if dlt_default:
        runs.append(("dlt_dicts", lambda: one_run(work, "dlt_dicts", tool="dlt_csv_dicts", csv_dir=small)))
    results = alternating(rounds, runs)
    rows = [
        row("1 csv", "duckdb", "read_csv CTAS", results["duckdb"]),
        row("1 csv", "platform", "raw+staged+check", results["platform"]),
        row("1 csv", "dlt", "arrow batches", results["dlt_arrow"]),
    ]
    if dlt_default:
        rows.append(row("1 csv", "dlt", "dict rows (100k cap)", results["dlt_dicts"]))
    if profile:
        one_run(
            work, "platform_profiled", tool="platform", source="csv", csv_dir=csv_dir, profile=str(profile)
        )
    return rows


def scenario_pg(
    rows_count: int, work: Path, dlt_default: bool, profile: Path | None, rounds: int
) -> tuple[list[dict[str, Any]], str]:
    """Full loads, then incremental: every tool's first run, 10% of the rows updated, every tool's second
    run; the table is re-created between rounds so every round's incremental starts alike."""
    print(f"scenario 2: PostgreSQL table ({rows_count:,} rows) -> staged DuckDB table", file=sys.stderr)
    with bench_world.postgres_world(rows_count) as (cluster, url):
        dsn = cluster.dsn("bench")
        server = _server_version(dsn)
        table = bench_world.TABLE
        full = [
            ("duckdb", "COPY TO STDOUT -> read_csv", dict(tool="duckdb_pg", dsn=dsn, table=table)),
            ("platform", "raw+staged+check", dict(tool="platform", source="pg", url=url, table=table)),
            ("dlt", "sql_table pyarrow", dict(tool="dlt_sql", url=url, table=table, backend="pyarrow")),
            (
                "dlt",
                "sql_table sqlalchemy (100k cap)",
                dict(tool="dlt_sql", url=url, table=bench_world.SMALL_TABLE, backend="sqlalchemy"),
            ),
        ]
        if not dlt_default:
            full.pop()
        incremental = [
            ("duckdb", "COPY watermark + delete/insert", dict(tool="duckdb_pg", dsn=dsn, table=table)),
            ("platform", "raw+staged+check", dict(tool="platform", source="pg", url=url, table=table)),
            ("dlt", "sql_table pyarrow merge", dict(tool="dlt_sql", url=url, table=table, backend="pyarrow")),
        ]
        fulls: dict[int, list[dict[str, Any]]] = {index: [] for index in range(len(full))}
        firsts: dict[str, list[dict[str, Any]]] = {tool: [] for tool, _, _ in incremental}
        seconds: dict[str, list[dict[str, Any]]] = {tool: [] for tool, _, _ in incremental}
        empties: dict[str, list[dict[str, Any]]] = {tool: [] for tool, _, _ in incremental}
        for number in range(rounds):
            print(f" round {number + 1}/{rounds}", file=sys.stderr)
            if number:
                bench_world.reset_table(cluster, rows_count)
            for index, (tool, _, spec) in enumerate(full):
                fulls[index].append(one_run(work, f"full_{tool}", **spec))
            works = {tool: Workdir(work, f"incremental_{tool}") for tool, _, _ in incremental}
            for tool, _, spec in incremental:
                firsts[tool].append(_measured(works[tool].spec(incremental=True, **spec)))
            bench_world.update_share(cluster)
            print(f"  updated {100 // bench_world.UPDATED_SHARE}% of the rows", file=sys.stderr)
            for tool, _, spec in incremental:
                last = number == rounds - 1
                profiled = {"profile": str(profile)} if profile and tool == "platform" and last else {}
                seconds[tool].append(_measured(works[tool].spec(incremental=True, **spec, **profiled)))
            for tool, _, spec in incremental:
                empties[tool].append(
                    {**_measured(works[tool].spec(incremental=True, **spec)), "expect_empty": True}
                )
                works[tool].remove()
        rows = [row("2 pg full", tool, config, fulls[index]) for index, (tool, config, _) in enumerate(full)]
        for tool, config, _ in incremental:
            rows.append(row("2 pg incremental: first", tool, config, firsts[tool]))
            for label, later, expected in (
                ("10% changed", seconds[tool], rows_count // bench_world.UPDATED_SHARE),
                ("nothing new", empties[tool], 0),
            ):
                costs = spread(
                    [
                        second["seconds"] / first["seconds"] if _ok(first) and _ok(second) else float("nan")
                        for first, second in zip(firsts[tool], later, strict=True)
                    ]
                )
                rows.append(
                    row(
                        f"2 pg incremental: {label}",
                        tool,
                        config,
                        later,
                        cost_vs_first=round(costs["median"], 3),
                        cost_vs_first_min=round(costs["min"], 3),
                        cost_vs_first_max=round(costs["max"], 3),
                        exact=all(result["rows"] == expected for result in later if _ok(result)),
                    )
                )
    return rows, server


def _measured(spec: dict[str, Any]) -> dict[str, Any]:
    """`measure`, a failed child recorded as failed (the incremental runs keep their work directory)."""
    try:
        return measure(spec)
    except RuntimeError as error:
        print(f"  FAILED {spec['tool']}: {str(error)[-1500:]}", file=sys.stderr)
        return {**FAILED, "error": str(error)[-300:]}


def scenario_rest(world: Path, rows_count: int, work: Path, rounds: int) -> list[dict[str, Any]]:
    print(f"scenario 3: REST pages ({rows_count:,} rows) -> staged DuckDB table", file=sys.stderr)
    with bench_world.serve_orders(world / "csv", rows_count) as url:
        results = alternating(
            rounds,
            [
                ("platform", lambda: one_run(work, "platform", tool="platform", source="rest", url=url)),
                ("dlt", lambda: one_run(work, "dlt_rest", tool="dlt_rest", url=url)),
            ],
        )
    return [
        row("3 rest", "platform", "raw+staged+check", results["platform"]),
        row("3 rest", "dlt", "rest_api_source", results["dlt"]),
    ]


def scenario_demo(work: Path, scale: float, profile: Path | None, rounds: int) -> list[dict[str, Any]]:
    print(f"scenario 4: the whole demo graph at demo scale {scale}", file=sys.stderr)
    results = []
    for attempt, profiled in enumerate([None] * rounds + ([profile] if profile else [])):
        data_dir = work / f"demo{attempt}"
        shutil.rmtree(data_dir, ignore_errors=True)
        command = [sys.executable, str(DEMO_CHILD), "--data-dir", str(data_dir), "--scale", str(scale)]
        if profiled:
            command += ["--profile", str(profiled)]
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PLATFORM_ENV")}
        result = run_child(command, env=env)
        shutil.rmtree(data_dir, ignore_errors=True)
        slowest = dict(sorted(result["steps"].items(), key=lambda item: -item[1])[:6])
        print(
            f"  demo graph{' (profiled)' if profiled else ''}: run {result['seconds']:.1f} s, definitions "
            f"{result['definitions_seconds']:.1f} s, success {result['success']}, {result['assets']} "
            f"materializations, {result['checks']} checks, {result['tree_peak_mb']:.0f} MB; "
            f"slowest {slowest}",
            file=sys.stderr,
        )
        if not profiled:
            results.append(result)
    last = results[-1]
    return [
        row(
            "4 demo graph",
            "platform",
            f"{last['assets']} assets, {last['checks']} checks",
            results,
            definitions_seconds=round(statistics.median(r["definitions_seconds"] for r in results), 2),
            success=all(r["success"] for r in results),
        )
    ]


def scenario_pg_load(
    world: Path, work: Path, profile: Path | None, rounds: int
) -> tuple[list[dict[str, Any]], str]:
    """The CSV files into the PostgreSQL warehouse against plain COPY of them, each run in a new database;
    the platform's load step (its `load_seconds`) is a row of its own beside the same COPY runs."""
    from fixtures.postgres_server import PostgresCluster

    csv_dir = str(world / "csv")
    print("scenario 5: CSV files -> PostgreSQL warehouse, against plain COPY FROM STDIN", file=sys.stderr)
    with PostgresCluster() as cluster:
        server = _server_version(cluster.dsn())

        def in_new_database(name: str, **spec: Any) -> dict[str, Any]:
            database = cluster.create_database()
            try:
                return one_run(
                    work,
                    name,
                    csv_dir=csv_dir,
                    dsn=cluster.dsn(database),
                    pg_url=cluster.url(database),
                    **spec,
                )
            finally:
                cluster.execute("postgres", f'DROP DATABASE "{database}"')

        platform = dict(tool="platform", source="csv", warehouse_kind="postgres")
        results = alternating(
            rounds,
            [
                ("copy", lambda: in_new_database("pg_copy", tool="pg_copy")),
                ("platform", lambda: in_new_database("pg_platform", **platform)),
            ],
        )
        if profile:
            in_new_database("pg_platform_profiled", **platform, profile=str(profile))
    loads = [
        {**result, "seconds": result["load_seconds"]} if _ok(result) else result
        for result in results["platform"]
    ]
    copy = "psycopg2 COPY FROM STDIN (csv)"
    return [
        row("5 csv -> pg", "pg", copy, results["copy"]),
        row("5 csv -> pg", "platform", "raw+staged+check", results["platform"]),
        row("5 csv -> pg: load step", "pg", copy, results["copy"]),
        row("5 csv -> pg: load step", "platform", "staged load (load_seconds)", loads),
    ], server


# ------------------------------------------------------------------------------------------- reporting


def _server_version(dsn: str) -> str:
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return str(cursor.fetchone()[0])
    finally:
        connection.close()


def environment(server: str | None) -> dict[str, str]:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    memory_gib = int(meminfo["MemTotal"].split()[0]) / (1 << 20)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    packages = ("dagster", "dlt", "duckdb", "pyarrow", "pandas", "pandera", "dbt-core", "dbt-duckdb")
    versions = [f"Python {platform.python_version()}", *(f"{name} {version(name)}" for name in packages)]
    if server:
        versions.append(f"PostgreSQL {server}")
    load = os.getloadavg()
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{len(os.sched_getaffinity(0))} CPUs ({cpu}), {memory_gib:.1f} GiB RAM, Linux "
        f"{platform.release()}; load average at the end {load[0]:.1f} (shared machine)",
        "versions": ", ".join(versions),
    }


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each platform row gets its throughput ratio to each baseline row of the same scenario: the median
    and spread of the per-round ratios."""
    for platform_row in rows:
        if platform_row["tool"] != "platform":
            continue
        platform_row["ratios"] = {
            f"{other['tool']} {other['config']}": per_round_ratio(platform_row, other)
            for other in rows
            if other["scenario"] == platform_row["scenario"] and other["tool"] != "platform"
        }
    return rows


def _trees(run: dict[str, Any]) -> dict[str, str]:
    """Which platform code each scenario measured: {tree: "1, 2"}."""
    trees: dict[str, set[str]] = {}
    for entry in run["rows"]:
        trees.setdefault(entry.get("platform", run.get("platform", "?")), set()).add(entry["scenario"][0])
    return {tree: ", ".join(sorted(numbers)) for tree, numbers in trees.items()}


def _range(median: float, low: float, high: float, digits: int = 2, unit: str = "") -> str:
    if median != median:
        return "failed"
    text = f"{median:.{digits}f}{unit}"
    return text if low == high else f"{text} ({low:.{digits}f}-{high:.{digits}f})"


def _seconds(entry: dict[str, Any]) -> str:
    return _range(
        entry["seconds"],
        entry.get("seconds_min", entry["seconds"]),
        entry.get("seconds_max", entry["seconds"]),
    )


def _versus(run_rows: list[dict[str, Any]], entry: dict[str, Any]) -> str:
    platform_row = next(
        (r for r in run_rows if r["scenario"] == entry["scenario"] and r["tool"] == "platform"), None
    )
    if entry["tool"] == "platform" or platform_row is None:
        return "-"
    ratio = per_round_ratio(platform_row, entry)
    return _range(ratio["median"], ratio["min"], ratio["max"], unit="x")


GOALS: list[dict[str, Any]] = [
    {
        "goal": "scenario 1 at 10M: >= 0.5x DuckDB alone",
        "scale": "10m",
        "scenario": "1 csv",
        "baseline": "duckdb read_csv CTAS",
        "at_least": 0.5,
    },
    {
        "goal": "scenario 1 at 10M: >= 2x dlt best",
        "scale": "10m",
        "scenario": "1 csv",
        "baseline": "dlt arrow batches",
        "at_least": 2.0,
    },
    {
        "goal": "scenario 1 at 1M: >= 0.4x DuckDB alone",
        "scale": "1m",
        "scenario": "1 csv",
        "baseline": "duckdb read_csv CTAS",
        "at_least": 0.4,
    },
    {
        "goal": "scenario 1 at 1M: >= 1.5x dlt best",
        "scale": "1m",
        "scenario": "1 csv",
        "baseline": "dlt arrow batches",
        "at_least": 1.5,
    },
    {
        "goal": "scenario 2 at 1M, 10% changed: <= 0.3x of its first run",
        "scale": "1m",
        "scenario": "2 pg incremental: 10% changed",
        "cost_at_most": 0.3,
    },
    {
        "goal": "scenario 2 at 1M, 10% changed: faster than dlt's incremental",
        "scale": "1m",
        "scenario": "2 pg incremental: 10% changed",
        "baseline": "dlt sql_table pyarrow merge",
        "at_least": 1.0,
    },
    {
        "goal": "scenario 5: the platform's load >= 0.5x plain COPY",
        "scale": None,
        "scenario": "5 csv -> pg: load step",
        "baseline": "pg psycopg2 COPY FROM STDIN (csv)",
        "at_least": 0.5,
    },
]
"""Issue 19's goals (`scale` None: at every scale measured), judged on the median of the rounds."""


def goal_verdicts(run: dict[str, Any]) -> list[str]:
    """One line per goal that applies to this run's scale: met / missed / not measured, with the
    median and spread it was judged on."""
    lines = []
    for goal in GOALS:
        if goal["scale"] not in (None, run["scale"]):
            continue
        platform_row = next(
            (r for r in run["rows"] if r["scenario"] == goal["scenario"] and r["tool"] == "platform"), None
        )
        label = f"{goal['goal']} (scale {run['scale']})"
        if platform_row is None or platform_row["seconds"] != platform_row["seconds"]:
            lines.append(f"| {label} | not measured | - |")
            continue
        rounds = platform_row.get("rounds", 1)
        if "cost_at_most" in goal:
            value = {
                "median": platform_row["cost_vs_first"],
                "min": platform_row.get("cost_vs_first_min", platform_row["cost_vs_first"]),
                "max": platform_row.get("cost_vs_first_max", platform_row["cost_vs_first"]),
            }
            met = value["median"] <= goal["cost_at_most"]
            shown = _range(value["median"], value["min"], value["max"], unit="x of the first run")
        else:
            baseline = next(
                (
                    r
                    for r in run["rows"]
                    if r["scenario"] == goal["scenario"] and f"{r['tool']} {r['config']}" == goal["baseline"]
                ),
                None,
            )
            if baseline is None:
                lines.append(f"| {label} | not measured (no baseline run) | - |")
                continue
            value = per_round_ratio(platform_row, baseline)
            met = value["median"] >= goal["at_least"]
            shown = _range(value["median"], value["min"], value["max"], unit="x")
        verdict = "**met**" if met else "**missed**"
        basis = (
            f"median of {rounds} round(s)"
            if "rounds" in platform_row
            else f"one earlier run (on {_revision(platform_row.get('platform', ''))}), not in rounds"
        )
        lines.append(f"| {label} | {verdict} | {shown}, {basis} |")
    return lines


def _revision(tree: str) -> str:
    """The commit a platform-code description names (`snapshot ... at 19:04 UTC: 2f7774b with ...`)."""
    found = re.search(r"\b[0-9a-f]{7,40}\b", tree)
    return found.group(0) if found else "earlier code"


def markdown(run: dict[str, Any]) -> str:
    lines = [
        f"# Ingestion benchmark, scale {run['scale']} (`bench/run_all.py`)",
        "",
        f"- date: {run['env']['date']}",
        f"- machine: {run['env']['machine']}",
        f"- versions: {run['env']['versions']}",
        f"- command: `{run['command']}` ({run['minutes']:.1f} min in all)",
        f"- data: {run['data']}",
        *(f"- platform code of scenario(s) {numbers}: {tree}" for tree, numbers in _trees(run).items()),
        "",
        "Seconds: median (min-max) over the rounds; rows/s at the median; platform vs this: the median "
        "(min-max) of the per-round throughput ratios, platform / this, side by side in the same round.",
        "",
        "| scenario | tool | configuration | rounds | rows | seconds | rows/s | peak RSS MB (tree) "
        "| platform vs this |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in run["rows"]:
        config = entry["config"]
        if "cost_vs_first" in entry:
            cost = _range(
                entry["cost_vs_first"],
                entry.get("cost_vs_first_min", entry["cost_vs_first"]),
                entry.get("cost_vs_first_max", entry["cost_vs_first"]),
            )
            config += f"; {cost}x the first run's seconds"
            config += "" if entry["exact"] else " (**row count differs from the rows changed**)"
        if entry.get("failed_rounds"):
            config += f" (**{entry['failed_rounds']} round(s) failed**)"
        lines.append(
            f"| {entry['scenario']} | {entry['tool']} | {config} | {entry.get('rounds', 1)} | "
            f"{entry['rows']:,.0f} | {_seconds(entry)} | {entry['rows_per_s']:,.0f} | "
            f"{entry['peak_mb']:.0f} | {_versus(run['rows'], entry)} |"
        )
    verdicts = goal_verdicts(run)
    if verdicts:
        lines += [
            "",
            "Goals of issue 19 at this scale:",
            "",
            "| goal | verdict | on |",
            "|---|---|---|",
            *verdicts,
        ]
    steps = [r for r in run["rows"] if r["steps"]]
    if steps:
        lines += [
            "",
            "Seconds of each Dagster step of the platform runs (the median round; highest tree RSS sampled "
            "during it):",
            "",
        ]
        for entry in steps:
            slowest = sorted(entry["steps"].items(), key=lambda item: -item[1])[:8]
            peaks = entry.get("step_peak_mb", {})
            text = ", ".join(
                f"`{key}` {seconds:.2f} s" + (f" ({peaks[key]} MB)" if peaks.get(key) else "")
                for key, seconds in slowest
            )
            lines.append(f"- {entry['scenario']}: {text}")
    return "\n".join(lines) + "\n"


def summary(rewrite_scales: bool = False) -> None:
    """`summary.md` and `ingest.png` over every `ingest_<scale>.json` in bench/results (and, when
    `rewrite_scales`, each scale's `ingest_<scale>.md` again from its JSON)."""
    runs = []
    for scale in bench_world.SCALES:
        path = RESULTS / f"ingest_{scale}.json"
        if path.exists():
            runs.append(json.loads(path.read_text()))
            if rewrite_scales:
                (RESULTS / f"ingest_{scale}.md").write_text(markdown(runs[-1]))
    if not runs:
        return
    lines = [
        "# Ingestion benchmarks: summary over scales",
        "",
        "Throughput in rows/s at the median of the rounds; platform vs this: the median (min-max) of the",
        "per-round ratios platform / baseline; peak RSS of the process tree in MB. Each scale's own file has",
        "its date, machine, versions, the seconds of every round and of every step.",
        "",
        "## Goals (issue 19)",
        "",
        "| goal | verdict | on |",
        "|---|---|---|",
        *(line for run in runs for line in goal_verdicts(run)),
        "",
        "## All rows",
        "",
        "| scale | date | scenario | tool | configuration | rounds | rows | rows/s | platform vs this "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for entry in run["rows"]:
            lines.append(
                f"| {run['scale']} | {run['env']['date'][:10]} | {entry['scenario']} | {entry['tool']} | "
                f"{entry['config']} | {entry.get('rounds', 1)} | {entry['rows']:,.0f} | "
                f"{entry['rows_per_s']:,.0f} | {_versus(run['rows'], entry)} | {entry['peak_mb']:.0f} |"
            )
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    chart(runs)


def chart(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = ["1 csv", "2 pg full", "2 pg incremental: 10% changed", "3 rest", "5 csv -> pg: load step"]
    figure, axes = plt.subplots(2, len(scenarios), figsize=(5 * len(scenarios), 9), squeeze=False)
    for column, scenario in enumerate(scenarios):
        for line, (metric, label) in enumerate((("rows_per_s", "rows/s (log)"), ("peak_mb", "peak RSS MB"))):
            axis = axes[line][column]
            labels, values, colors = [], [], []
            for run in runs:
                for entry in run["rows"]:
                    if entry["scenario"] != scenario:
                        continue
                    labels.append(f"{run['scale']} {entry['tool']} {entry['config'][:22]}")
                    values.append(entry[metric])
                    colors.append(
                        {"platform": "tab:blue", "duckdb": "tab:green"}.get(entry["tool"], "tab:orange")
                    )
            if not values:
                axis.set_visible(False)
                continue
            axis.bar(range(len(values)), values, color=colors)
            axis.set_xticks(range(len(values)), labels, fontsize=6, rotation=60, ha="right")
            axis.set_title(f"{scenario}: {label}", fontsize=9)
            if metric == "rows_per_s":
                axis.set_yscale("log")
    env = runs[-1]["env"]
    figure.suptitle(
        f"platform (blue) vs DuckDB alone (green) vs dlt (orange); {env['date']}; {env['machine'][:90]}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(RESULTS / "ingest.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=list(bench_world.SCALES), default="100k")
    parser.add_argument(
        "--scenarios", nargs="+", choices=["1", "2", "3", "4", "5"], default=["1", "2", "3", "4", "5"]
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every scenario this many times, platform and baselines alternating in each round; "
        "the tables give the median and the spread",
    )
    parser.add_argument("--pg-rows", type=int, help="rows of the PostgreSQL table (default: the scale)")
    parser.add_argument(
        "--rest-rows",
        type=int,
        default=100_000,
        help="at most this many REST rows (dlt's REST source yields dicts: ~600 rows/s here)",
    )
    parser.add_argument(
        "--no-dlt-default",
        action="store_true",
        help="skip dlt's default (dict-row) configurations of scenarios 1 and 2 (100k rows, minutes each)",
    )
    parser.add_argument("--demo-scale", type=float, default=1.0, help="demo world scale for scenario 4")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-ingest")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profiles into bench/results")
    parser.add_argument(
        "--platform-src",
        default="snapshot",
        help="the platform code measured: `snapshot` (a copy of this checkout, uncommitted files included, "
        "taken at the start), `worktree` (the checkout itself, live), a git revision (`git archive`) or a "
        "directory holding a prepared tree",
    )
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        summary(rewrite_scales=True)
        return
    started = time.perf_counter()
    platform_tree = use_platform_source(args.platform_src, args.dir)
    rows_count = bench_world.SCALES[args.scale]
    world = bench_world.generate_files(rows_count, args.dir / "world")
    work = args.dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    profile = (
        (lambda name: RESULTS / f"profile_{name}_{args.scale}.txt") if args.profile else (lambda _: None)
    )
    rows: list[dict[str, Any]] = []
    server: list[str | None] = [None]
    sizes = bench_world.file_sizes(world)
    data = [f"{rows_count:,} orders, 10 columns; CSV {sizes['csv'] / 1e6:,.0f} MB"]
    pg_rows = args.pg_rows or rows_count
    rest_rows = min(rows_count, args.rest_rows)

    rounds = max(args.rounds, 1)

    def run_pg() -> list[dict[str, Any]]:
        measured, server[0] = scenario_pg(
            pg_rows, work, not args.no_dlt_default, profile("pg_incremental"), rounds
        )
        return measured

    def run_pg_load() -> list[dict[str, Any]]:
        measured, server[0] = scenario_pg_load(world, work, profile("csv_pg"), rounds)
        return measured

    scenarios = {
        "1": (lambda: scenario_csv(world, work, profile("csv"), not args.no_dlt_default, rounds), None),
        "2": (run_pg, f"PostgreSQL table {pg_rows:,} rows"),
        "3": (
            lambda: scenario_rest(world, rest_rows, work, rounds),
            f"REST {rest_rows:,} rows in pages of {bench_world.PAGE_ROWS:,}",
        ),
        "4": (
            lambda: scenario_demo(work, args.demo_scale, profile("demo"), rounds),
            f"demo world at scale {args.demo_scale} ({int(10_000 * args.demo_scale):,} orders)",
        ),
        "5": (run_pg_load, "the CSV files into the PostgreSQL warehouse"),
    }
    previous = RESULTS / f"ingest_{args.scale}.json"
    kept = []
    if previous.exists():  # keep the scenarios not measured this time
        kept = [r for r in json.loads(previous.read_text())["rows"] if r["scenario"][0] not in args.scenarios]
    for number in args.scenarios:
        scenario, described = scenarios[number]
        try:
            rows += [{**measured, "platform": platform_tree} for measured in scenario()]
        except Exception as error:  # one broken scenario must not lose the others' results
            print(f"scenario {number} FAILED: {error!r}"[:3000], file=sys.stderr)
        if described:
            data.append(described)
        # Written after every scenario, so an interrupted run keeps what it measured.
        run = {
            "scale": args.scale,
            "env": environment(server[0]),
            "command": " ".join([".venv/bin/python", "bench/run_all.py", *sys.argv[1:]]),
            "minutes": (time.perf_counter() - started) / 60,
            "data": "; ".join(data),
            "platform": platform_tree,
            "rows": with_ratios(sorted(kept + rows, key=lambda r: r["scenario"][0])),
        }
        (RESULTS / f"ingest_{args.scale}.md").write_text(markdown(run))
        (RESULTS / f"ingest_{args.scale}.json").write_text(json.dumps(run, indent=1) + "\n")
        summary()
    print((RESULTS / f"ingest_{args.scale}.md").read_text())


if __name__ == "__main__":
    main()
