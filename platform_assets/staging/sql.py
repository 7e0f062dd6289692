"""The SQL that turns landed files into a typed staged table.

Every declared column is cast with TRY_CAST (`strict_cast`), so one bad value does not abort the load; a
text-landed value is first read as the entity declares (`null_values` become NULL, then separators, date
formats and time zones: `Entity.text_format`, the same reading the schema registry counts parses with); the
values that did not parse are kept, verbatim, in `_cast_errors` (`column=value; ...`) where the schema check
finds and reports them. Undeclared columns stay in the landed files and are not staged.

`_violations` lists, per row, the error-severity row rules it breaks (`amount: min`), compiled from the
catalog to SQL here so that staging can split good rows from quarantined ones without a pandas round trip;
NULL when the row breaks none. Custom checks (`check:`, Python) cannot be compiled: staging applies them to
the stream itself (`platform_assets/quality/quarantine.py`).

Every landed row is selected, every version of a key included: which version of a key is current depends
on which versions are good, and is decided after the rules (`quarantine.StagingSplit`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from platform_assets.catalog import rules
from platform_assets.catalog.model import Column, ColumnType, Entity
from platform_assets.staging.schema_registry import (
    FILE_COLUMN,
    strict_cast,
    text_columns,
    without_null_markers,
)
from resources.landing.delivered import landed_relation
from resources.landing.zone import EXTRACTED_AT_COLUMN, SOURCE_COLUMN
from resources.warehouses.duckdb_warehouse import quote_identifier

CAST_ERRORS_COLUMN = "_cast_errors"
VIOLATIONS_COLUMN = "_violations"
ORIGIN_COLUMN = "_origin"
"""Where a row was delivered: the source file, or the API page (`page 3`); NULL for database rows."""
RECORD_COLUMN = "_record"
"""The row's line (text files), record (other files) or position within its API page."""
LOADED_AT_COLUMN = "_loaded_at"
RUN_ID_COLUMN = "_run_id"
LINEAGE_COLUMNS = (ORIGIN_COLUMN, RECORD_COLUMN)
PAGE_COLUMN = "_page"

DUCKDB_TYPES: dict[ColumnType, str] = {
    ColumnType.INTEGER: "BIGINT",
    ColumnType.DOUBLE: "DOUBLE",
    ColumnType.STRING: "VARCHAR",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
    ColumnType.TIMESTAMP: "TIMESTAMP",
}


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def staging_select(
    entity: Entity,
    landed_files: list[Path],
    landed_columns: set[str],
    run_id: str,
    *,
    parsed: bool = False,
    text: Collection[str] | None = None,
) -> str:
    """SELECT of the staged table from `landed_files`, whose columns (over all files) are `landed_columns`;
    `parsed`: their delivered copies are read from the tables `parse_copies` filled on the connection.
    Delivered columns are read under the names `entity.headers` gives them (`file.normalize_headers`).
    `text`: the columns landed as text (read from the files' schemas when not given), whose values are read
    as the entity's `text_format` says (null markers, separators, date formats) before they are typed; a
    typed column (Parquet, a database's) keeps its own values, but for the time zone its naive timestamps
    are local time in. Staged timestamps are naive UTC whatever the connection's TimeZone (`strict_cast`),
    so the warehouses' TIMESTAMP columns and dbt see what they saw before zones were declared."""
    text = text_columns(landed_files, entity.headers) if text is None else text
    typed = []
    cast_errors = []
    violations = []
    for name, column in entity.columns.items():
        read = entity.text_format(name) if name in text else entity.text_format(name).typed()
        # A column the delivery no longer has (a nullable one the evolution policy let go) stages as NULL.
        raw = without_null_markers(quote_identifier(name), read) if name in landed_columns else "NULL"
        cast = strict_cast(raw, column.type, read)
        typed.append(f"{cast} AS {quote_identifier(name)}")
        label = sql_string(name + "=")
        cast_errors.append(
            f"CASE WHEN {raw} IS NOT NULL AND {cast} IS NULL THEN {label} || {raw}::VARCHAR END"
        )
        if rules.column_severity(entity, name) == "error":
            violations += _violations(name, column, entity, raw, cast)
    violation_list = f"list_filter([{', '.join(violations)}]::VARCHAR[], lambda v: v IS NOT NULL)"
    selected = [
        *typed,
        f"NULLIF(concat_ws('; ', {', '.join(cast_errors)}), '') AS {quote_identifier(CAST_ERRORS_COLUMN)}",
        f"NULLIF({violation_list}, []::VARCHAR[]) AS {quote_identifier(VIOLATIONS_COLUMN)}",
        f"{_origin(landed_columns)} AS {quote_identifier(ORIGIN_COLUMN)}",
        f"{_optional(RECORD_COLUMN, landed_columns, 'BIGINT')} AS {quote_identifier(RECORD_COLUMN)}",
        quote_identifier(SOURCE_COLUMN),
        quote_identifier(EXTRACTED_AT_COLUMN),
        f"{sql_string(run_id)} AS {quote_identifier(RUN_ID_COLUMN)}",
        f"now()::TIMESTAMP AS {quote_identifier(LOADED_AT_COLUMN)}",
    ]
    if not landed_files:
        return f"SELECT {', '.join(selected)} FROM ({_no_rows(entity)}) WHERE false"
    landed = landed_relation(
        landed_files, parsed=parsed, headers=entity.headers, naive_timestamps_as_text=True
    )
    return f"SELECT {', '.join(selected)} FROM {landed} AS landed"


