"""Raw layer: each catalog entity's delivered files, landed as one Parquet file per run."""

import time
from datetime import UTC, datetime

import dagster as dg

from platform_assets.catalog_loader import CatalogEntity
from platform_assets.keys import RAW_GROUP, raw_key
from resources.landing import LandingZone
from resources.source_files import CsvFormat, SourceFiles

LANDED_PATH_METADATA = "landed_path"
"""Materialization metadata key that tells the staging step which file this run landed."""


def build_raw_asset(item: CatalogEntity) -> dg.AssetsDefinition:
    entity = item.entity

    @dg.asset(
        key=raw_key(item.source_name, item.name),
        group_name=RAW_GROUP,
        kinds={"parquet", entity.format},
        owners=item.source.owners,
        description=f"Landed copy of {item.source_name}.{item.name} as delivered (all columns as text). "
        f"{entity.description or ''}".strip(),
        metadata={"source_path": entity.path},
    )
    def raw_entity(
        context: dg.AssetExecutionContext, source_files: SourceFiles, landing: LandingZone
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        paths = source_files.list(entity.path)
        context.log.info(f"Landing {len(paths)} file(s) of {item.source_name}.{item.name}")
        schema, batches = source_files.read_csv(paths, CsvFormat(delimiter=entity.delimiter))
        landed = landing.land(
            source=item.source_name,
            entity=item.name,
            load_date=datetime.now(UTC).date().isoformat(),
            file_stem=context.run.run_id,
            schema=schema,
            batches=batches,
        )
        context.log.info(f"Landed {landed.rows} rows ({landed.bytes} bytes) at {landed.path}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": landed.rows,
                "bytes": landed.bytes,
                "duration_seconds": round(time.monotonic() - started, 3),
                LANDED_PATH_METADATA: dg.MetadataValue.path(str(landed.path)),
                "source_files": [p.name for p in paths],
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(f.name, str(f.type)) for f in schema]
                ),
            }
        )

    return raw_entity
