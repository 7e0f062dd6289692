"""Scenario 4: the whole demo graph (every raw and staged asset, every contract check, the dbt models and
their tests) materialized in one in-process run, on the demo world at `--scale` (1.0 = 10,000 orders).

Run as a child of `run_all.py`: generates the demo world into a fresh data directory and serves the demo
products API on loopback (both before the clock starts), then times, in this process:

- `definitions`: `build_definitions(settings)` (catalog, asset factories, dbt manifest read);
- `run`: `resolve_implicit_global_asset_job_def().execute_in_process(...)` from launch to success, against
  a local instance in the data directory (as `dataplatform run` does).

Prints one JSON line with both, the seconds of each step, and `VmHWM` of this process (dbt runs in a child
of it: the parent samples the RSS of the whole tree). `--profile FILE` writes a pyinstrument profile of the
run (sampling the main thread every 5 ms; the dbt subprocess shows as the time spent waiting on it).
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

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    os.environ["PLATFORM_DATA_DIR"] = str(args.data_dir)
    os.environ.pop("PLATFORM_ENV", None)
    os.environ.pop("DAGSTER_HOME", None)
    imported = time.perf_counter()

    import dagster as dg

    from demo_shop.commands import demo_api, generate_demo
    from platform_assets.cli import QUIET_LOGS
    from platform_assets.definitions import build_definitions
    from platform_assets.factories.dbt_models import prepare_manifest
    from platform_assets.run_summary import all_green
    from resources.environment import PlatformSettings

    settings = PlatformSettings.from_env()
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            generate_demo(settings, seed=42, scale=args.scale)
            prepare_manifest(
                settings.dbt_target, settings.dbt_vars()
            )  # as `dataplatform run` prepares before its run
        finally:
            sys.stdout = stdout
    imports_seconds = time.perf_counter() - imported
    with demo_api(settings):
        started = time.perf_counter()
        definitions = build_definitions(settings)
        job = definitions.resolve_implicit_global_asset_job_def()
        definitions_seconds = time.perf_counter() - started
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        with dg.DagsterInstance.local_temp(tempdir=str(settings.dagster_home)) as instance:
            profiler = None
            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.005)
                profiler.start()
            launched = time.perf_counter()
            result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET_LOGS)
            run_seconds = time.perf_counter() - launched
            if profiler is not None:
                profiler.stop()
                args.profile.write_text(profiler.output_text(unicode=True, color=False))
            stats = [s for s in instance.get_run_step_stats(result.run_id) if s.end_time and s.start_time]
            steps = {stat.step_key: round(stat.end_time - stat.start_time, 2) for stat in stats}
            windows = {stat.step_key: [stat.start_time, stat.end_time] for stat in stats}
    print(
        "\nBENCH_RESULT "
        + json.dumps(
            {
                "rows": 10_000 * args.scale,
                "seconds": run_seconds,
                "definitions_seconds": definitions_seconds,
                "setup_seconds": imports_seconds,
                "success": bool(result.success and all_green(result)),
                "assets": len(result.get_asset_materialization_events()),
                "checks": len(result.get_asset_check_evaluations()),
                "steps": steps,
                "windows": windows,
                "peak_mb": status_mb("VmHWM"),
            }
        )
    )


if __name__ == "__main__":
    main()
