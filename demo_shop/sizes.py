"""How big a world is at a given scale, and how its large entities are sliced into chunks."""

import math
from collections.abc import Iterator
from dataclasses import dataclass

ROWS_AT_SCALE_ONE = {"customers": 1_000, "products": 200, "orders": 10_000, "web_events": 30_000}


@dataclass(frozen=True)
class WorldSize:
    """Row targets for the entities whose size is chosen up front (items and payments follow from orders)."""

    customers: int
    products: int
    orders: int
    web_events: int

    @classmethod
    def at_scale(cls, scale: float) -> "WorldSize":
        """Multiply the scale-1 sizes, keeping at least one row per entity so every reference can resolve."""
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number greater than 0, got {scale!r}")
        return cls(**{name: max(1, round(rows * scale)) for name, rows in ROWS_AT_SCALE_ONE.items()})


def chunk_bounds(total: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """Yield ``(first_row, row_count)`` per chunk, so memory is bounded by ``chunk_rows``, not by scale."""
    for start in range(0, total, chunk_rows):
        yield start, min(chunk_rows, total - start)
