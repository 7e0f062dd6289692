"""Reproducible random streams, one per entity and chunk."""

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Stable stream ids; renumbering one would silently change every existing seed's world."""

    PRODUCTS = 1
    CUSTOMERS = 2
    ORDERS = 3
    WEB_EVENTS = 4


def stream_rng(seed: int, stream: Stream, chunk: int = 0) -> np.random.Generator:
    """Derive a generator from (seed, entity, chunk).

    Each chunk gets its own stream so chunks can be generated one at a time without carrying generator
    state around, and so changing how one entity draws numbers never shifts another entity's data.
    """
    return np.random.default_rng([seed, int(stream), chunk])
