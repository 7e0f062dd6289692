"""Hints for declared columns a delivery lacks while it brings one of a near name (`Order ID` for
`order_id`, `order_idd`), and for evolved columns whose delivered names SQL must quote.

A header spelled differently from the catalog is the commonest reason a declared column goes missing: a
required one then fails the step as drift, and a nullable one is staged as NULL in every row. Neither says
that the column is there under another name; this module finds it, and says what to declare.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable

from platform_assets.catalog.model import Entity
from resources.files.headers import snake_case

_SIMILARITY = 0.8
"""difflib's ratio from which a delivered name is offered as the one meant (`order_idd` for `order_id`:
0.94; `order_date` for `order_id`: 0.67)."""


def missing_column_hint(entity: Entity, missing: Iterable[str], delivered: Collection[str]) -> str:
    """A sentence per declared column in `missing` for which `delivered` has an undeclared column of a
    near name: the one whose snake_case it is (then: declare `normalize_headers`), else the closest by
    spelling (did you mean); empty when none has one."""
    spare = [name for name in delivered if name not in entity.columns]
    hints = []
    for name in missing:
        same = next((other for other in spare if snake_case(other) == name), None)
        if same is not None:
            hints.append(_normalizing_hint(entity, name, same))
            continue
        close = difflib.get_close_matches(name, spare, n=1, cutoff=_SIMILARITY)
        if close:
            hints.append(
                f" {name} is not delivered, but {close[0]!r} is: did you mean {close[0]!r}? Fix the header "
                f"or the column's name in the catalog."
            )
    return "".join(hints)


def quoted_columns_hint(entity: Entity, evolved: Iterable[str]) -> str:
    """A sentence about evolved (undeclared, staged) columns whose delivered names every SQL reading them
    must quote (`Body Mass (g)`), with what to declare; empty when none has such a name."""
    quoted = [name for name in evolved if not re.fullmatch(r"[a-z_][a-z0-9_]*", name)]
    if not quoted:
        return ""
    listed = ", ".join(repr(name) for name in quoted[:5])
    how = (
        "declare `normalize_headers: snake_case` in the entity's `file:` block to stage them as "
        + ", ".join(snake_case(name) for name in quoted[:5])
        if entity.file is not None
        else "rename them at the source"
    )
    return f" Column(s) {listed} are staged under their delivered names, which SQL must quote: {how}."


def _normalizing_hint(entity: Entity, name: str, delivered: str) -> str:
    """(A file entity's delivered names are already normalized when it declares `normalize_headers`.)"""
    if entity.file is not None:
        how = f"declare `normalize_headers: snake_case` in the entity's `file:` block to stage it as {name}"
    elif entity.table is not None:
        how = f"select it as {name} with the `table:` block's `query`"
    else:
        how = "rename it at the source"
    return f" {name} is not delivered, but {delivered!r} is (did you mean it?): {how}."
