"""The soak's delivery driver: every tick, new orders files into the `shop` drop folder, inserts, updates
and deletes on the PostgreSQL `customers` table, and product updates and additions behind the REST API;
and it remembers what it delivered, so the end of the soak knows the expected final state by key.

Orders files are the one source whose truth is only in what was delivered (a file later re-delivered with
changes replaces its earlier copy, a row that breaks a rule is quarantined, not staged), so `orders` holds
the expected status per order id. The database table and the API's file are their own truth: the driver
only remembers which keys it touched, and the comparison reads those keys back from the source.

Every write happens as a delivery tool's should (temporary name, then rename; one transaction), except
where a fault deliberately does otherwise (`bench/soak_faults.py`).
"""

from __future__ import annotations

import csv
import json
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg2

ORDER_COLUMNS = ["order_id", "customer_id", "order_ts", "status", "currency", "amount", "updated_at"]
ORDER_STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "returned"]
FIRST_ORDER_ID = 950_000
FIRST_CUSTOMER_ID = 900_000
FIRST_PRODUCT_ID = 90_000
ORDERS_PER_FILE = 3
OrderRow = list[str]


def utc_now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def order_row(order_id: int, status: str) -> OrderRow:
    """An order of customer 1-3 (never deleted) with amount 0: no order_items arrive with it, and the dbt
    test `assert_fct_orders_amount_matches_items` rightly fails orders that disagree with their lines."""
    ts = utc_now_text()
    return [str(order_id), str(1 + order_id % 3), ts, status, "EUR", "0.00", ts]


def write_csv(path: Path, rows: list[OrderRow]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ORDER_COLUMNS)
        writer.writerows(rows)


@dataclass
class DeliveryDriver:
    """Deliveries into the three sources; `lock` serialises them with the faults that also deliver."""

    orders_dir: Path
    products_json: Path
    shop_dsn: str
    rng: random.Random
    orders: dict[int, str] = field(default_factory=dict)
    files: dict[str, list[OrderRow]] = field(default_factory=dict)
    customers_touched: set[int] = field(default_factory=set)
    customers_inserted: list[int] = field(default_factory=list)
    products_touched: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    ticks: int = 0
    next_id: int = FIRST_ORDER_ID
    quarantine_expected: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def next_order_ids(self, n: int) -> list[int]:
        first, self.next_id = self.next_id, self.next_id + n
        return list(range(first, first + n))

    def tick(self) -> None:
        """One round of deliveries into every source; a source that is down (a fault) is noted, not fatal."""
        self.ticks += 1
        with self.lock:
            self.deliver_orders(f"orders_soak_{self.ticks:04d}.csv", self.new_orders(ORDERS_PER_FILE))
        for name, step in (("customers", self.change_customers), ("products", self.change_products)):
            try:
                step()
            except (psycopg2.Error, OSError) as error:
                self.errors.append(f"{time.time():.0f} {name}: {error!r}"[:300])

    def new_orders(self, n: int) -> list[OrderRow]:
        return [order_row(order_id, self.rng.choice(ORDER_STATUSES)) for order_id in self.next_order_ids(n)]

    def deliver_orders(self, name: str, rows: list[OrderRow]) -> Path:
        """A complete file, written under a temporary name and renamed; its rows become the expected state
        (a re-delivery of `name` replaces the earlier copy's rows)."""
        target = self.write_file(name, rows)
        self.record_file(name, rows)
        return target

    def write_file(self, name: str, rows: list[OrderRow]) -> Path:
        """`rows` as the file `name`, written under a temporary name and renamed (the expected state is the
        caller's to record)."""
        target = self.orders_dir / name
        partial = self.orders_dir / f".{name}.part"
        write_csv(partial, rows)
        partial.rename(target)
        return target

    def record_file(self, name: str, rows: list[OrderRow]) -> None:
        for row in self.files.get(name, []):
            self.orders.pop(int(row[0]), None)
        self.files[name] = rows
        for row in rows:
            self.orders[int(row[0])] = row[3]
        self.count("order rows delivered", len(rows))

    def change_customers(self) -> None:
        """One insert, two updates of existing customers (4-100: never the orders' customers 1-3), and every
        third tick a delete of a customer the soak inserted."""
        new_id = FIRST_CUSTOMER_ID + self.ticks
        updated = self.rng.sample(range(4, 101), 2)
        with psycopg2.connect(self.shop_dsn) as connection, connection.cursor() as cursor:
            now = "(now() AT TIME ZONE 'UTC')"
            cursor.execute(
                f"INSERT INTO customers VALUES (%s, %s, 'Soak', 'Tester', 'DE', {now}, {now})",
                (new_id, f"soak.{new_id}@example.com"),
            )
            for customer_id in updated:
                cursor.execute(
                    f"UPDATE customers SET country = %s, updated_at = {now} WHERE customer_id = %s",
                    (self.rng.choice(["DE", "FR", "NL", "BE", "AT"]), customer_id),
                )
            deleted = None
            if self.ticks % 3 == 0 and self.customers_inserted:
                deleted = self.customers_inserted.pop(0)
                cursor.execute("DELETE FROM customers WHERE customer_id = %s", (deleted,))
        connection.close()
        self.customers_inserted.append(new_id)
        self.customers_touched.update([new_id, *updated, *([deleted] if deleted else [])])
        self.count("customer inserts")
        self.count("customer updates", 2)
        self.count("customer deletes", 1 if deleted else 0)

    def change_products(self) -> None:
        """A new price for one product and, every other tick, a new product; the file is replaced at once
        (the API reads it per request)."""
        products = json.loads(self.products_json.read_bytes(), parse_float=Decimal)
        changed = self.rng.choice(products)
        changed["unit_price"] = Decimal(self.rng.randint(100, 99_999)) / 100
        changed["updated_at"] = utc_now_text()
        self.products_touched.add(changed["product_id"])
        if self.ticks % 2 == 0:
            product_id = FIRST_PRODUCT_ID + self.ticks
            products.append(
                {"product_id": product_id, "sku": f"SKU-{product_id:06d}", "name": "Soak Product",
                 "category": "home", "unit_price": Decimal("9.99"), "active": True,
                 "updated_at": utc_now_text()}
            )  # fmt: skip
            self.products_touched.add(product_id)
            self.count("product inserts")
        partial = self.products_json.with_suffix(".part")
        partial.write_text(json.dumps(products, default=str_decimal, indent=1))
        partial.rename(self.products_json)
        self.count("product updates")


def str_decimal(value: object) -> float:
    """Prices as JSON numbers with the digits they have (the API serves the file's numbers as they are)."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serializable: {value!r}")
