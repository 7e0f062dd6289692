"""Peak resident memory of the current process, read from /proc (Linux).

`ru_maxrss` is not usable in a child started by `subprocess`: the child inherits its parent's peak in it
(vfork + exec), so a parent that once held 800 MB makes a tiny child report 800 MB. `VmHWM`, reset with
`reset_peak()` when the child starts, is the child's own peak.
"""

from __future__ import annotations

from pathlib import Path


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM, VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Set this process's VmHWM back to its current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    return status_mb("VmHWM")
