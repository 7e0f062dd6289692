"""Generate the whole demo "outside world": every source system the data platform ingests from."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from demo_shop.catalog import Catalog, build_catalog
from demo_shop.customers import customer_chunk
from demo_shop.events import event_chunk
from demo_shop.orders import order_chunk
from demo_shop.shop_db import ShopDatabase, shop_database
from demo_shop.sizes import WorldSize, chunk_bounds
from demo_shop.writers import (
    chunk_path,
    prune_stale_chunks,
    write_bytes,
    write_csv,
    write_gzip,
    write_parquet,
)

DEFAULT_CHUNK_ROWS = 100_000
SHOP_DB = Path("shop.sqlite")
PRODUCTS_API = Path("api/products.json")
MANIFEST = Path("manifest.json")
ORDERS_DIR = Path("files/shop/orders")
ORDER_ITEMS_DIR = Path("files/shop/order_items")
WEB_EVENTS_DIR = Path("files/shop/web_events")


@dataclass(frozen=True)
class DemoWorld:
    """What was generated: row counts per entity and, per entity, its files relative to ``out_dir``."""

    out_dir: Path
    seed: int
    scale: float
    row_counts: dict[str, int]
    files: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Tally:
    """Running row count and file list of one entity while its chunks are written."""

    rows: int = 0
    files: list[Path] = field(default_factory=list)


def generate_demo_world(
    out_dir: Path, seed: int = 42, scale: float = 1.0, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> DemoWorld:
    """Write a deterministic e-commerce world under ``out_dir``, replacing any previous one in place.

    The same ``seed`` and ``scale`` (and ``chunk_rows``) always give byte-identical files. Large entities
    are generated and written ``chunk_rows`` orders or events at a time, so memory stays bounded at any
    scale. The manifest is removed first and written last, so its presence marks a complete generation.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    size = WorldSize.at_scale(scale)
    out_dir = Path(out_dir)
    (out_dir / MANIFEST).unlink(missing_ok=True)

    catalog = build_catalog(seed, size.products)
    write_bytes(out_dir / PRODUCTS_API, catalog.api_json())
    tallies = {"products": _Tally(size.products, [PRODUCTS_API])}
    with shop_database(out_dir / SHOP_DB) as database:
        tallies["customers"] = _write_customers(database, seed, size, chunk_rows)
        tallies.update(_write_orders(out_dir, database, seed, size, catalog, chunk_rows))
    tallies["web_events"] = _write_web_events(out_dir, seed, size, catalog, chunk_rows)

    world = DemoWorld(
        out_dir=out_dir,
        seed=seed,
        scale=scale,
        row_counts={entity: tally.rows for entity, tally in tallies.items()},
        files={entity: [path.as_posix() for path in tally.files] for entity, tally in tallies.items()},
    )
    manifest = {
        "seed": seed,
        "scale": scale,
        "chunk_rows": chunk_rows,
        "row_counts": world.row_counts,
        "files": world.files,
    }
    write_bytes(out_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return world


def _write_customers(database: ShopDatabase, seed: int, size: WorldSize, chunk_rows: int) -> _Tally:
    """Load customers into the database chunk by chunk."""
    for chunk, (first_row, count) in enumerate(chunk_bounds(size.customers, chunk_rows), start=1):
        database.insert("customers", customer_chunk(seed, chunk, first_row, count, size.customers))
    return _Tally(size.customers, [SHOP_DB])


def _write_orders(
    out_dir: Path, database: ShopDatabase, seed: int, size: WorldSize, catalog: Catalog, chunk_rows: int
) -> dict[str, _Tally]:
    """Write order CSVs and item Parquet files chunk by chunk (same chunk number = same orders)."""
    orders, items, payments = _Tally(), _Tally(), _Tally(files=[SHOP_DB])
    for chunk, (first_row, count) in enumerate(chunk_bounds(size.orders, chunk_rows), start=1):
        generated = order_chunk(
            seed, chunk, first_row, count, size.orders, size.customers, catalog, payments.rows + 1
        )
        orders.files.append(chunk_path(ORDERS_DIR, "orders", chunk, "csv"))
        items.files.append(chunk_path(ORDER_ITEMS_DIR, "order_items", chunk, "parquet"))
        write_csv(out_dir / orders.files[-1], generated.orders)
        write_parquet(out_dir / items.files[-1], generated.items)
        database.insert("payments", generated.payments)
        orders.rows += generated.orders.num_rows
        items.rows += generated.items.num_rows
        payments.rows += generated.payments.num_rows
    prune_stale_chunks(out_dir / ORDERS_DIR, "orders", "csv", orders.files)
    prune_stale_chunks(out_dir / ORDER_ITEMS_DIR, "order_items", "parquet", items.files)
    return {"orders": orders, "order_items": items, "payments": payments}


def _write_web_events(out_dir: Path, seed: int, size: WorldSize, catalog: Catalog, chunk_rows: int) -> _Tally:
    """Write gzipped JSON Lines event files chunk by chunk; session ids continue across chunks."""
    events = _Tally()
    sessions = 0
    for chunk, (first_row, count) in enumerate(chunk_bounds(size.web_events, chunk_rows), start=1):
        generated = event_chunk(
            seed, chunk, first_row, count, size.web_events, size.customers, catalog, sessions + 1
        )
        events.files.append(chunk_path(WEB_EVENTS_DIR, "web_events", chunk, "jsonl.gz"))
        write_gzip(out_dir / events.files[-1], generated.json_lines)
        events.rows += count
        sessions += generated.session_count
    prune_stale_chunks(out_dir / WEB_EVENTS_DIR, "web_events", "jsonl.gz", events.files)
    return events
