"""Peak memory of landing one big CSV file, against a process that only imports what landing imports.

Landing must stay flat in memory whatever the file size. A CSV delivery lands as its bytes (`land_file`):
its header is read, then the file is streamed into a zstd-compressed copy, hashed as it is copied, beside
its sidecar; staging parses it later, once (its memory is bounded by DuckDB's limit: the memory-cap fault
test). The script writes a deterministic CSV of about `--size-gb` GB (10 mixed columns: ids, text with
commas and quotes, decimals, timestamps, booleans), then runs two fresh child processes and reads their
peak RSS (`VmHWM`, `peak_memory.py`):

- baseline: imports the file store and the landing code, lands nothing;
- landing: `land_file` of the whole file into a landing zone, committed.

Target: the landing child's peak RSS within 300 MB of the baseline's. (Until CSV deliveries landed as their
bytes, this measured `read_batches` parsing the file into Arrow batches and a `ParquetWriter` writing them.)

Usage: `.venv/bin/python bench/file_extract_memory.py [--size-gb 2] [--dir DIR]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from demo_shop.text import cents_to_decimal

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_DELTA_MB = 300
ROWS_PER_CHUNK = 200_000
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "returned"]
NOTES = ["", "gift, please wrap", 'says "urgent"', "leave at door", "call first; no bell"]


def write_csv(path: Path, target_bytes: int, seed: int = 7) -> int:
    """Stream generated chunks into `path` until it holds `target_bytes`; returns the row count."""
    rng = np.random.default_rng(seed)
    rows = 0
    with pacsv.CSVWriter(path, _chunk(rng, 0, 1).schema) as writer:
        while path.stat().st_size < target_bytes:
            writer.write_table(_chunk(rng, rows, ROWS_PER_CHUNK))
            rows += ROWS_PER_CHUNK
    return rows


def _chunk(rng: np.random.Generator, first_id: int, count: int) -> pa.Table:
    customers = pa.array(rng.integers(1, 10**6, count)).cast(pa.string())
    seconds = rng.integers(1_704_067_200, 1_735_689_600, count).astype("datetime64[s]")
    return pa.table(
        {
            "order_id": np.arange(first_id + 1, first_id + count + 1),
            "customer_id": pc.binary_join_element_wise("cust-", customers, ""),
            "amount": cents_to_decimal(rng.integers(100, 100_000, count)).cast(pa.string()),
            "quantity": rng.integers(1, 20, count),
            "status": pa.array(STATUSES).take(pa.array(rng.integers(0, len(STATUSES), count))),
            "placed_at": pa.array(seconds).cast(pa.string()),
            "country": pa.array(["DE", "FR", "NL", "PL"]).take(pa.array(rng.integers(0, 4, count))),
            "note": pa.array(NOTES).take(pa.array(rng.integers(0, len(NOTES), count))),
            "is_gift": rng.random(count) < 0.1,
            "score": np.round(rng.random(count), 6),
        }
    )


def measure(mode: str, source: Path, out_dir: Path) -> None:
    """Runs in the measured child process; prints the bytes read and landed, seconds and peak RSS as JSON."""
    from datetime import UTC, datetime

    from peak_memory import peak_rss_mb, reset_peak

    reset_peak()
    from platform_assets.ingestion.files import land_file
    from resources.files.config import FileFormat
    from resources.files.formats.reader import DEFAULT_BATCH_ROWS
    from resources.files.store import FileStore
    from resources.landing.zone import LandingZone, Lineage

    read, landed, started = 0, 0, time.perf_counter()
    if mode == "landing":
        store = FileStore(root=str(source.parent))
        [file] = store.list(source.name)
        lineage = Lineage("bench.orders", datetime.now(UTC), "bench")
        zone = LandingZone(root=str(out_dir / "landing"))
        with zone.extraction("bench", "orders") as inflight:
            land_file(
                store,
                file,
                FileFormat(format="csv"),
                on_malformed="fail",
                inflight=inflight,
                lineage=lineage,
                batch_rows=DEFAULT_BATCH_ROWS,
                quarantine=print,
            )
            (copy,) = inflight.commit(lineage.extracted_at.date().isoformat())
        read, landed = file.size, copy.bytes
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    print(json.dumps({"read": read, "landed": landed, "seconds": seconds, "peak_mb": peak_mb}))


def run_child(mode: str, source: Path, out_dir: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, "--source", str(source), "--dir", str(out_dir)]
    finished = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument(
        "--dir", type=Path, help="where to write the CSV and the landing zone (default: temp)"
    )
    parser.add_argument("--child", choices=["baseline", "landing"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.source, args.dir)
        return
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="file-extract-bench-") as work:
        source = Path(work) / "orders.csv"
        started = time.perf_counter()
        generated = write_csv(source, int(args.size_gb * 1e9))
        size_gb = source.stat().st_size / 1e9
        took = time.perf_counter() - started
        print(f"generated {source.name}: {size_gb:.2f} GB, {generated:,} rows in {took:.0f} s")
        baseline = run_child("baseline", source, Path(work))
        landing = run_child("landing", source, Path(work))
    delta = landing["peak_mb"] - baseline["peak_mb"]
    print(f"\nCSV {size_gb:.2f} GB ({generated:,} rows) -> zstd copy {landing['landed'] / 1e9:.2f} GB\n")
    print("| process | MB read | seconds | MB/s | peak RSS MB | delta over baseline MB |")
    print("|---|---|---|---|---|---|")
    print(f"| baseline (imports only) | 0 | - | - | {baseline['peak_mb']:.0f} | 0 |")
    megabytes = landing["read"] / 1e6
    print(
        f"| landing (land_file: header, zstd copy, sidecar) | {megabytes:,.0f} | {landing['seconds']:.1f} | "
        f"{megabytes / landing['seconds']:,.0f} | {landing['peak_mb']:.0f} | {delta:.0f} |"
    )
    verdict = "PASS" if delta <= TARGET_DELTA_MB else "FAIL"
    print(f"\ntarget: peak within {TARGET_DELTA_MB} MB of baseline -> {verdict} ({delta:.0f} MB)")


if __name__ == "__main__":
    main()
