"""Databases: one read-only, consistent-snapshot extraction per run, landed as one Parquet file.

Incremental tables resume from the watermark of the previous materialization (the greatest cursor value,
then tie-breaker, landed so far); the new watermark is recorded only with this run's committed landing.
Tables without `incremental` are re-read whole: each run's file is then the entity's complete snapshot.

An incremental extraction never sees a row deleted at the source. With `deletes: reconcile` a run also
scans the table's primary keys (at most every `every_minutes`), AFTER its rows were read: a key absent
from that later scan was deleted at the source, so staging removes it (a row inserted meanwhile is in the
scan, never missing from it). Only the latest scan counts; the earlier ones are removed. The scan lands
through the extraction's in-flight area (`InFlight.write_key_scan`): a file beside the landed files, or a
`keys` part of the bronze layer, committed with the extraction's rows.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import DatabaseSourceConnection
from platform_assets.ingestion.extraction import Extraction, ExtractionContext, today
from resources.databases.source import DatabaseSource

KEYS_SCANNED_AT_STATE = "keys_scanned_at"
"""Extraction state: when the latest key scan (`deletes: reconcile`) ran, ISO 8601."""
KEY_SCAN_SUFFIX = "-keys.parquet"
"""A key scan's name after its run id: never a records part's (`<run id>.parquet`), which bronze keys by
name beside it."""


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
                table,
                primary_key=item.entity.primary_key,
                watermark=watermark,
                batch_rows=context.batch_rows,
                until=context.until,
            ) as rows,
        ):
            up_to = "" if context.until is None else f" up to {context.until}"
            context.log.info(
                f"Extracting {self.location(item)} from watermark {watermark}{up_to}: {rows.query_text}"
            )
            context.inflight.write(f"{context.lineage.run_id}.parquet", rows, context.lineage)
            scanned_at = _scan_keys(context, source) if _keys_due(context) else None
            committed = context.inflight.commit(today(context))
            watermark_after = rows.watermark_after
        incremental = table.incremental is not None
        state: dict[str, object] = (
            {"watermark": watermark_after if watermark_after is not None else watermark}
            if incremental
            else {}
        )
        last_scan = scanned_at or context.previous_state.get(KEYS_SCANNED_AT_STATE)
        if last_scan is not None:
            state[KEYS_SCANNED_AT_STATE] = last_scan
        return Extraction(
            files=committed,
            state=state,
            load_kind="append" if incremental else "snapshot",
            details={"query": rows.query_text},
        )


def _keys_due(context: ExtractionContext) -> bool:
    """Whether this run scans the keys: reconciled entities, once `every_minutes` passed since the last."""
    deletes = context.item.entity.deletes
    if deletes is None or deletes.mode != "reconcile":
        return False
    last = context.previous_state.get(KEYS_SCANNED_AT_STATE)
    return last is None or context.lineage.extracted_at - datetime.fromisoformat(last) >= timedelta(
        minutes=deletes.every_minutes
    )


def _scan_keys(context: ExtractionContext, source: DatabaseSource) -> str:
    """Land the table's primary keys (only those columns, streamed in batches) as the entity's key scan,
    committed with the extraction's rows and stamped with its time; when it ran."""
    item = context.item
    table = item.entity.table
    assert table is not None
    keys = table.model_copy(update={"columns": list(item.entity.primary_key), "incremental": None})
    with source.extract(
        keys, primary_key=item.entity.primary_key, watermark=None, batch_rows=context.batch_rows
    ) as batches:
        name = f"{context.lineage.run_id}{KEY_SCAN_SUFFIX}"
        landed = context.inflight.write_key_scan(name, batches, context.lineage)
    context.log.info(
        f"Scanned the keys of {item.source_name}.{item.name}: {landed.rows if landed else 0} key(s) in "
        f"{landed.path if landed else name}"
    )
    return context.lineage.extracted_at.isoformat()


def _connection(item: CatalogEntity) -> DatabaseSourceConnection:
    connection = item.source.connection
    assert isinstance(connection, DatabaseSourceConnection)
    return connection
