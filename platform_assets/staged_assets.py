"""Staged layer: typed warehouse tables built from the landed files, and their schema contract as a
blocking asset check (a failed contract stops everything downstream in the run).

Which landed files make the table depends on how the raw asset loads: a `snapshot` extraction's own files
are the whole entity; `append` extractions (file deliveries, incremental tables and APIs) add up, each key
taken from its latest extraction."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from platform_assets.catalog_loader import CatalogEntity
from platform_assets.keys import (
    STAGED_GROUP,
    STAGED_SCHEMA,
    WAREHOUSE_IO_MANAGER_KEY,
    WAREHOUSE_POOL,
    raw_key,
    staged_key,
    staged_table,
)
from platform_assets.raw_assets import LANDED_FILES_METADATA, LOAD_KIND_METADATA
from platform_assets.staging_sql import DUCKDB_TYPES, staging_select
from resources.file_query import stream_query
from resources.landing import LandingZone
from resources.warehouse import Warehouse
from resources.warehouse_io_manager import load_metadata

if TYPE_CHECKING:
    from platform_assets.contract_validation import ContractReport

CONTRACT_CHECK_NAME = "schema_contract"


class StagingConfig(dg.Config):
    batch_rows: int = 100_000
    """Rows per Arrow batch streamed into the warehouse: bounds the step's memory."""


class StagingError(RuntimeError):
    """The landed data cannot be staged as declared: names the file and what to change."""


def build_staged_asset(item: CatalogEntity, warehouse_kind: str) -> dg.AssetsDefinition:
    entity = item.entity
    upstream = raw_key(item.source_name, item.name)
    table = staged_table(item.source_name, item.name)

    @dg.asset(
        key=staged_key(item.source_name, item.name),
        deps=[upstream],
        group_name=STAGED_GROUP,
        kinds={warehouse_kind},
        owners=item.source.owners,
        pool=WAREHOUSE_POOL,
        io_manager_key=WAREHOUSE_IO_MANAGER_KEY,
        description=f"Typed table {STAGED_SCHEMA}.{table}. {entity.description or ''}".strip(),
        metadata={
            **load_metadata(mode="replace", primary_key=entity.primary_key, layout=entity.table_layout()),
            "dagster/table_name": f"{STAGED_SCHEMA}.{table}",
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(
                        name,
                        DUCKDB_TYPES[column.type],
                        description=column.description,
                        constraints=dg.TableColumnConstraints(
                            nullable=entity.is_nullable(name), unique=[name] in entity.unique_keys()
                        ),
                    )
                    for name, column in entity.columns.items()
                ]
            ),
        },
    )
    def staged_entity(
        context: dg.AssetExecutionContext, config: StagingConfig, landing: LandingZone
    ) -> dg.Output[pa.RecordBatchReader]:
        landed = _landed_files(context, upstream, landing, item)
        columns = _require_declared_columns(item, landed)
        context.log.info(f"Staging {STAGED_SCHEMA}.{table} from {len(landed)} landed file(s)")
        rows = stream_query(
            staging_select(entity, landed, columns, context.run.run_id),
            batch_rows=config.batch_rows,
            spill_dir=landing.spill_dir(),
        )
        return dg.Output(rows, metadata={"landed_files": len(landed)})

    return staged_entity


def build_contract_check(item: CatalogEntity) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=staged_key(item.source_name, item.name),
        name=CONTRACT_CHECK_NAME,
        blocking=True,
        pool=WAREHOUSE_POOL,
        description="Types, nullability, ranges, allowed values and key uniqueness declared in the catalog "
        "(Pandera, batch by batch). Blocking: a failure stops downstream models in the run.",
    )
    def contract(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
        # Imported here, not at the top: pandas and Pandera take seconds to import, and loading the code
        # location (every `dagster dev` reload, every run worker) should not pay for them.
        from platform_assets.contract_validation import validate_staged_table

        report = validate_staged_table(warehouse, item)
        if not report.passed:
            context.log.error(
                f"{item.source_name}.{item.name}: {report.violation_count} contract violation(s): "
                f"{dict(report.counts)}"
            )
        return dg.AssetCheckResult(
            passed=report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=_report_metadata(item, report),
        )

    return contract


def _landed_files(
    context: dg.AssetExecutionContext, upstream: dg.AssetKey, landing: LandingZone, item: CatalogEntity
) -> list[Path]:
    event = context.instance.get_latest_materialization_event(upstream)
    materialization = event.asset_materialization if event else None
    if materialization is None or LOAD_KIND_METADATA not in materialization.metadata:
        raise StagingError(
            f"{upstream.to_user_string()} has never been materialized; materialize it first "
            f"(or select it together with this asset)."
        )
    if materialization.metadata[LOAD_KIND_METADATA].value == "append":
        return landing.committed_files(item.source_name, item.name)
    paths = [Path(p) for p in materialization.metadata[LANDED_FILES_METADATA].value]
    gone = [p for p in paths if not p.exists()]
    if gone:
        raise StagingError(
            f"Files landed by the latest {upstream.to_user_string()} run are gone: {gone[:3]}. "
            f"Re-materialize {upstream.to_user_string()}."
        )
    return paths


def _require_declared_columns(item: CatalogEntity, landed: list[Path]) -> set[str]:
    """The columns delivered over all landed files; every declared column must be among them."""
    delivered = {name for path in landed for name in pq.read_schema(path).names}
    missing = [name for name in item.entity.columns if name not in delivered]
    if landed and missing:
        raise StagingError(
            f"{item.source_name}.{item.name}: declared column(s) {missing} are missing from the delivered "
            f"data ({len(landed)} landed file(s)); delivered columns: {sorted(delivered)}. Fix the delivery "
            f"or the catalog."
        )
    return delivered


def _report_metadata(item: CatalogEntity, report: "ContractReport") -> dict[str, dg.MetadataValue]:
    key_columns = item.entity.primary_key
    return {
        "rows_checked": dg.MetadataValue.int(report.rows_checked),
        "violations": dg.MetadataValue.int(report.violation_count),
        "violations_by_rule": dg.MetadataValue.json(dict(report.counts)),
        "offending_rows": dg.MetadataValue.table(
            records=[
                dg.TableRecord(
                    {
                        **{k: v.key.get(k, "") for k in key_columns},
                        "column": v.column,
                        "rule": v.rule,
                        "value": v.value,
                        "origin": v.source_file or "",
                        "record": v.source_record if v.source_record is not None else -1,
                    }
                )
                for v in report.examples
            ],
            schema=dg.TableSchema(
                columns=[
                    *(dg.TableColumn(k, "string") for k in key_columns),
                    dg.TableColumn("column", "string"),
                    dg.TableColumn("rule", "string"),
                    dg.TableColumn("value", "string"),
                    dg.TableColumn("origin", "string"),
                    dg.TableColumn("record", "int"),
                ]
            ),
        ),
    }
