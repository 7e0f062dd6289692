"""Customer accounts, as the shop's operational database stores them."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from demo_shop.clock import DAY_SECONDS, WINDOW_SECONDS, timestamps
from demo_shop.randomness import Stream, stream_rng
from demo_shop.text import labels

_FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Lea")
_LAST_NAMES = ("Müller", "Schmidt", "Dubois", "Jansen", "Visser", "Rossi", "Garcia", "Nowak", "Kelly")
_EMAIL_LAST_NAMES = tuple(name.lower().replace("ü", "ue") for name in _LAST_NAMES)
COUNTRIES = ("DE", "FR", "NL", "BE", "AT", "IT", "ES", "PL", "SE", "IE")
_COUNTRY_WEIGHTS = (0.30, 0.15, 0.12, 0.08, 0.07, 0.08, 0.08, 0.05, 0.04, 0.03)
_SIGNUP_PERIOD_SECONDS = 365 * DAY_SECONDS
_PROFILE_EDIT_SHARE = 0.4


def customer_chunk(seed: int, chunk: int, first_row: int, count: int, total: int) -> pa.Table:
    """Generate customers ``first_row + 1 .. first_row + count`` of ``total``.

    Sign-ups spread over the year before the order window, in id order, so every order postdates its
    customer. Some profiles are edited later (up to the end of the window) to give ``updated_at``-based
    incremental loads something to pick up.
    """
    rng = stream_rng(seed, Stream.CUSTOMERS, chunk)
    customer_id = np.arange(first_row + 1, first_row + count + 1)
    first = rng.integers(0, len(_FIRST_NAMES), count)
    last = rng.integers(0, len(_LAST_NAMES), count)
    signup_position = (customer_id - 1 + rng.random(count)) / total
    created = (signup_position * _SIGNUP_PERIOD_SECONDS).astype(np.int64) - _SIGNUP_PERIOD_SECONDS
    edit_delay = (rng.random(count) * (WINDOW_SECONDS - created)).astype(np.int64)
    edited = rng.random(count) < _PROFILE_EDIT_SHARE
    first_name = labels(_FIRST_NAMES, first)
    email = pc.binary_join_element_wise(
        pc.utf8_lower(first_name),
        ".",
        labels(_EMAIL_LAST_NAMES, last),
        ".",
        pa.array(customer_id).cast(pa.string()),
        "@example.com",
        "",
    )
    return pa.table(
        {
            "customer_id": customer_id,
            "email": email,
            "first_name": first_name,
            "last_name": labels(_LAST_NAMES, last),
            "country": labels(COUNTRIES, rng.choice(len(COUNTRIES), count, p=_COUNTRY_WEIGHTS)),
            "created_at": timestamps(created),
            "updated_at": timestamps(np.where(edited, created + edit_delay, created)),
        }
    )
