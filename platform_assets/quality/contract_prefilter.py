"""Which rows of a staged table may break its row rules, as one portable SQL condition.

The contract check is Pandera's verdict, but streaming every row of a large table through pandas to learn
that staging (which quarantines rows breaking error-severity rules) left nothing to find costs more than
staging itself. So the check first asks the warehouse, in one aggregate, how many rows satisfy `suspect`;
only when some do does Pandera validate the table (see `contract_validation`).

`suspect` over-approximates: every row Pandera would fail satisfies it (a false alarm only costs the full
Pandera pass), and the SQL is the portable core that DuckDB, PostgreSQL and BigQuery share (IS NULL,
comparisons, NOT IN, LENGTH, CASE). Rules with no such form (`regex`, custom `check:` functions, allowed
values of non-text columns) make it None: Pandera then validates every row, as before. (The catalog
allows bounds on numbers only and lengths on text only.)
"""

from __future__ import annotations

from collections.abc import Callable

from platform_assets.catalog import rules
from platform_assets.catalog.model import Column, ColumnType, Entity, Severity
from platform_assets.staging.sql import CAST_ERRORS_COLUMN, sql_string

LARGEST_DOUBLE = "1.7976931348623157e308"
"""NaN compares greater than every number in DuckDB and PostgreSQL (`> LARGEST_DOUBLE` finds it) and
unequal to itself in BigQuery (`NOT (x = x)` finds it): Pandera fails a NaN against a bound either way."""


def suspect_condition(entity: Entity, severity: Severity, quote: Callable[[str], str]) -> str | None:
    """A SQL condition true for every row that may break a row rule of `severity`, or None when some rule
    has no portable SQL form. `quote` quotes an identifier in the warehouse's dialect."""
    columns = rules.columns_of(entity, severity)
    conditions = [f"{quote(CAST_ERRORS_COLUMN)} IS NOT NULL"] if columns else []
    for name, column in columns.items():
        found = _column_conditions(name, column, entity, quote(name))
        if found is None:
            return None
        conditions += found
    return " OR ".join(f"({condition})" for condition in conditions) if conditions else "1 = 0"


def _column_conditions(name: str, column: Column, entity: Entity, value: str) -> list[str] | None:
    if column.regex is not None or column.check is not None:
        return None
    if column.allowed_values is not None and column.type != ColumnType.STRING:
        return None
    found = [] if entity.is_nullable(name) else [f"{value} IS NULL"]
    if column.min is not None:
        found.append(f"{value} < {column.min!r}")
    if column.max is not None:
        found.append(f"{value} > {column.max!r}")
    if (column.min is not None or column.max is not None) and column.type == ColumnType.DOUBLE:
        found += [f"{value} > {LARGEST_DOUBLE}", f"NOT ({value} = {value})"]
    if column.allowed_values is not None:
        allowed = ", ".join(sql_string(v) for v in column.allowed_values)
        found.append(f"{value} NOT IN ({allowed})" if allowed else f"{value} IS NOT NULL")
    if column.min_length is not None:
        found.append(f"LENGTH({value}) < {column.min_length}")
    if column.max_length is not None:
        found.append(f"LENGTH({value}) > {column.max_length}")
    return found
