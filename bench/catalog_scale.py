"""How the platform's fixed costs grow with the catalog, against a bare Dagster code location side by side.

For each size N (`--sizes`, default 10 100 500 1000) a catalog of N entities is generated into a temporary
directory (`ceil(N / 10)` file sources of up to 10 entities, each a 100-row CSV; every source has an hourly
schedule) and used through `PLATFORM_CATALOG_DIR`. Each measurement is a fresh process, the platform's and
the baseline's alternating, both with the repository's `dagster.yaml` as their instance configuration:

- **load**: wall seconds of a process that imports the code location and builds its `Definitions`
  (median of `--repeat`); also the repository's jobs (implicit ones included), the size of its serialized
  snapshot (what the code server sends to the webserver and daemon), the largest asset group and the most
  repeated node label inside one group (the UI labels a node with the last part of its key);
- **first step**: `dagster asset materialize` of one entity's raw and staged assets in a subprocess (the
  CLI loads the code location and executes the run as a run worker does); seconds from launching the
  subprocess to the first `STEP_START` in the event log, and to its exit;
- **UI**: `dagster-webserver` on loopback; seconds until its GraphQL endpoint first answers, and until it
  answers with the code location loaded;
- **daemon**: `dagster-daemon run` (schedules and file sensors are stopped in the `local` environment, as
  in a laptop's `dagster dev`; the automation, healing and quality-events sensors run); once the
  automation sensors have ticked, the CPU seconds of the daemon's whole process tree (the code server it
  starts included, read from `/proc/<pid>/stat`) over `--idle-seconds`, as a share of one core; and the
  median duration of each sensor's ticks.

The baseline is a code location that imports `dagster` and defines one asset (`bare_location.py`, written
into the temporary directory): what any Dagster deployment pays, measured the same way.

Usage (repository root, after `./dev prepare`): `.venv/bin/python bench/catalog_scale.py
[--sizes 10 100 500 1000] [--src worktree|DIR|REV]`. `--src` picks the platform code measured: the live
checkout (default), a directory holding a tree of the repository, or a git revision (`git archive`; the
dbt manifest is copied from the checkout). Results: `bench/results/catalog_scale.md` and `.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proc_stat import CLOCK_TICKS, cpu_ticks, process_stats

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results"
ENTITIES_PER_SOURCE = 10
ROWS_PER_FILE = 100
GOAL_SIZE = 500
GOAL_FIRST_STEP_S = 10.0
GOAL_UI_S = 30.0
GOAL_DAEMON_CORE = 0.10
AUTOMATION_SENSORS = ("ingestion_automation", "dbt_automation", "ops_automation")

BARE_LOCATION = '''"""The baseline code location: dagster imported, one asset."""
import dagster as dg


@dg.asset
def one() -> int:
    return 1


defs = dg.Definitions(assets=[one])
'''

INSPECT = """
import json, sys
from collections import Counter
import dagster as dg
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
module, attribute = sys.argv[1], sys.argv[2]
loaded = getattr(__import__(module, fromlist=[attribute]), attribute)
definitions = loaded() if callable(loaded) and not isinstance(loaded, dg.Definitions) else loaded
repo = definitions.get_repository_def()
groups = Counter()
labels = Counter()
for node in repo.asset_graph.asset_nodes:
    groups[node.group_name] += 1
    labels[(node.group_name, node.key.path[-1])] += 1
(group, group_size), = groups.most_common(1)
((label_group, label), label_count), = labels.most_common(1)
print(json.dumps({
    "jobs": len(repo.get_all_jobs()),
    "snapshot_mib": len(serialize_value(RepositorySnap.from_def(repo))) / 2**20,
    "assets": len(repo.asset_graph.asset_nodes),
    "groups": len(groups),
    "largest_group": f"{group} ({group_size})",
    "largest_group_size": group_size,
    "most_repeated_label": f"{label} x{label_count} in {label_group}",
    "most_repeated_label_count": label_count,
}))
"""

WORKSPACE = """load_from:
  - python_module:
      module_name: {module}
      attribute: {attribute}
      working_directory: {cwd}
      location_name: {name}
