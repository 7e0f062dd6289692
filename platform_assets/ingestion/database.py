"""Databases: one read-only, consistent-snapshot extraction per run, landed as one Parquet file.

Incremental tables resume from the watermark of the previous materialization (the greatest cursor value,
then tie-breaker, landed so far); the new watermark is recorded only with this run's committed landing.
Tables without `incremental` are re-read whole: each run's file is then the entity's complete snapshot.
"""

from __future__ import annotations

import re

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import DatabaseSourceConnection
from platform_assets.ingestion.extraction import Extraction, ExtractionContext, today
from resources.databases.source import DatabaseSource


class DatabaseExtractor:
    def kind_tag(self, item: CatalogEntity) -> str:
        """`postgres`, `sqlite`, `mysql`...: the URL's dialect, named as Dagster's kind icons are."""
        dialect = re.split(r"[+:]", _connection(item).url, maxsplit=1)[0]
        return "postgres" if dialect == "postgresql" else dialect

    def location(self, item: CatalogEntity) -> str:
        table = item.entity.table
        assert table is not None
        schema = f"{table.schema_name}." if table.schema_name else ""
        what = f"{schema}{table.table}" if table.table else "(custom query)"
        url = re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", _connection(item).url)
        return f"{url} {what}"

    def extract(self, context: ExtractionContext) -> Extraction:
        item = context.item
        table = item.entity.table
        assert table is not None
        watermark = context.previous_state.get("watermark")
        # A part left in flight by a killed attempt is not resumed: the extraction starts again from the
        # recorded watermark, and that part must not be committed beside its replacement.
        context.inflight.discard()
        with (
            DatabaseSource(_connection(item)) as source,
            source.extract(
                table, primary_key=item.entity.primary_key, watermark=watermark, batch_rows=context.batch_rows
            ) as rows,
        ):
            context.log.info(
                f"Extracting {self.location(item)} from watermark {watermark}: {rows.query_text}"
            )
            context.inflight.write(f"{context.lineage.run_id}.parquet", rows, context.lineage)
            committed = context.inflight.commit(today(context))
            watermark_after = rows.watermark_after
        incremental = table.incremental is not None
        return Extraction(
            files=committed,
            state={"watermark": watermark_after if watermark_after is not None else watermark}
            if incremental
            else {},
            load_kind="append" if incremental else "snapshot",
            details={"query": rows.query_text},
        )


def _connection(item: CatalogEntity) -> DatabaseSourceConnection:
    connection = item.source.connection
    assert isinstance(connection, DatabaseSourceConnection)
    return connection
