"""The product catalogue, served by the demo REST API and referenced by every order item."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from demo_shop.clock import WINDOW_SECONDS, timestamps
from demo_shop.randomness import Stream, stream_rng
from demo_shop.text import cents_to_decimal, join_text, json_objects, labels, zero_padded

CATEGORIES = ("electronics", "home", "garden", "toys", "books", "fashion", "sports", "beauty")
_NOUNS = np.array(
    [
        ("Headphones", "Charger", "Speaker", "Keyboard", "Webcam"),
        ("Lamp", "Cushion", "Kettle", "Rug", "Mirror"),
        ("Hose", "Planter", "Shears", "Lantern", "Bench"),
        ("Puzzle", "Robot", "Kite", "Blocks", "Plush Bear"),
        ("Novel", "Cookbook", "Atlas", "Notebook", "Comic"),
        ("Jacket", "Scarf", "Sneakers", "Backpack", "Cap"),
        ("Yoga Mat", "Dumbbell", "Bottle", "Racket", "Helmet"),
        ("Serum", "Lip Balm", "Shampoo", "Perfume", "Face Mask"),
    ]
)
_ADJECTIVES = np.array(("Classic", "Compact", "Deluxe", "Eco", "Smart", "Vintage", "Urban", "Premium"))
_MIN_PRICE_CENTS, _MAX_PRICE_CENTS = 100, 50_000
_ACTIVE_SHARE = 0.9


@dataclass(frozen=True)
class Catalog:
    """Products plus what order generation needs: integer prices and a popularity distribution."""

    api_columns: dict[str, pa.Array]
    price_cents: np.ndarray
    popularity_cdf: np.ndarray

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw 0-based product indexes, popular products more often, as real basket data is skewed."""
        draws = rng.random(size) * self.popularity_cdf[-1]
        return np.minimum(
            np.searchsorted(self.popularity_cdf, draws, side="right"), len(self.price_cents) - 1
        )

    def api_json(self) -> bytes:
        """Render the REST payload: a JSON list with one product object per line, for readable diffs."""
        return ("[\n" + join_text(json_objects(self.api_columns), ",\n") + "\n]\n").encode()


def build_catalog(seed: int, count: int) -> Catalog:
    """Generate ``count`` products with log-normal prices and Zipf-like popularity.

    Inactive (delisted) products stay orderable because historical orders still reference them.
    """
    rng = stream_rng(seed, Stream.PRODUCTS)
    product_id = np.arange(1, count + 1)
    category = rng.integers(0, len(CATEGORIES), count)
    noun = _NOUNS[category, rng.integers(0, _NOUNS.shape[1], count)]
    adjective = _ADJECTIVES[rng.integers(0, len(_ADJECTIVES), count)]
    raw_prices = np.round(rng.lognormal(mean=np.log(3_000), sigma=1.0, size=count))
    price_cents = np.clip(raw_prices, _MIN_PRICE_CENTS, _MAX_PRICE_CENTS).astype(np.int64)
    popularity_rank = rng.permutation(count) + 1
    api_columns = {
        "product_id": pa.array(product_id),
        "sku": zero_padded("SKU-", product_id, 5),
        "name": pc.binary_join_element_wise(pa.array(adjective), pa.array(noun), " "),
        "category": labels(CATEGORIES, category),
        "unit_price": cents_to_decimal(price_cents),
        "active": pa.array(rng.random(count) < _ACTIVE_SHARE),
        "updated_at": timestamps(rng.integers(0, WINDOW_SECONDS, count)),
    }
    return Catalog(
        api_columns=api_columns,
        price_cents=price_cents,
        popularity_cdf=np.cumsum(popularity_rank.astype(np.float64) ** -0.9),
    )