"""

GRAPHQL_LOCATIONS = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name "
    "locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } } } } } } }"
)


@dataclass(frozen=True)
class Location:
    """A code location under test: the platform's or the baseline's."""

    name: str
    module: str
    attribute: str
    cwd: Path
    env: dict[str, str]
    one_entity: str
    """`--select` of a one-entity run."""


# ------------------------------------------------------------------------------------------ the world


def write_catalog(root: Path, size: int) -> tuple[Path, str]:
    """`size` entities in `ceil(size / 10)` file sources, one 100-row CSV each; the catalog directory and
    the `--select` of the first entity's raw and staged assets."""
    catalog, files = root / "catalog", root / "files"
    catalog.mkdir(parents=True)
    rows = "\n".join(f"{i},name {i},{i * 1.5}" for i in range(ROWS_PER_FILE))
    for s in range(math.ceil(size / ENTITIES_PER_SOURCE)):
        source = f"src{s:03d}"
        count = min(ENTITIES_PER_SOURCE, size - s * ENTITIES_PER_SOURCE)
        entities = []
        for e in range(count):
            entity = f"ent{e:02d}"
            directory = files / source / entity
            directory.mkdir(parents=True)
            (directory / "part-0001.csv").write_text(f"id,name,amount\n{rows}\n")
            entities.append(
                f"  {entity}:\n"
                f'    file: {{path: "{entity}/*.csv", format: csv}}\n'
                f"    primary_key: [id]\n"
                f"    columns:\n"
                f"      id: {{type: integer, nullable: false}}\n"
                f"      name: {{type: string}}\n"
                f"      amount: {{type: double, min: 0}}\n"
            )
        (catalog / f"{source}.yaml").write_text(
            f"source: {source}\n"
            f"description: Generated by bench/catalog_scale.py.\n"
            f'connection: {{kind: files, root: "{files / source}"}}\n'
            f'schedule: {{cron: "0 * * * *", timezone: UTC}}\n'
            f"entities:\n" + "".join(entities)
        )
    return catalog, "raw/src000/ent00,staged/src000/ent00"


def platform_tree(src: str, work: Path) -> tuple[Path, str]:
    """The platform code to measure and how to name it."""
    if src == "worktree":
        head = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--short", "--", ".", ":!bench"))
        return REPO_ROOT, f"the checkout at {head}{' with uncommitted changes' if dirty else ''}"
    if Path(src).is_dir():
        return Path(src).resolve(), f"the tree {src}"
    sha = _git("rev-parse", "--short", src)
    tree = work / f"src-{sha}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", sha], cwd=REPO_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    shutil.copytree(REPO_ROOT / "dbt_project" / "target", tree / "dbt_project" / "target")
    return tree, f"commit {sha} (`git archive`)"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def base_env(home: Path) -> dict[str, str]:
    """A minimal environment: the venv's tools, a fresh instance with the repository's configuration."""
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "DAGSTER_HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "",
        "TZ": "UTC",
    }


# --------------------------------------------------------------------------------------- measurements


def load_seconds(location: Location) -> float:
    code = f"import {location.module} as m; d = m.{location.attribute}; d() if callable(d) else d"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=location.cwd, env=location.env, check=True)
    return time.perf_counter() - started


def inspect(location: Location) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", INSPECT, location.module, location.attribute],
        cwd=location.cwd,
        env=location.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def first_step(location: Location) -> dict[str, float]:
    """Launch a one-entity run as a subprocess; seconds to its first step (event log) and to its exit."""
    from dagster import DagsterEventType, DagsterInstance

    launched = time.time()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            location.module,
            "-a",
            location.attribute,
            "--select",
            location.one_entity,
        ],
        cwd=location.cwd,
        env=location.env,
        check=True,
        capture_output=True,
    )
    exited = time.time()
    with _instance_env(location.env), DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        steps = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
    first = min(entry.timestamp for entry in steps)
    return {"first_step_s": first - launched, "run_exit_s": exited - launched}


@contextmanager
def _instance_env(env: dict[str, str]) -> Iterator[None]:
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_workspace(location: Location, directory: Path) -> Path:
    path = directory / f"workspace_{location.name}.yaml"
    path.write_text(
        WORKSPACE.format(
            module=location.module, attribute=location.attribute, cwd=location.cwd, name=location.name
        )
    )
    return path


@contextmanager
def started(command: list[str], location: Location) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running Dagster process in its own process group, ended (with its children) afterwards."""
    process = subprocess.Popen(
        command,
        cwd=location.cwd,
        env=location.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def graphql(port: int) -> dict[str, Any] | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": GRAPHQL_LOCATIONS}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def webserver(location: Location, work: Path, timeout: float) -> dict[str, float]:
    """Seconds until the webserver's GraphQL first answers, and until it answers with the location loaded."""
    port = free_port()
    workspace = write_workspace(location, work)
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
    result: dict[str, float] = {}
    launched = time.time()
    with started([*command, "-w", str(workspace)], location):
        while time.time() - launched < timeout:
            answer = graphql(port)
            if answer is not None:
                result.setdefault("ui_first_answer_s", time.time() - launched)
                entries = answer.get("data", {}).get("workspaceOrError", {}).get("locationEntries", [])
                loaded = [e for e in entries if (e.get("locationOrLoadError") or {}).get("repositories")]
                if loaded:
                    result["ui_location_loaded_s"] = time.time() - launched
                    return result
            time.sleep(0.25)
    return result


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants (and of their reaped children)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for pid, fields in process_stats():
        parents[pid] = int(fields[1])
        times[pid] = cpu_ticks(fields) / CLOCK_TICKS
    members, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        members.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in members)


