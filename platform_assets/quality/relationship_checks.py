"""Referential integrity of staged tables: the `relationships` check of each entity with `references`.

For each foreign-key column (`references: source.entity.column`), the rows whose non-null value is not
found in the referenced staged table are orphans. They are counted in the warehouse itself, with portable
SQL (a LEFT JOIN on the distinct parent keys; DuckDB, PostgreSQL and BigQuery alike), and reported with
the first orphan values.

A check has one severity per result, and one blocking flag: the check is blocking when any of its columns
declares `references_severity: error`; an orphan in such a column fails it with severity ERROR (which stops
downstream models), orphans only in `warn` columns fail it with severity WARN (reported, not blocking).
The check runs after the referenced staged assets when they are in the same run (they are its
`additional_deps`), so that orders are not judged against the customers of the previous run. A referenced
table that does not exist yet is reported as not checked.
"""

from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Entity
from platform_assets.keys import STAGED_SCHEMA, WAREHOUSE_POOL, staged_key, staged_table
from resources.warehouses.base import Warehouse

RELATIONSHIP_CHECK = "relationships"
MAX_ORPHAN_EXAMPLES = 20
ORPHAN_RATE = "orphan_rate"
STRING_TYPES = {"duckdb": "VARCHAR", "postgres": "TEXT", "bigquery": "STRING"}
"""The string type each warehouse casts to when a foreign key and its parent column differ in type."""


@dataclass(frozen=True)
class ForeignKey:
    column: str
    source: str
    entity: str
    parent_column: str
    severity: str
    cast_to_string: bool = False

    @property
    def parent_key(self) -> dg.AssetKey:
        return staged_key(self.source, self.entity)

    @property
    def reference(self) -> str:
        return f"{self.source}.{self.entity}.{self.parent_column}"


@dataclass(frozen=True)
class Orphans:
    foreign_key: ForeignKey
    checked: bool
    values: int = 0
    """Rows whose foreign-key value is not null."""
    orphans: int = 0
    examples: tuple[str, ...] = ()
    note: str = ""

    @property
    def rate(self) -> float:
        return self.orphans / self.values if self.values else 0.0


def foreign_keys(entity: Entity, catalog: list[CatalogEntity]) -> list[ForeignKey]:
    declared = {(item.source_name, item.name): item.entity for item in catalog}
    keys = []
    for name, column in entity.columns.items():
        if column.references is None:
            continue
        source, target, parent_column = column.references.split(".")
        parent = declared.get((source, target))
        parent_type = (
            parent.columns[parent_column].type if parent and parent_column in parent.columns else None
        )
        keys.append(
            ForeignKey(
                name,
                source,
                target,
                parent_column,
                column.references_severity,
                cast_to_string=parent_type is not None and parent_type != column.type,
            )
        )
    return keys


def find_orphans(warehouse: Warehouse, child_table: str, foreign_key: ForeignKey) -> Orphans:
    """Orphans of one foreign-key column of `staged.<child_table>`, counted in the warehouse."""
    parent_table = staged_table(foreign_key.source, foreign_key.entity)
    if not warehouse.columns(STAGED_SCHEMA, parent_table):
        return Orphans(
            foreign_key,
            checked=False,
            note=f"{STAGED_SCHEMA}.{parent_table} does not exist yet: materialize "
            f"{foreign_key.parent_key.to_user_string()}",
        )
    q = warehouse.quote
    child_value = f"c.{q(foreign_key.column)}"
    parent_value = q(foreign_key.parent_column)
    if foreign_key.cast_to_string:
        string = STRING_TYPES.get(warehouse.kind, "VARCHAR")
        child_value, parent_value = f"CAST({child_value} AS {string})", f"CAST({parent_value} AS {string})"
    parent_key = q("parent_key")
    joined = (
        f"FROM {warehouse.table_ref(STAGED_SCHEMA, child_table)} AS c "
        f"LEFT JOIN (SELECT DISTINCT {parent_value} AS {parent_key} "
        f"FROM {warehouse.table_ref(STAGED_SCHEMA, parent_table)} AS parent_rows) AS p "
        f"ON {child_value} = p.{parent_key}"
    )
    orphan = f"p.{parent_key} IS NULL AND {child_value} IS NOT NULL"
    ((values, orphans),) = warehouse.query(
        f"SELECT count({child_value}), count(CASE WHEN {orphan} THEN 1 END) {joined}"
    )
    examples: tuple[str, ...] = ()
    if orphans:
        rows = warehouse.query(
            f"SELECT DISTINCT {child_value} AS {q('orphan')} {joined} WHERE {orphan} "
            f"ORDER BY 1 LIMIT {MAX_ORPHAN_EXAMPLES}"
        )
        examples = tuple(str(value) for (value,) in rows)
    return Orphans(foreign_key, checked=True, values=int(values), orphans=int(orphans), examples=examples)


