"""Hints for values that look like a missing value written as text (`NA`, `NULL`, `\\N`, ...).

Exports from R, pandas, SAS and databases write a missing value as a marker, not as an empty field. Unless
the entity declares the marker in `null_values`, it is a value that does not parse as the column's type:
a cast error, a quarantined row, or, when a delivery has many, schema drift, none of whose messages would
otherwise say why. Where those messages are written (the staged asset), the offending values are checked
against the markers common exports write, and the message says which to declare.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import duckdb

from platform_assets.staging.sql import sql_string
from resources.landing.delivered import Renaming, landed_relation
from resources.landing.query import DEFAULT_MEMORY_LIMIT
from resources.warehouses.duckdb_warehouse import quote_identifier

LIKELY_NULL_MARKERS = ("NA", "N/A", "n/a", "#N/A", "NULL", "null", "None", "NaN", "nan", "\\N", "-", ".")
"""Texts that exports write for a missing value (R and pandas `NA`/`NaN`, databases `NULL` and `\\N`, SAS
`.`, spreadsheets `#N/A` and `-`)."""
_MAX_HINTED = 3


def null_marker_hint(values: Iterable[str]) -> str:
    """A sentence for a message about `values` that did not parse: which of them look like a null marker
    and the `null_values` to declare; empty when none does."""
    markers = sorted({value for value in values if value in LIKELY_NULL_MARKERS})[:_MAX_HINTED]
    if not markers:
        return ""
    listed = ", ".join(repr(value) for value in markers)
    return (
        f" Values like {listed} look like a null marker; declare `null_values: [{listed}]` on the entity "
        f"(or its source) to stage them as missing."
    )


def cast_error_values(cast_errors: str, column: str) -> list[str]:
    """The values of `column` a row's `_cast_errors` text (`column=value; ...`, `staging/sql.py`) holds."""
    prefix = f"{column}="
    return [part[len(prefix) :] for part in cast_errors.split("; ") if part.startswith(prefix)]


def null_markers_in(
    files: list[Path],
    columns: Collection[str],
    declared: Collection[str],
    headers: Renaming | None = None,
) -> dict[str, list[str]]:
    """Per text column of the landed `files` among `columns` (named as `headers` stages them): the likely
    null markers it holds that are not `declared` null values (a pass over those columns only; for a
    message, not for every run)."""
    wanted = [marker for marker in LIKELY_NULL_MARKERS if marker not in declared]
    if not columns or not files or not wanted:
        return {}
    listed = ", ".join(sql_string(marker) for marker in wanted)
    selects = [
        f"list_sort(list_distinct(list(CAST({quote_identifier(name)} AS VARCHAR)) FILTER "
        f"(WHERE CAST({quote_identifier(name)} AS VARCHAR) IN ({listed}))))"
        for name in columns
    ]
    with duckdb.connect(":memory:", config={"memory_limit": DEFAULT_MEMORY_LIMIT}) as con:
        row = con.execute(
            f"SELECT {', '.join(selects)} FROM {landed_relation(files, headers=headers)}"
        ).fetchone()
    found: Mapping[str, list[str] | None] = dict(zip(columns, row or (), strict=False))
    return {name: list(values) for name, values in found.items() if values}
