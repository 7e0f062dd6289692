"""Every live process's fields from `/proc/<pid>/stat`, for the benchmarks that measure a process tree or
group (catalog_scale.py, soak_measure.py). Fields are those after the command name, so `fields[0]` is the
state, `fields[1]` the parent pid, `fields[2]` the process group, `fields[11:15]` user and system CPU ticks
(own and reaped children's), `fields[21]` the resident pages (proc(5), numbered from field 3)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, fields) of each process still alive while /proc is read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry.name), fields


def cpu_ticks(fields: list[str]) -> int:
    """User + system ticks of the process and of its reaped children."""
    return sum(int(value) for value in fields[11:15])