def sensor_ticks(env: dict[str, str], since: float) -> dict[str, list[float]]:
    """Durations of every sensor tick that started after `since`, per sensor."""
    from dagster import DagsterInstance

    durations: dict[str, list[float]] = {}
    with _instance_env(env), DagsterInstance.get() as instance:
        for state in instance.all_instigator_state():
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since)
            done = [t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp]
            if done:
                durations[state.instigator_name] = done
    return durations


def _daemons_beating(env: dict[str, str]) -> bool:
    """Every daemon of `dagster-daemon run` has sent a heartbeat: it is up, past its start-up."""
    from dagster import DagsterInstance

    with _instance_env(env), DagsterInstance.get() as instance:
        return bool(instance.get_daemon_heartbeats()) and all(
            instance.get_daemon_heartbeats().get(name) for name in instance.get_required_daemon_types()
        )


def daemon(
    location: Location, work: Path, idle_seconds: float, warmup_timeout: float, wait_for: Callable[..., bool]
) -> dict[str, Any]:
    """Idle CPU share of the daemon's process tree once its sensors tick, and the sensors' tick times."""
    workspace = write_workspace(location, work)
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)]
    launched = time.time()
    with started(command, location) as process:
        while time.time() - launched < warmup_timeout and not (
            _daemons_beating(location.env) and wait_for(sensor_ticks(location.env, launched))
        ):
            time.sleep(2)
        warm = time.time() - launched
        cpu_before, clock_before = tree_cpu_seconds(process.pid), time.time()
        time.sleep(idle_seconds)
        cpu_after, clock_after = tree_cpu_seconds(process.pid), time.time()
        ticks = sensor_ticks(location.env, launched)
    return {
        "daemon_warmup_s": warm,
        "daemon_idle_core": (cpu_after - cpu_before) / (clock_after - clock_before),
        "ticks": {name: statistics.median(values) for name, values in sorted(ticks.items())},
        "tick_counts": {name: len(values) for name, values in sorted(ticks.items())},
    }


# ---------------------------------------------------------------------------------------------- driver


def measure_size(size: int, tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"catalog-scale-{size}-") as tmp:
        work = Path(tmp)
        catalog, select = write_catalog(work / "world", size)
        (work / "bare").mkdir()
        (work / "bare" / "bare_location.py").write_text(BARE_LOCATION)
        platform_env = {
            **base_env(work / "home_platform"),
            "PLATFORM_DATA_DIR": str(work / "data"),
            "PLATFORM_CATALOG_DIR": str(catalog),
        }
        locations = {
            "baseline": Location(
                "baseline", "bare_location", "defs", work / "bare", base_env(work / "home_base"), "one"
            ),
            "platform": Location(
                "platform", "platform_assets.definitions", "defs", tree, platform_env, select
            ),
        }
        result: dict[str, Any] = {"size": size}
        for name, location in locations.items():
            print(f"[{size}] {name}: inspect", file=sys.stderr)
            result[name] = {"inspect": inspect(location), "load_s": []}
        for _ in range(args.repeat):
            for name, location in locations.items():
                result[name]["load_s"].append(load_seconds(location))
        for name, location in locations.items():
            print(f"[{size}] {name}: load {result[name]['load_s']}; first step", file=sys.stderr)
            result[name].update(first_step(location))
        for name, location in locations.items():
            print(f"[{size}] {name}: webserver", file=sys.stderr)
            result[name].update(webserver(location, work, args.ui_timeout))
        for name, location in locations.items():
            print(f"[{size}] {name}: daemon", file=sys.stderr)

            def ticked(ticks: dict[str, list[float]], name: str = name) -> bool:
                wanted = AUTOMATION_SENSORS if name == "platform" else ()
                return all(sensor in ticks for sensor in wanted)

            result[name].update(daemon(location, work, args.idle_seconds, args.warmup_timeout, ticked))
        print(json.dumps(result), file=sys.stderr)
        return result


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def ratio(ours: float | None, base: float | None) -> str:
    return "-" if ours is None or not base else f"{ours / base:.1f}x"


