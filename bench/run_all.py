"""The ingestion benchmarks of issue 7: the platform against DuckDB alone and against dlt, side by side.

    .venv/bin/python bench/run_all.py --scale 1m            # scenarios 1-4 at 1M order rows
    .venv/bin/python bench/run_all.py --scale 100k --scenarios 1 2
    .venv/bin/python bench/run_all.py --summary-only        # rebuild summary.md and the chart

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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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


def row(scenario: str, tool: str, config: str, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "tool": tool,
        "config": config,
        "rows": result["rows"],
        "seconds": round(result["seconds"], 3),
        "rows_per_s": result["rows"] / result["seconds"] if result["rows"] else float("nan"),
        **({"error": result["error"]} if "error" in result else {}),
        "peak_mb": round(result["tree_peak_mb"], 1),
        "steps": result.get("steps", {}),
        "step_peak_mb": result.get("step_peak_mb", {}),
        **extra,
    }


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


def scenario_csv(world: Path, work: Path, profile: Path | None, dlt_default: bool) -> list[dict[str, Any]]:
    csv_dir, small = str(world / "csv"), str(world / "csv_small")
    rows = []
    print("scenario 1: CSV files -> staged DuckDB table", file=sys.stderr)
    rows.append(
        row("1 csv", "duckdb", "read_csv CTAS", one_run(work, "duckdb", tool="duckdb_csv", csv_dir=csv_dir))
    )
    rows.append(
        row(
            "1 csv",
            "platform",
            "raw+staged+check",
            one_run(work, "platform", tool="platform", source="csv", csv_dir=csv_dir),
        )
    )
    rows.append(
        row(
            "1 csv", "dlt", "arrow batches", one_run(work, "dlt_arrow", tool="dlt_csv_arrow", csv_dir=csv_dir)
        )
    )
    if dlt_default:
        rows.append(
            row(
                "1 csv",
                "dlt",
                "dict rows (100k cap)",
                one_run(work, "dlt_dicts", tool="dlt_csv_dicts", csv_dir=small),
            )
        )
    if profile:
        one_run(
            work, "platform_profiled", tool="platform", source="csv", csv_dir=csv_dir, profile=str(profile)
        )
    return rows


def scenario_pg(
    rows_count: int, work: Path, dlt_default: bool, profile: Path | None
) -> tuple[list[dict[str, Any]], str]:
    rows: list[dict[str, Any]] = []
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
        for tool, config, spec in full:
            rows.append(row("2 pg full", tool, config, one_run(work, f"full_{tool}", **spec)))
        incremental = [
            ("duckdb", "COPY watermark + delete/insert", dict(tool="duckdb_pg", dsn=dsn, table=table)),
            ("platform", "raw+staged+check", dict(tool="platform", source="pg", url=url, table=table)),
            ("dlt", "sql_table pyarrow merge", dict(tool="dlt_sql", url=url, table=table, backend="pyarrow")),
        ]
        works = {tool: Workdir(work, f"incremental_{tool}") for tool, _, _ in incremental}
        firsts = {}
        for tool, _, spec in incremental:
            firsts[tool] = measure(works[tool].spec(incremental=True, **spec))
        bench_world.update_share(cluster)
        print(f"  updated {100 // bench_world.UPDATED_SHARE}% of the rows", file=sys.stderr)
        for tool, config, spec in incremental:
            profiled = {"profile": str(profile)} if profile and tool == "platform" else {}
            second = measure(works[tool].spec(incremental=True, **spec, **profiled))
            first = firsts[tool]
            rows.append(row("2 pg incremental: first", tool, config, first))
            rows.append(
                row(
                    "2 pg incremental: 10% changed",
                    tool,
                    config,
                    second,
                    cost_vs_first=round(second["seconds"] / first["seconds"], 3),
                    exact=second["rows"] == rows_count // bench_world.UPDATED_SHARE,
                )
            )
            works[tool].remove()
    return rows, server


def scenario_rest(world: Path, rows_count: int, work: Path) -> list[dict[str, Any]]:
    print(f"scenario 3: REST pages ({rows_count:,} rows) -> staged DuckDB table", file=sys.stderr)
    rows = []
    with bench_world.serve_orders(world / "csv", rows_count) as url:
        rows.append(
            row(
                "3 rest",
                "platform",
                "raw+staged+check",
                one_run(work, "platform", tool="platform", source="rest", url=url),
            )
        )
        rows.append(
            row("3 rest", "dlt", "rest_api_source", one_run(work, "dlt_rest", tool="dlt_rest", url=url))
        )
    return rows


def scenario_demo(work: Path, scale: float, profile: Path | None) -> list[dict[str, Any]]:
    print(f"scenario 4: the whole demo graph at demo scale {scale}", file=sys.stderr)
    rows = []
    for attempt, profiled in enumerate([None, profile] if profile else [None]):
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
            rows.append(
                row(
                    "4 demo graph",
                    "platform",
                    f"{result['assets']} assets, {result['checks']} checks",
                    result,
                    definitions_seconds=round(result["definitions_seconds"], 2),
                    success=result["success"],
                )
            )
    return rows


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
    """Each platform row gets its throughput ratio to each baseline row of the same scenario."""
    for platform_row in rows:
        if platform_row["tool"] != "platform":
            continue
        platform_row["ratios"] = {
            f"{other['tool']} {other['config']}": platform_row["rows_per_s"] / other["rows_per_s"]
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
        "| scenario | tool | configuration | rows | seconds | rows/s | peak RSS MB (tree) "
        "| platform vs this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in run["rows"]:
        platform_row = next(
            (r for r in run["rows"] if r["scenario"] == entry["scenario"] and r["tool"] == "platform"), None
        )
        if entry["tool"] == "platform" or platform_row is None:
            versus = "-"
        else:
            versus = f"{platform_row['rows_per_s'] / entry['rows_per_s']:.2f}x"
        config = entry["config"]
        if "cost_vs_first" in entry:
            config += f"; {entry['cost_vs_first']:.2f}x the first run's seconds"
            config += "" if entry["exact"] else " (**row count differs from the 10% changed**)"
        lines.append(
            f"| {entry['scenario']} | {entry['tool']} | {config} | {entry['rows']:,.0f} | "
            f"{entry['seconds']:.2f} | {entry['rows_per_s']:,.0f} | {entry['peak_mb']:.0f} | {versus} |"
        )
    steps = [r for r in run["rows"] if r["steps"]]
    if steps:
        lines += [
            "",
            "Seconds of each Dagster step of the platform runs (highest tree RSS sampled during it):",
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


def summary() -> None:
    """`summary.md` and `ingest.png` over every `ingest_<scale>.json` in bench/results."""
    runs = []
    for scale in bench_world.SCALES:
        path = RESULTS / f"ingest_{scale}.json"
        if path.exists():
            runs.append(json.loads(path.read_text()))
    if not runs:
        return
    lines = [
        "# Ingestion benchmarks: summary over scales",
        "",
        "Throughput in rows/s (ratio platform / baseline in brackets); peak RSS of the process tree in MB.",
        "Each scale's own file has its date, machine, versions and the seconds of every step.",
        "",
        "| scale | date | scenario | tool | configuration | rows | rows/s | platform vs this | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for entry in run["rows"]:
            platform_row = next(
                (r for r in run["rows"] if r["scenario"] == entry["scenario"] and r["tool"] == "platform"),
                None,
            )
            versus = (
                "-"
                if entry["tool"] == "platform" or platform_row is None
                else f"{platform_row['rows_per_s'] / entry['rows_per_s']:.2f}x"
            )
            lines.append(
                f"| {run['scale']} | {run['env']['date'][:10]} | {entry['scenario']} | {entry['tool']} | "
                f"{entry['config']} | {entry['rows']:,.0f} | {entry['rows_per_s']:,.0f} | {versus} | "
                f"{entry['peak_mb']:.0f} |"
            )
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    chart(runs)


def chart(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = ["1 csv", "2 pg full", "2 pg incremental: 10% changed", "3 rest"]
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
    parser.add_argument("--scenarios", nargs="+", choices=["1", "2", "3", "4"], default=["1", "2", "3", "4"])
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
        summary()
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

    def run_pg() -> list[dict[str, Any]]:
        measured, server[0] = scenario_pg(pg_rows, work, not args.no_dlt_default, profile("pg_incremental"))
        return measured

    scenarios = {
        "1": (lambda: scenario_csv(world, work, profile("csv"), not args.no_dlt_default), None),
        "2": (run_pg, f"PostgreSQL table {pg_rows:,} rows"),
        "3": (
            lambda: scenario_rest(world, rest_rows, work),
            f"REST {rest_rows:,} rows in pages of {bench_world.PAGE_ROWS:,}",
        ),
        "4": (
            lambda: scenario_demo(work, args.demo_scale, profile("demo")),
            f"demo world at scale {args.demo_scale} ({int(10_000 * args.demo_scale):,} orders)",
        ),
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
