"""Whether a process is still there, by pid. The landing lease asks it of the daemon that holds a lease, the
healing sensor of a run's worker: one answer for both."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """Whether a process `pid` exists on this machine, under any user (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
