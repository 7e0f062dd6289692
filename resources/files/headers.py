"""Delivered column names made into names a warehouse takes unquoted (`file.normalize_headers: snake_case`).

Exports name columns for people: `Order ID`, `MixedCase`, `Größe`, `Body Mass (g)`. Staged as they are,
each needs quoting in every SQL that reads it, and the catalog (whose column names are plain identifiers)
cannot declare them. Under `snake_case` staging reads every delivered column as `snake_case(name)`:
`order_id`, `mixed_case`, `grosse`, `body_mass_g`; the catalog declares those. Landed files keep the
delivered names (`resources/landing/delivered.py` renames them in its scans), so changing the setting
re-reads what was landed; the raw and staged materializations show the renames.

Hand-written (20 lines) rather than a slug library: the rules must stay stable across library upgrades,
since a renamed column is a schema change of every staged table.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

HeaderNormalization = Literal["snake_case"]

MAX_NAME_LENGTH = 63
"""PostgreSQL's limit, the strictest of the warehouses (BigQuery: 300)."""
_SPELLED = str.maketrans(
    {"ß": "ss", "ẞ": "SS", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe"}
)
_WORD_BOUNDARIES = (
    re.compile(r"([a-z0-9])([A-Z])"),  # orderId -> order_Id
    re.compile(r"([A-Z]+)([A-Z][a-z])"),  # HTTPServer -> HTTP_Server
)


class HeaderCollisionError(ValueError):
    """Two delivered columns normalize to the same name: which ones, and what to do."""


def snake_case(name: str, position: int = 1) -> str:
    """`name` in lower snake case, ASCII only: accents dropped (`é` -> `e`), `ß` -> `ss`, words split at
    case changes and at anything not a letter or digit, at most 63 characters; a name starting with a digit
    gets a leading `_`; one with no letter or digit at all is `column_<position>` (1-based)."""
    ascii_name = unicodedata.normalize("NFKD", name.translate(_SPELLED)).encode("ascii", "ignore").decode()
    for boundary in _WORD_BOUNDARIES:
        ascii_name = boundary.sub(r"\1_\2", ascii_name)
    words = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not words:
        return f"column_{position}"
    if words[0].isdigit():
        words = "_" + words
    return words[:MAX_NAME_LENGTH].rstrip("_")


def normalized_names(names: Sequence[str], normalization: HeaderNormalization | None) -> dict[str, str]:
    """Delivered name -> landed name, for every delivered column (itself without a normalization); raises
    `HeaderCollisionError` when two columns would take the same name."""
    if normalization is None:
        return {name: name for name in names}
    mapping = {name: snake_case(name, position) for position, name in enumerate(names, start=1)}
    taken: dict[str, list[str]] = {}
    for delivered, landed in mapping.items():
        taken.setdefault(landed, []).append(delivered)
    clashes = {landed: delivered for landed, delivered in taken.items() if len(delivered) > 1}
    if clashes:
        described = "; ".join(
            f"{' and '.join(map(repr, both))} -> {landed!r}" for landed, both in clashes.items()
        )
        raise HeaderCollisionError(
            f"has columns whose names normalize_headers: snake_case makes the same ({described}); rename "
            f"them in the delivery, or declare the CSV's names with `column_names`."
        )
    return mapping