def _violations(name: str, column: Column, entity: Entity, raw: str, cast: str) -> list[str]:
    """One `CASE` per rule of an error-severity column: its label when the row breaks it, else NULL."""

    def broken(rule: str, condition: str) -> str:
        return f"CASE WHEN {condition} THEN {sql_string(rules.rule_label(name, rule))} END"

    cases = [broken(rules.TYPE, f"{raw} IS NOT NULL AND {cast} IS NULL")]
    if not entity.is_nullable(name):
        cases.append(broken(rules.NULLABLE, f"{raw} IS NULL"))
    if column.min is not None:
        cases.append(broken(rules.MIN, f"{cast} < {column.min!r}"))
    if column.max is not None:
        cases.append(broken(rules.MAX, f"{cast} > {column.max!r}"))
    if column.allowed_values is not None:
        allowed = ", ".join(sql_string(value) for value in column.allowed_values) or "NULL"
        cases.append(broken(rules.ALLOWED_VALUES, f"{cast}::VARCHAR NOT IN ({allowed})"))
    if column.regex is not None:
        cases.append(broken(rules.REGEX, f"NOT regexp_full_match({cast}, {sql_string(column.regex)})"))
    if column.min_length is not None:
        cases.append(broken(rules.MIN_LENGTH, f"length({cast}) < {column.min_length}"))
    if column.max_length is not None:
        cases.append(broken(rules.MAX_LENGTH, f"length({cast}) > {column.max_length}"))
    return cases


def _origin(landed_columns: set[str]) -> str:
    if FILE_COLUMN in landed_columns:
        return quote_identifier(FILE_COLUMN)
    if PAGE_COLUMN in landed_columns:
        return f"'page ' || {quote_identifier(PAGE_COLUMN)}"
    return "NULL::VARCHAR"


def _optional(column: str, landed_columns: set[str], sql_type: str) -> str:
    return quote_identifier(column) if column in landed_columns else f"NULL::{sql_type}"


def _no_rows(entity: Entity) -> str:
    """An empty relation with the landed columns, for an entity that has not delivered anything yet."""
    columns = [f"NULL::VARCHAR AS {quote_identifier(name)}" for name in entity.columns]
    columns.append(f"NULL::VARCHAR AS {quote_identifier(SOURCE_COLUMN)}")
    columns.append(f"NULL::TIMESTAMPTZ AS {quote_identifier(EXTRACTED_AT_COLUMN)}")
    return f"SELECT {', '.join(columns)}"
