"""Clickstream events from the shop's web tracker, grouped into sessions."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from demo_shop.catalog import CATEGORIES, Catalog
from demo_shop.clock import WINDOW_SECONDS, timestamps
from demo_shop.randomness import Stream, stream_rng
from demo_shop.text import join_text, json_objects, labels, zero_padded

EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "checkout", "purchase")
_EVENT_WEIGHTS = (0.55, 0.25, 0.12, 0.05, 0.03)
"""Funnel-shaped: each stage is rarer than the one before."""
_PAGE_VIEW, _PRODUCT_VIEW = EVENT_TYPES.index("page_view"), EVENT_TYPES.index("product_view")
_FIXED_URLS = ("", "", "/cart", "/checkout", "/checkout/confirmation")
_LANDING_PAGES = ("/", "/search", "/deals", *(f"/category/{category}" for category in CATEGORIES))

_EXTRA_EVENTS_PER_SESSION_MEAN = 4.0
_MEAN_SECONDS_BETWEEN_EVENTS = 45.0
_ANONYMOUS_SHARE = 0.4


@dataclass(frozen=True)
class EventChunk:
    """A chunk of events rendered as JSON Lines, plus how many sessions it used up."""

    json_lines: bytes
    session_count: int


def _session_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    """Split ``count`` events into sessions of random length; the last session is cut to fit."""
    lengths = 1 + rng.poisson(_EXTRA_EVENTS_PER_SESSION_MEAN, count)
    ends = np.cumsum(lengths)
    sessions = int(np.searchsorted(ends, count)) + 1
    lengths = lengths[:sessions]
    lengths[-1] -= ends[sessions - 1] - count
    return lengths


def event_chunk(
    seed: int,
    chunk: int,
    first_row: int,
    count: int,
    total_events: int,
    customer_count: int,
    catalog: Catalog,
    first_session_id: int,
) -> EventChunk:
    """Generate events ``first_row + 1 .. first_row + count`` of ``total_events``.

    Sessions start spread evenly over the window in chunk order; within a chunk, events are sorted by time
    before ids are assigned, so ``event_id`` follows ``event_ts`` like a tracker's log. A session is
    either anonymous (null ``customer_id``) or belongs to one customer throughout.
    """
    rng = stream_rng(seed, Stream.WEB_EVENTS, chunk)
    lengths = _session_lengths(rng, count)
    session_count = len(lengths)
    first_event = np.cumsum(lengths) - lengths
    session = np.repeat(np.arange(session_count), lengths)

    session_start = (first_row + first_event + rng.random(session_count)) * (WINDOW_SECONDS / total_events)
    gaps = rng.exponential(_MEAN_SECONDS_BETWEEN_EVENTS, count)
    gaps[first_event] = 0.0
    elapsed = np.cumsum(gaps)
    offsets = (session_start[session] + elapsed - elapsed[first_event][session]).astype(np.int64)

    anonymous = rng.random(session_count) < _ANONYMOUS_SHARE
    session_customer = rng.integers(1, customer_count + 1, session_count)
    event_type = rng.choice(len(EVENT_TYPES), count, p=_EVENT_WEIGHTS)
    landing_page = rng.integers(0, len(_LANDING_PAGES), count)
    product_id = catalog.sample(rng, count) + 1

    by_time = np.argsort(offsets, kind="stable")
    session, event_type = session[by_time], event_type[by_time]
    landing_page, product_id = landing_page[by_time], product_id[by_time]
    product_urls = pc.binary_join_element_wise("/products/", pa.array(product_id).cast(pa.string()), "")
    url = pc.if_else(
        pa.array(event_type == _PAGE_VIEW),
        labels(_LANDING_PAGES, landing_page),
        pc.if_else(pa.array(event_type == _PRODUCT_VIEW), product_urls, labels(_FIXED_URLS, event_type)),
    )
    customer_id = pa.array(session_customer[session], mask=anonymous[session])
    rows = json_objects(
        {
            "event_id": zero_padded("ev-", np.arange(first_row + 1, first_row + count + 1), 9),
            "session_id": zero_padded("sess-", first_session_id + session, 9),
            "customer_id": customer_id,
            "event_type": labels(EVENT_TYPES, event_type),
            "event_ts": timestamps(offsets[by_time]),
            "url": url,
        }
    )
    return EventChunk(json_lines=(join_text(rows, "\n") + "\n").encode(), session_count=session_count)
