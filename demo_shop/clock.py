"""The simulated calendar: each timestamp is a fixed base date plus a random offset, never wall-clock time."""

import numpy as np
import pyarrow as pa

BASE_DATE = np.datetime64("2026-01-01T00:00:00", "s")
DAY_SECONDS = 24 * 3600
WINDOW_SECONDS = 90 * DAY_SECONDS
"""Length of the trading window that orders and web events are spread over."""


def timestamps(offsets_seconds: np.ndarray) -> pa.TimestampArray:
    """Turn second offsets from the base date into timezone-naive UTC timestamps.

    Arrow renders ``timestamp[s]`` as ``YYYY-MM-DD HH:MM:SS``, the format every output file uses.
    """
    return pa.array(BASE_DATE + offsets_seconds.astype("timedelta64[s]"))
