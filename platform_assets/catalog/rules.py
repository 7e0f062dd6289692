"""The catalog's data-quality rules, named once for every place that enforces them.

A column's rules (`type`, `nullable`, `min`, `max`, `allowed_values`, `regex`, `min_length`, `max_length`,
`check`) carry the column's `severity`. The same rule has the same name everywhere: in the staging SQL that
quarantines rows (`_violations`), in the quarantine table (`rule`, `column`), in the Pandera schemas of the
two checks and in their `violations_by_rule` metadata (`"<column>: <rule>"`).

Kept free of pandas and Pandera: the code location imports it when it loads (to resolve custom checks
early, with a clear message), and that import must stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from platform_assets.catalog.model import Column, Entity, Severity

TYPE = "type"
NULLABLE = "nullable"
MIN = "min"
MAX = "max"
ALLOWED_VALUES = "allowed_values"
REGEX = "regex"
MIN_LENGTH = "min_length"
MAX_LENGTH = "max_length"
CHECK = "check"
UNIQUE = "unique"
ROW_RULES = (TYPE, NULLABLE, MIN, MAX, ALLOWED_VALUES, REGEX, MIN_LENGTH, MAX_LENGTH, CHECK)
"""Rules decided by one row alone: an error-severity violation quarantines the row."""


class CatalogRuleError(ValueError):
    """A rule that cannot be enforced as declared (a custom check that does not import)."""


def rule_label(column: str, rule: str) -> str:
    """How a rule is named in check metadata and in `_violations`: `amount: min`."""
    return f"{column}: {rule}"


def split_label(label: str) -> tuple[str, str]:
    column, _, rule = label.partition(": ")
    return column, rule


def declared_rules(name: str, column: Column, entity: Entity) -> list[str]:
    """The row rules `column` declares (type is always one: its values must parse)."""
    rules = [TYPE]
    if not entity.is_nullable(name):
        rules.append(NULLABLE)
    for rule in (MIN, MAX, ALLOWED_VALUES, REGEX, MIN_LENGTH, MAX_LENGTH, CHECK):
        if getattr(column, rule) is not None:
            rules.append(rule)
    return rules


def columns_of(entity: Entity, severity: Severity) -> dict[str, Column]:
    """Declared columns whose rules have `severity`. Primary-key columns are always `error`."""
    return {
        name: column for name, column in entity.columns.items() if column_severity(entity, name) == severity
    }


def column_severity(entity: Entity, name: str) -> Severity:
    return "error" if name in entity.primary_key else entity.columns[name].severity


def unique_keys(entity: Entity, severity: Severity) -> list[list[str]]:
    """Unique keys checked at `severity`: the primary key and composite keys are errors; a `unique:` column
    has its column's severity."""
    keys = []
    for key in entity.unique_keys():
        key_severity = (
            column_severity(entity, key[0]) if len(key) == 1 and key != entity.primary_key else "error"
        )
        if key_severity == severity and key not in keys:
            keys.append(key)
    return keys


def resolve_check(path: str, where: str) -> Callable[[Any], Any]:
    """The function a column's `check:` names, imported; `where` (`source.entity.column`) names the column
    in the error."""
    function = _import(path, where, "check")
    if not callable(function) or isinstance(function, type):
        raise CatalogRuleError(
            f"{where}: check {path!r} is a {type(function).__name__}, not a function; it must take the "
            f"column as a pandas Series and return a boolean Series (True = valid)"
        )
    return function


def resolve_model(path: str, where: str) -> type:
    """The class an entity's `pandera_model:` names, imported (whether it is a Pandera `DataFrameModel` is
    checked when it is used: importing Pandera here would slow every code-location load)."""
    model = _import(path, where, "pandera_model")
    if not isinstance(model, type) or not hasattr(model, "to_schema"):
        raise CatalogRuleError(
            f"{where}: pandera_model {path!r} is a {type(model).__name__}, not a Pandera DataFrameModel class"
        )
    return model


def _import(path: str, where: str, key: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an ImportError, or whatever the module raises while importing
        raise CatalogRuleError(
            f"{where}: {key} {path!r}: module {module_name!r} cannot be imported "
            f"({type(error).__name__}: {error}); give a `package.module.name` importable by the code "
            f"location"
        ) from error
    if not hasattr(module, attribute):
        raise CatalogRuleError(
            f"{where}: {key} {path!r}: module {module_name!r} has no attribute {attribute!r}; give a "
            f"`package.module.name` importable by the code location"
        )
    return getattr(module, attribute)


def resolve_checks(source: str, entity_name: str, entity: Entity) -> dict[str, Callable[[Any], Any]]:
    """Every custom check of the entity by column, imported (fails early and clearly, see `resolve_check`)."""
    return {
        name: resolve_check(column.check, f"{source}.{entity_name}.{name}")
        for name, column in entity.columns.items()
        if column.check is not None
    }
