"""Validates a staged table against its contract, batch by batch, so memory is bounded by the batch size.

One severity at a time: `error` (the blocking `schema_contract` check) or `warn` (`quality_warnings`).
Row-level rules run through the entity's Pandera schema of that severity on each batch streamed from the
warehouse (`Warehouse.stream_table`; lazily: every failure, not the first); uniqueness of the primary key,
of composite `unique` keys and of `unique` columns is computed by the warehouse, one query per key, in
portable SQL. Each violation names the row by its primary key and by where it was delivered (file and
record).

Staging already quarantines rows that break error-severity row rules, so the error-severity row rules
normally find nothing here: they guard tables loaded some other way. Duplicates are never quarantined
(which copy is wrong is unknowable): this check is where they fail.

So that a clean table of millions of rows is not streamed through pandas to learn that, Pandera first
validates one small batch (column-level failures: a missing column, a wrong dtype), then the warehouse
counts the rows that may break a row rule (`contract_prefilter.suspect_condition`, an over-approximation).
None: the table passes with every row counted as checked. Some, or a rule with no SQL form: Pandera
validates every row, as the only judge of what fails.

`only_run` narrows all of it to the rows one run staged and the keys they bring (`contract_scope.py` says
when that is the whole table's verdict).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pandera.errors
import pandera.pandas as pa

from platform_assets.catalog import rules
from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Severity
from platform_assets.keys import STAGED_SCHEMA, staged_table
from platform_assets.quality.contract_prefilter import suspect_condition
from platform_assets.quality.pandera_schemas import (
    CustomChecks,
    failure_label,
    has_rules,
    row_schema,
    to_pandas,
)
from platform_assets.staging.sql import CAST_ERRORS_COLUMN, LINEAGE_COLUMNS
from resources.landing.zone import RUN_ID_COLUMN
from resources.warehouses.base import Warehouse
from resources.warehouses.load import PartitionSlice

DEFAULT_BATCH_ROWS = 100_000
FIRST_BATCH_ROWS = 20_000
"""Rows Pandera validates before the warehouse is asked whether any row may break a rule: a table this
small is done after that batch, without the aggregate query (on the embedded DuckDB, every query opens
the warehouse file afresh, which costs about what Pandera takes for these rows)."""
MAX_REPORTED_VIOLATIONS = 20


@dataclass(frozen=True)
class Violation:
    rule: str
    column: str
    value: str
    key: dict[str, str]
    source_file: str | None
    source_record: int | None


@dataclass
class ContractReport:
    rows_checked: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[Violation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.counts

    @property
    def violation_count(self) -> int:
        return sum(self.counts.values())


def validate_staged_table(
    warehouse: Warehouse,
    item: CatalogEntity,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    *,
    severity: Severity = "error",
    checks: CustomChecks | None = None,
    only_run: str | None = None,
) -> ContractReport:
    """The staged table against the rules of `severity`; `checks` are the custom checks' functions (resolved
    from the catalog when not given). `only_run`: validate only the rows that run staged, and the keys they
    bring."""
    report = ContractReport()
    scope = _Scope(only_run)
    if checks is None:
        checks = rules.resolve_checks(item.source_name, item.name, item.entity)
    model = None
    if severity == "error" and item.entity.pandera_model is not None:
        where = f"{item.source_name}.{item.name}"
        model = rules.resolve_model(item.entity.pandera_model, where)
    if not has_rules(item.entity, severity) and model is None:
        table = _table(warehouse, item)
        ((report.rows_checked,),) = warehouse.query(f"SELECT count(*) FROM {table}{scope.where(warehouse)}")
        return report
    if model is not None or not _no_suspect_rows(warehouse, item, severity, checks, report, scope):
        _validate_rows(warehouse, item, batch_rows, report, severity, checks, model, scope=scope)
    _validate_uniqueness(warehouse, item, report, severity, scope)
    return report


@dataclass(frozen=True)
class _Scope:
    """The rows a validation reads: the whole table, or those one run staged (`run_id`)."""

    run_id: str | None

    def __post_init__(self) -> None:
        if self.run_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", self.run_id):
            raise ValueError(f"not a run id: {self.run_id!r}")

    def where(self, warehouse: Warehouse, alias: str = "", conjunction: str = "WHERE") -> str:
        if self.run_id is None:
            return ""
        return f" {conjunction} {alias}{warehouse.quote(RUN_ID_COLUMN)} = '{self.run_id}'"

    def partition(self) -> PartitionSlice | None:
        return None if self.run_id is None else PartitionSlice(RUN_ID_COLUMN, (self.run_id,))


def _no_suspect_rows(
    warehouse: Warehouse,
    item: CatalogEntity,
    severity: Severity,
    checks: CustomChecks,
    report: ContractReport,
    scope: _Scope,
) -> bool:
    """True (and `report.rows_checked` set) when the first batch passes Pandera and the warehouse finds no
    row that may break a row rule; False, with `report` untouched, when Pandera must validate every row."""
    condition = suspect_condition(item.entity, severity, warehouse.quote)
    if condition is None:
        return False
    first = ContractReport()
    _validate_rows(warehouse, item, FIRST_BATCH_ROWS, first, severity, checks, batches=1, scope=scope)
    if not first.passed:
        return False
    if first.rows_checked < FIRST_BATCH_ROWS:  # that batch was all there is to check
        report.rows_checked = first.rows_checked
        return True
    ((total, suspects),) = warehouse.query(
        f"SELECT count(*), SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) FROM {_table(warehouse, item)}"
        f"{scope.where(warehouse)}"
    )
    if suspects:
        return False
    report.rows_checked = total
    return True


def _table(warehouse: Warehouse, item: CatalogEntity) -> str:
    return warehouse.table_ref(STAGED_SCHEMA, staged_table(item.source_name, item.name))


def _validate_rows(
    warehouse: Warehouse,
    item: CatalogEntity,
    batch_rows: int,
    report: ContractReport,
    severity: Severity,
    checks: CustomChecks,
    model: type | None = None,
    batches: int | None = None,
    *,
    scope: _Scope,
) -> None:
    """`model` is the entity's hand-written Pandera `DataFrameModel`, run on each batch after the catalog's
    schema (batches are pandas with nullable dtypes: Int64, Float64, string, boolean); only the first
    `batches` batches when given."""
    schemas = [row_schema(item.entity, severity, checks)]
    if model is not None:
        schemas.append(_model_schema(model, item))
    columns = [*item.entity.columns, CAST_ERRORS_COLUMN, *LINEAGE_COLUMNS]
    table = staged_table(item.source_name, item.name)
    stream = warehouse.stream_table(
        STAGED_SCHEMA, table, columns=columns, partition=scope.partition(), batch_rows=batch_rows
    )
    try:
        for batch in itertools.islice(stream, batches):
            frame = to_pandas(batch)
            report.rows_checked += len(frame)
            for schema in schemas:
                try:
                    schema.validate(frame, lazy=True)
                except pandera.errors.SchemaErrors as errors:
                    _record_failures(item, frame, errors.failure_cases, report)
    finally:
        stream.close()


def _model_schema(model: type, item: CatalogEntity) -> pa.DataFrameSchema:
    if not issubclass(model, pa.DataFrameModel):
        raise rules.CatalogRuleError(
            f"{item.source_name}.{item.name}: pandera_model {item.entity.pandera_model!r} is not a Pandera "
            f"DataFrameModel (subclass pandera.pandas.DataFrameModel)"
        )
    return model.to_schema()


def _record_failures(
    item: CatalogEntity, frame: pd.DataFrame, cases: pd.DataFrame, report: ContractReport
) -> None:
    """Count every failure case, but build row details only for the few that will be reported: a batch
    where every row fails must not cost a Python object per row."""
    for (column, check), count in cases.groupby(["column", "check"], dropna=False).size().items():
        report.counts[failure_label(str(column), str(check))] += int(count)
    room = MAX_REPORTED_VIOLATIONS - len(report.examples)
    for case in cases.head(max(room, 0)).itertuples(index=False):
        report.examples.append(_violation(item, frame, case))


def _violation(item: CatalogEntity, frame: pd.DataFrame, case: tuple) -> Violation:
    """A Pandera failure case, tied back to its row when it has one (dtype failures concern a column)."""
    source_file, source_record = LINEAGE_COLUMNS
    row = None if pd.isna(case.index) else frame.iloc[int(case.index)]
    column, rule = rules.split_label(failure_label(str(case.column), str(case.check)))
    return Violation(
        rule=rule,
        column=column,
        value=_text(case.failure_case),
        key={} if row is None else {k: _text(row[k]) for k in item.entity.primary_key},
        source_file=None if row is None else _text(row[source_file]),
        source_record=None if row is None else int(row[source_record]),
    )


def _validate_uniqueness(
    warehouse: Warehouse, item: CatalogEntity, report: ContractReport, severity: Severity, scope: _Scope
) -> None:
    """Rows whose key (primary key, composite `unique` key, or a `unique` column) of `severity` appears more
    than once: counted in full, the first few listed; within `scope`, the rows with a key its rows bring.
    NULLs are the nullability rule's business, not duplicates."""
    entity = item.entity
    reported = [*entity.primary_key, *LINEAGE_COLUMNS]
    quote = warehouse.quote
    table = _table(warehouse, item)
    for columns in rules.unique_keys(entity, severity):
        partition = ", ".join(quote(c) for c in columns)
        not_null = " AND ".join(f"{quote(c)} IS NOT NULL" for c in columns)
        rows = table
        if scope.run_id is not None:
            same_key = " AND ".join(f"brought.{quote(c)} = kept.{quote(c)}" for c in columns)
            rows = (
                f"(SELECT * FROM {table} AS kept WHERE EXISTS (SELECT 1 FROM {table} AS brought WHERE "
                f"{same_key}{scope.where(warehouse, 'brought.', 'AND')})) AS scoped"
            )
        counted = f"SELECT *, count(*) OVER (PARTITION BY {partition}) AS _copies FROM {rows}"
        duplicated = f"SELECT * FROM ({counted}) AS counted WHERE _copies > 1 AND {not_null}"
        ((count,),) = warehouse.query(f"SELECT count(*) FROM ({duplicated}) AS duplicated")
        if not count:
            continue
        rule_column = ", ".join(columns)
        report.counts[rules.rule_label(rule_column, rules.UNIQUE)] += count
        names = list(dict.fromkeys([*columns, *reported]))
        selected = ", ".join(quote(c) for c in names)
        room = MAX_REPORTED_VIOLATIONS - len(report.examples)
        if room <= 0:
            continue
        for row in warehouse.query(
            f"SELECT {selected} FROM ({duplicated}) AS duplicated ORDER BY {partition} LIMIT {room}"
        ):
            values = dict(zip(names, row, strict=True))
            report.examples.append(
                Violation(
                    rule=rules.UNIQUE,
                    column=rule_column,
                    value=", ".join(_text(values[c]) for c in columns),
                    key={k: _text(values[k]) for k in entity.primary_key},
                    source_file=_text(values[LINEAGE_COLUMNS[0]]),
                    source_record=values[LINEAGE_COLUMNS[1]],
                )
            )


def _text(value: object) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
