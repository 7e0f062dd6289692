"""Pandera schemas compiled from the catalog: the row-level contract of a staged table, one schema per
severity.

`row_schema(entity, "error")` holds the declared types (dtypes), and every rule of the error-severity columns
(primary-key columns always are); `row_schema(entity, "warn")` the rules of the `severity: warn` columns,
without dtypes. Each check is named after its catalog key (`min`, `max`, `allowed_values`, `regex`,
`min_length`, `max_length`, `check`; `nullable` is Pandera's `not_nullable`), so a failure reads
`amount: min`, as in the quarantine table. Values that did not parse are found in `_cast_errors`, one check
per column (`amount: type`).

Uniqueness is not here: a batch cannot see duplicates in other batches, so `contract_validation` pushes
it down to the warehouse instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow

from platform_assets.catalog import rules
from platform_assets.catalog.model import Column, ColumnType, Entity, Severity
from platform_assets.staging.sql import CAST_ERRORS_COLUMN

PANDAS_DTYPES: dict[ColumnType, str | None] = {
    ColumnType.INTEGER: "Int64",
    ColumnType.DOUBLE: "Float64",
    ColumnType.STRING: "string",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: None,
    ColumnType.TIMESTAMP: "datetime64[us]",
}

ARROW_TO_PANDAS = {
    pyarrow.int64(): pd.Int64Dtype(),
    pyarrow.float64(): pd.Float64Dtype(),
    pyarrow.string(): pd.StringDtype(),
    pyarrow.bool_(): pd.BooleanDtype(),
}
"""How warehouse batches become pandas for validation: nullable dtypes, so NULL stays NULL."""

PANDERA_NOT_NULLABLE = "not_nullable"

CustomChecks = Mapping[str, Callable[[Any], Any]]
"""Column name -> the imported function of its `check:` (see `quality_rules.resolve_checks`)."""


def to_pandas(batch: pyarrow.RecordBatch) -> pd.DataFrame:
    return batch.to_pandas(types_mapper=ARROW_TO_PANDAS.get)


def row_schema(
    entity: Entity, severity: Severity = "error", checks: CustomChecks | None = None
) -> pa.DataFrameSchema:
    """The Pandera schema of `entity`'s rules of `severity`; `checks` are the custom checks' functions
    (required when a column of that severity declares `check:`)."""
    columns = {
        name: _column(name, column, entity, severity, checks or {}) for name, column in entity.columns.items()
    }
    parses = [
        pa.Check(_parsed(name), ignore_na=False, name=rules.rule_label(name, rules.TYPE))
        for name in rules.columns_of(entity, severity)
    ]
    columns[CAST_ERRORS_COLUMN] = pa.Column(
        "string" if severity == "error" else None,
        parses,
        nullable=True,
        description="Values that did not parse as their declared type (column=value).",
    )
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def has_rules(entity: Entity, severity: Severity) -> bool:
    """Whether any row rule or unique key has `severity` (every column has at least its type rule)."""
    return bool(rules.columns_of(entity, severity) or rules.unique_keys(entity, severity))


def failure_label(column: str, check: str) -> str:
    """`column: rule` of a Pandera failure case (the parse checks carry their label as their name)."""
    if ": " in check:
        return check
    if check == PANDERA_NOT_NULLABLE:
        return rules.rule_label(column, rules.NULLABLE)
    return rules.rule_label(column, check)


def apply_check(function: Callable[[Any], Any], values: pd.Series) -> pd.Series:
    """A custom check on the non-null `values` (NULL is the nullability rule's business): a boolean Series
    on `values`' index, True = valid."""
    valid = pd.Series(True, index=values.index, dtype=bool)
    present = values.dropna()
    if len(present):
        outcome = function(present)
        valid.loc[present.index] = pd.Series(outcome, index=present.index).fillna(False).astype(bool)
    return valid


def _column(name: str, column: Column, entity: Entity, severity: Severity, checks: CustomChecks) -> pa.Column:
    dtype = PANDAS_DTYPES[column.type] if severity == "error" else None
    if rules.column_severity(entity, name) != severity:
        return pa.Column(dtype, nullable=True, description=column.description)
    found = []
    # Pandera's built-in checks (`Check.ge`) keep their own names: named lambdas say `amount: min`.
    if column.min is not None:
        lowest = column.min
        found.append(pa.Check(lambda s: s >= lowest, name=rules.MIN))
    if column.max is not None:
        highest = column.max
        found.append(pa.Check(lambda s: s <= highest, name=rules.MAX))
    if column.allowed_values is not None:
        allowed = list(column.allowed_values)
        found.append(pa.Check(lambda s: s.astype("string").isin(allowed), name=rules.ALLOWED_VALUES))
    if column.regex is not None:
        pattern = re.compile(column.regex)
        found.append(
            pa.Check(lambda s: s.astype("string").str.fullmatch(pattern).fillna(False), name=rules.REGEX)
        )
    if column.min_length is not None:
        shortest = column.min_length
        found.append(pa.Check(lambda s: s.astype("string").str.len() >= shortest, name=rules.MIN_LENGTH))
    if column.max_length is not None:
        longest = column.max_length
        found.append(pa.Check(lambda s: s.astype("string").str.len() <= longest, name=rules.MAX_LENGTH))
    if column.check is not None:
        function = checks.get(name)
        if function is None:
            raise rules.CatalogRuleError(
                f"column {name!r} declares check {column.check!r} but its function was not resolved"
            )
        found.append(pa.Check(lambda s: apply_check(function, s), name=rules.CHECK))
    return pa.Column(dtype, found, nullable=entity.is_nullable(name), description=column.description)


def _parsed(name: str) -> Callable[[pd.Series], pd.Series]:
    """True where `_cast_errors` names no value of column `name` (`name=value`, `; `-separated)."""
    pattern = rf"(?:^|; ){re.escape(name)}="

    def check(cast_errors: pd.Series) -> pd.Series:
        return ~cast_errors.astype("string").str.contains(pattern, regex=True).fillna(False).astype(bool)

    return check