def orphan_rate(reports: list[Orphans]) -> float | None:
    """Orphans over non-null foreign-key values, all checked columns together; None when none was checked."""
    checked = [report for report in reports if report.checked]
    if not checked:
        return None
    values = sum(report.values for report in checked)
    return sum(report.orphans for report in checked) / values if values else 0.0


def relationship_result(reports: list[Orphans]) -> dg.AssetCheckResult:
    failing = [report for report in reports if report.orphans]
    error = any(report.foreign_key.severity == "error" for report in failing)
    rate = orphan_rate(reports)
    metadata: dict[str, object] = {
        "orphans": sum(report.orphans for report in reports),
        ORPHAN_RATE: dg.MetadataValue.float(rate if rate is not None else 0.0),
        "foreign_keys": dg.MetadataValue.table(
            [
                dg.TableRecord(
                    {
                        "column": r.foreign_key.column,
                        "references": r.foreign_key.reference,
                        "severity": r.foreign_key.severity,
                        "checked": r.checked,
                        "values": r.values,
                        "orphans": r.orphans,
                        "orphan_rate": round(r.rate, 6),
                        "orphan_examples": ", ".join(r.examples) or r.note,
                    }
                )
                for r in reports
            ],
            schema=dg.TableSchema(
                columns=[
                    dg.TableColumn("column", "string"),
                    dg.TableColumn("references", "string"),
                    dg.TableColumn("severity", "string"),
                    dg.TableColumn("checked", "bool"),
                    dg.TableColumn("values", "int"),
                    dg.TableColumn("orphans", "int"),
                    dg.TableColumn("orphan_rate", "float"),
                    dg.TableColumn("orphan_examples", "string"),
                ]
            ),
        ),
    }
    for r in reports:
        if r.checked:
            metadata[f"orphans/{r.foreign_key.column}"] = r.orphans
            metadata[f"orphan_rate/{r.foreign_key.column}"] = dg.MetadataValue.float(r.rate)
    if failing:
        description = "; ".join(
            f"{r.orphans:,} of {r.values:,} {r.foreign_key.column} value(s) not in {r.foreign_key.reference} "
            f"(e.g. {', '.join(r.examples[:5])})"
            for r in failing
        )
    else:
        unchecked = [r for r in reports if not r.checked]
        description = "Every foreign-key value found in its referenced table." + "".join(
            f" {r.foreign_key.column} not checked: {r.note}." for r in unchecked
        )
    return dg.AssetCheckResult(
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def build_relationship_check(
    item: CatalogEntity, catalog: list[CatalogEntity]
) -> dg.AssetChecksDefinition | None:
    """The `relationships` check of a staged entity, or None when it declares no `references`."""
    keys = foreign_keys(item.entity, catalog)
    if not keys:
        return None
    asset = staged_key(item.source_name, item.name)
    table = staged_table(item.source_name, item.name)
    parents = sorted({key.parent_key for key in keys if key.parent_key != asset}, key=lambda k: k.path)
    blocking = any(key.severity == "error" for key in keys)
    references = ", ".join(f"{key.column} -> {key.reference} ({key.severity})" for key in keys)

    @dg.asset_check(
        asset=asset,
        name=RELATIONSHIP_CHECK,
        blocking=blocking,
        additional_deps=parents,
        pool=WAREHOUSE_POOL,
        description=f"Orphan foreign keys: {references}."
        + (" Blocking for `error` references." if blocking else " Warns only."),
    )
    def relationships(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
        reports = [find_orphans(warehouse, table, key) for key in keys]
        result = relationship_result(reports)
        if not result.passed:
            context.log.warning(f"{asset.to_user_string()}: {result.description}")
        return result

    return relationships


def last_orphan_rate(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> float | None:
    """The overall orphan rate from the latest completed `relationships` check of the asset (for the
    quality score's consistency), None without one."""
    # Not the latest execution: that is the one planned for the current run, which has no result yet.
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(asset_key, RELATIONSHIP_CHECK),
        limit=1,
        status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )
    evaluation = records[0].event.asset_check_evaluation if records and records[0].event else None
    if evaluation is None or ORPHAN_RATE not in evaluation.metadata:
        return None
    value = evaluation.metadata[ORPHAN_RATE].value
    return float(value) if isinstance(value, (int, float)) else None
