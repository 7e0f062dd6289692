"""How long loading the code location takes, against the floor any dagster-dbt code location pays.

Each measurement is a fresh interpreter (what `dagster dev`, a run worker or `dagster definitions validate`
starts), run alternately with the baseline so that machine noise hits both alike:

- baseline: `import dagster, dagster_dbt` and nothing else;
- platform: import `platform_assets.definitions` and build every asset, check and resource from the
  catalog and the dbt manifest (which must be built: `./dev prepare`).

Usage: `uv run python bench/definitions_load.py [--repeat N]`. Prints median wall seconds and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "import dagster, dagster_dbt"
PLATFORM = "from platform_assets.definitions import defs; defs()"


def wall_seconds(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"PLATFORM_DATA_DIR": data_dir, "PATH": str(Path(sys.executable).parent)}
        baseline, platform = [], []
        for _ in range(args.repeat):
            baseline.append(wall_seconds(BASELINE, env))
            platform.append(wall_seconds(PLATFORM, env))
    base, ours = statistics.median(baseline), statistics.median(platform)
    print(f"| process | median wall s (n={args.repeat}) |")
    print("|---|---|")
    print(f"| baseline: import dagster, dagster_dbt | {base:.2f} |")
    print(f"| platform: load the code location | {ours:.2f} |")
    print(f"\nplatform / baseline = {ours / base:.2f}x; platform overhead = {ours - base:.2f} s")


if __name__ == "__main__":
    main()
