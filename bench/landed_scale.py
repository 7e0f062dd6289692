"""Per-run cost of a file entity as its history grows (issue 21): one run that lands and stages 10 new
files, after N files were delivered and landed before.

For each N (default 1,000 and 100,000), a drop folder of N one-row CSV files is landed and staged once
(`history`: reported, not compared), then 10 more files are delivered and the measured run lands and stages
them (raw + staged, real Dagster materializations on the embedded DuckDB warehouse). The ratio of the
measured run at the largest N to the smallest is the figure: flat means the same cost whatever the history.
The extraction state recorded in the raw materialization is reported too (its size was the ledger's).

    .venv/bin/python bench/landed_scale.py --sizes 1000 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.exports_platform import materialize_entity

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from resources.environment import PlatformSettings

NEW_FILES = 10


def _entity(root: Path) -> CatalogEntity:
    source = Source.model_validate(
        {
            "source": "drops",
            "connection": {"kind": "files", "root": str(root)},
            "entities": {
                "events": {
                    "file": {"path": "events/*.csv", "format": "csv"},
                    "primary_key": ["event_id"],
                    "columns": {"event_id": {"type": "integer"}, "value": {"type": "double"}},
                }
            },
        }
    )
    return CatalogEntity(source, "events", source.entities["events"])


def _deliver(root: Path, first: int, count: int) -> None:
    folder = root / "events"
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(first, first + count):
        (folder / f"{number:07d}.csv").write_text(f"event_id,value\n{number},{number}.5\n")


def _timed_run(
    item: CatalogEntity, settings: PlatformSettings, instance: dg.DagsterInstance
) -> tuple[float, dict[str, float]]:
    """Wall time of one run, and each step's own time (Dagster's step stats): where the time went."""
    started = time.perf_counter()
    result = materialize_entity(item, settings, instance)
    elapsed = time.perf_counter() - started
    if not result.success:
        raise SystemExit("the run failed")
    steps = {
        stats.step_key: round((stats.end_time or 0) - (stats.start_time or 0), 2)
        for stats in instance.get_run_step_stats(result.run_id)
    }
    return elapsed, steps


def measure(size: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory, dg.instance_for_test() as instance:
        root = Path(directory) / "sources"
        settings = PlatformSettings.local(Path(directory) / "data")
        item = _entity(root)
        _deliver(root, 0, size)
        history, history_steps = _timed_run(item, settings, instance)
        _deliver(root, size, NEW_FILES)
        measured, steps = _timed_run(item, settings, instance)
        event = instance.get_latest_materialization_event(dg.AssetKey(["raw", "drops", "events"]))
        assert event is not None and event.asset_materialization is not None
        state = event.asset_materialization.metadata["extraction_state"].value
        return {
            "landed_before": size,
            "history_run_s": round(history, 2),
            "history_steps_s": history_steps,
            "run_of_10_new_files_s": round(measured, 2),
            "steps_s": steps,
            "extraction_state_bytes": len(json.dumps(state)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    args = parser.parse_args()
    results = [measure(size) for size in args.sizes]
    for row in results:
        print(json.dumps(row))
    smallest, largest = results[0], results[-1]
    ratio = float(largest["run_of_10_new_files_s"]) / float(smallest["run_of_10_new_files_s"])  # type: ignore[arg-type]
    print(
        f"run of {NEW_FILES} new files after {largest['landed_before']:,} landed files: {ratio:.2f}x the run "
        f"after {smallest['landed_before']:,}"
    )


if __name__ == "__main__":
    main()
