"""Command line: ``python -m demo_shop --out DIR [--seed N] [--scale X]``."""

import argparse
import sys
from pathlib import Path, PurePosixPath

from demo_shop.world import DemoWorld, generate_demo_world


def _positive_scale(text: str) -> float:
    """Parse ``--scale``; argparse names the flag in the error message when this raises."""
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < scale < float("inf"):
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return scale


def _non_negative_seed(text: str) -> int:
    """Parse ``--seed``: numpy seeds must be non-negative integers."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {seed}")
    return seed


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; ``prog`` lets a parent CLI that delegates here show its own command name."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m demo_shop",
        description="Generate a deterministic demo e-commerce world (files, SQLite database, API data).",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write the world into")
    parser.add_argument("--seed", type=_non_negative_seed, default=42, help="random seed (default: 42)")
    parser.add_argument(
        "--scale",
        type=_positive_scale,
        default=1.0,
        help="size multiplier; 1.0 = 10,000 orders (default: 1.0)",
    )
    return parser


def _location(files: list[str]) -> str:
    """Describe where an entity's files live: the file itself, or its directory when chunked."""
    if len(files) == 1:
        return files[0]
    return f"{PurePosixPath(files[0]).parent}/"


def summary_lines(world: DemoWorld) -> list[str]:
    """One line per entity: name, rows, number of files and where they are."""
    lines = []
    for entity, rows in world.row_counts.items():
        files = world.files[entity]
        lines.append(f"{entity:<12}{rows:>12,} rows {len(files):>5} file(s)  {_location(files)}")
    return lines


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run the generator and print a summary; return the process exit code.

    Invalid arguments exit through argparse (status 2, message naming the flag); an unwritable output
    directory is reported on stderr with status 1.
    """
    args = build_parser(prog).parse_args(argv)
    try:
        world = generate_demo_world(args.out, seed=args.seed, scale=args.scale)
    except OSError as error:
        print(f"error: could not write the demo world to {args.out}: {error}", file=sys.stderr)
        return 1
    print(f"demo world (seed={world.seed}, scale={world.scale}) written to {world.out_dir}")
    for line in summary_lines(world):
        print(line)
    return 0
