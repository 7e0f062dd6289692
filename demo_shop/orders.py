"""Orders with their line items and payments, generated together because they must agree to the cent."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from demo_shop.catalog import Catalog
from demo_shop.clock import DAY_SECONDS, WINDOW_SECONDS, timestamps
from demo_shop.randomness import Stream, stream_rng
from demo_shop.text import cents_to_decimal, labels

_STATUS_PROFILES = {
    "placed": (0.05, 0),
    "paid": (0.10, 1),
    "shipped": (0.15, 5),
    "delivered": (0.60, 10),
    "cancelled": (0.05, 2),
    "returned": (0.05, 30),
}
"""Per status: share of orders, and the most days after ordering its last change may happen (0: never)."""
STATUSES = tuple(_STATUS_PROFILES)
_STATUS_WEIGHTS = [share for share, _ in _STATUS_PROFILES.values()]
_MAX_UPDATE_DELAY_SECONDS = np.array([days for _, days in _STATUS_PROFILES.values()]) * DAY_SECONDS
_CANCELLED, _RETURNED = STATUSES.index("cancelled"), STATUSES.index("returned")

_EXTRA_ITEMS_MEAN = 1.5
_QUANTITY_WEIGHTS = (0.55, 0.25, 0.10, 0.06, 0.04)

PAYMENT_METHODS = ("card", "paypal", "bank_transfer", "gift_card")
PAYMENT_STATUSES = ("succeeded", "refunded")
_METHOD_WEIGHTS = (0.60, 0.25, 0.10, 0.05)
_MAX_PAYMENT_DELAY_SECONDS = 1_800


@dataclass(frozen=True)
class OrderChunk:
    """One chunk's rows for the three entities an order produces."""

    orders: pa.Table
    items: pa.Table
    payments: pa.Table


def order_chunk(
    seed: int,
    chunk: int,
    first_row: int,
    count: int,
    total_orders: int,
    customer_count: int,
    catalog: Catalog,
    first_payment_id: int,
) -> OrderChunk:
    """Generate orders ``first_row + 1 .. first_row + count`` of ``total_orders``.

    Order ids rise with ``order_ts`` across chunks, as in a real shop, so ``order_ts`` works as an
    incremental-load cursor. Amounts are summed in integer cents, so order, items and payment agree
    exactly. Long-standing (low-id) customers are favoured, since loyal customers order more.
    """
    rng = stream_rng(seed, Stream.ORDERS, chunk)
    order_id = np.arange(first_row + 1, first_row + count + 1)
    ordered = ((order_id - 1 + rng.random(count)) * (WINDOW_SECONDS / total_orders)).astype(np.int64)
    customer_id = 1 + (rng.random(count) ** 2 * customer_count).astype(np.int64)
    status = rng.choice(len(STATUSES), count, p=_STATUS_WEIGHTS)
    updated = ordered + (rng.random(count) * _MAX_UPDATE_DELAY_SECONDS[status]).astype(np.int64)

    items_per_order = 1 + rng.poisson(_EXTRA_ITEMS_MEAN, count)
    first_item = np.cumsum(items_per_order) - items_per_order
    item_count = int(items_per_order.sum())
    product_index = catalog.sample(rng, item_count)
    quantity = 1 + rng.choice(len(_QUANTITY_WEIGHTS), item_count, p=_QUANTITY_WEIGHTS)
    unit_cents = catalog.price_cents[product_index]
    amount_cents = np.add.reduceat(quantity * unit_cents, first_item)

    paid = status != _CANCELLED
    paid_count = int(paid.sum())
    paid_at = ordered[paid] + rng.integers(0, _MAX_PAYMENT_DELAY_SECONDS, paid_count)
    method = rng.choice(len(PAYMENT_METHODS), paid_count, p=_METHOD_WEIGHTS)
    refunded = status[paid] == _RETURNED

    orders = pa.table(
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "order_ts": timestamps(ordered),
            "status": labels(STATUSES, status),
            "currency": pa.repeat("EUR", count),
            "amount": cents_to_decimal(amount_cents),
            "updated_at": timestamps(updated),
        }
    )
    items = pa.table(
        {
            "order_id": np.repeat(order_id, items_per_order),
            "line_no": np.arange(item_count) - np.repeat(first_item, items_per_order) + 1,
            "product_id": product_index + 1,
            "quantity": quantity,
            "unit_price": unit_cents / 100,
        }
    )
    payments = pa.table(
        {
            "payment_id": np.arange(first_payment_id, first_payment_id + paid_count),
            "order_id": order_id[paid],
            "method": labels(PAYMENT_METHODS, method),
            "amount": amount_cents[paid] / 100,
            "status": labels(PAYMENT_STATUSES, refunded.astype(np.int64)),
            "paid_at": timestamps(paid_at),
            "updated_at": timestamps(np.where(refunded, np.maximum(updated[paid], paid_at), paid_at)),
        }
    )
    return OrderChunk(orders=orders, items=items, payments=payments)