def report(results: list[dict[str, Any]], measured: str, args: argparse.Namespace) -> str:
    lines = [
        "# Catalog scale",
        "",
        f"`bench/catalog_scale.py --sizes {' '.join(map(str, args.sizes))}` on {measured}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({os.cpu_count()} CPUs, shared), "
        f"Python {platform.python_version()}. Baseline: a code location that imports dagster and defines "
        f"one asset, measured the same way, alternating. Idle window {args.idle_seconds:.0f} s.",
        "",
        "| entities | measure | baseline | platform | platform / baseline |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        base, ours = r["baseline"], r["platform"]
        rows: list[tuple[str, float | None, float | None, str]] = [
            (
                "load the definitions, median s",
                statistics.median(base["load_s"]),
                statistics.median(ours["load_s"]),
                "",
            ),
            ("1-entity run: launch -> first step, s", base.get("first_step_s"), ours.get("first_step_s"), ""),
            ("1-entity run: launch -> exit, s", base.get("run_exit_s"), ours.get("run_exit_s"), ""),
            (
                "webserver: first GraphQL answer, s",
                base.get("ui_first_answer_s"),
                ours.get("ui_first_answer_s"),
                "",
            ),
            (
                "webserver: answers with the location loaded, s",
                base.get("ui_location_loaded_s"),
                ours.get("ui_location_loaded_s"),
                "",
            ),
            (
                "daemon idle, share of one core",
                base.get("daemon_idle_core"),
                ours.get("daemon_idle_core"),
                "",
            ),
            ("jobs in the repository", base["inspect"]["jobs"], ours["inspect"]["jobs"], ""),
            (
                "repository snapshot, MiB",
                base["inspect"]["snapshot_mib"],
                ours["inspect"]["snapshot_mib"],
                "",
            ),
        ]
        for label, b, o, _ in rows:
            lines.append(f"| {r['size']} | {label} | {fmt(b)} | {fmt(o)} | {ratio(o, b)} |")
        for sensor, seconds in ours.get("ticks", {}).items():
            count = ours["tick_counts"][sensor]
            lines.append(f"| {r['size']} | tick `{sensor}`, median s (n={count}) | - | {fmt(seconds)} | - |")
        lines.append(
            f"| {r['size']} | UI: assets / groups; largest group; most repeated label in a group | - | "
            f"{ours['inspect']['assets']} / {ours['inspect']['groups']}; {ours['inspect']['largest_group']}; "
            f"{ours['inspect']['most_repeated_label']} | - |"
        )
    at_goal = next((r for r in results if r["size"] == GOAL_SIZE), None)
    if at_goal is not None:
        ours = at_goal["platform"]
        lines += ["", f"Goals at {GOAL_SIZE} entities:", "", "| goal | figure | met? |", "|---|---|---|"]
        goals = [
            (
                f"1-entity run's first step within {GOAL_FIRST_STEP_S:.0f} s of launch",
                ours.get("first_step_s"),
                GOAL_FIRST_STEP_S,
                "s",
            ),
            (
                f"UI answers (location loaded) within {GOAL_UI_S:.0f} s",
                ours.get("ui_location_loaded_s"),
                GOAL_UI_S,
                "s",
            ),
            (
                f"daemon idle under {GOAL_DAEMON_CORE:.0%} of a core",
                ours.get("daemon_idle_core"),
                GOAL_DAEMON_CORE,
                "",
            ),
        ]
        for label, value, limit, unit in goals:
            met = value is not None and value < limit
            lines.append(f"| {label} | {fmt(value, unit)} | {'met' if met else '**missed**'} |")
        labels_ok = ours["inspect"]["most_repeated_label_count"] == 1
        lines.append(
            f"| groups and labels a person can navigate (no label repeated within a group) | "
            f"{ours['inspect']['largest_group']}; {ours['inspect']['most_repeated_label']} | "
            f"{'met' if labels_ok else '**missed**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500, 1000])
    parser.add_argument("--src", default="worktree", help="worktree (default), a directory or a git revision")
    parser.add_argument("--repeat", type=int, default=3, help="definitions loads per location and size")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--warmup-timeout", type=float, default=300.0)
    parser.add_argument("--ui-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "catalog_scale.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="catalog-scale-src-") as work:
        tree, measured = platform_tree(args.src, Path(work))
        results = [measure_size(size, tree, args) for size in args.sizes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(results, measured, args))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
