"""Databases: one read-only, consistent-snapshot extraction per run, landed as one Parquet file.

Incremental tables resume from the watermark of the previous materialization (the greatest cursor value,
then tie-breaker, landed so far); the new watermark is recorded only with this run's committed landing.
Tables without `incremental` are re-read whole: each run's file is then the entity's complete snapshot.
"""

from __future__ import annotations

from resources.database_source import DatabaseSource

from platform_assets.catalog_loader import CatalogEntity
from platform_assets.ingestion.extraction import Extraction, ExtractionContext, today


class DatabaseExtractor:
    def kind_tag(self, item: CatalogEntity) -> str:
        return _source(item).dialect_name()

    def location(self, item: CatalogEntity) -> str:
        table = item.entity.table
        assert table is not None
        what = (
            f"{table.schema_name + '.' if table.schema_name else ''}{table.table}" if table.table else "query"
        )
        return f"{_source(item).describe()} {what}"

    def extract(self, context: ExtractionContext) -> Extraction:
        item = context.item
        table = item.entity.table
        assert table is not None
        watermark = context.previous_state.get("watermark")
        source = _source(item)
        rows = source.extract(
            table, primary_key=item.entity.primary_key, watermark=watermark, batch_rows=context.batch_rows
        )
        context.log.info(f"Extracting {self.location(item)} from watermark {watermark}: {rows.query_text}")
        context.inflight.write(f"{context.lineage.run_id}.parquet", rows, context.lineage)
        committed = context.inflight.commit(today(context))
        incremental = table.incremental is not None
        state = {"watermark": rows.watermark_after if rows.watermark_after is not None else watermark}
        return Extraction(
            files=committed,
            state=state if incremental else {},
            load_kind="append" if incremental else "snapshot",
            details={"query": rows.query_text},
        )


def _source(item: CatalogEntity) -> DatabaseSource:
    connection = item.source.connection
    assert connection.kind == "database"
    return DatabaseSource(connection)
