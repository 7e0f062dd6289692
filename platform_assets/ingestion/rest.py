"""REST APIs: pages landed in groups, with a checkpoint after each group, so that a failed extraction
resumes after the last page it fetched instead of starting over (and never lands a page twice).

Where an attempt resumes must not depend on `batch_rows`, which only sizes the landed parts: 590 pages of a
3,500-page extraction may be fewer records than one part holds. So a group is landed and checkpointed when
it reaches `batch_rows` records, when `CHECKPOINT_SECONDS` have passed since the last checkpoint (what a
killed process, which runs no handler, can lose), and when the extraction fails: the pages fetched whole
before the failure are landed before the error propagates, and the next attempt resumes at the page after
them.

A checkpoint left by a failed attempt is resumed by the next attempt, whatever run it belongs to; its parts
are committed together with the new ones. Incremental endpoints send the previous watermark and record the
greatest cursor value seen, once everything has committed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.ingestion.extraction import Extraction, ExtractionContext, today
from resources.rest.config import RateLimit
from resources.rest.source import Page, RestApiSource, max_cursor


class RestExtractor:
    def kind_tag(self, item: CatalogEntity) -> str:
        return "rest"

    def location(self, item: CatalogEntity) -> str:
        connection = item.source.connection
        assert connection.kind == "rest" and item.entity.endpoint is not None
        return f"{connection.base_url.rstrip('/')}{item.entity.endpoint.path}"

    def extract(self, context: ExtractionContext) -> Extraction:
        item = context.item
        endpoint = item.entity.endpoint
        assert endpoint is not None
        checkpoint = _resumable(context, context.inflight.checkpoint())
        if checkpoint is None:
            context.inflight.discard()
            checkpoint = {
                "resume_after": None,
                "watermark_before": context.previous_state.get("watermark"),
                "watermark_seen": context.previous_state.get("watermark"),
                "until": context.until,
                "pages": 0,
            }
        else:
            context.log.warning(
                f"Resuming {item.source_name}.{item.name} after page {checkpoint['pages']} (checkpoint of an "
                f"earlier attempt; {len(context.inflight.parts())} part(s) already landed)"
            )
        with _source(item, context.rate_scale, context.log) as source:
            group: list[Page] = []
            records_in_group, checkpointed_at = 0, time.monotonic()
            pages = source.pages(
                endpoint,
                resume=checkpoint["resume_after"],
                watermark=checkpoint["watermark_before"],
                until=context.until,
            )
            try:
                for page in pages:
                    group.append(page)
                    records_in_group += len(page.records)
                    due = time.monotonic() - checkpointed_at >= CHECKPOINT_SECONDS
                    if records_in_group >= context.batch_rows or due:
                        checkpoint = _land_group(context, group, checkpoint, endpoint.incremental)
                        group, records_in_group, checkpointed_at = [], 0, time.monotonic()
            except Exception:
                if group:
                    checkpoint = _land_group(context, group, checkpoint, endpoint.incremental)
                    context.log.warning(
                        f"{item.source_name}.{item.name} failed after page {checkpoint['pages']}: the pages "
                        f"fetched before it are landed and checkpointed; the next attempt resumes at page "
                        f"{checkpoint['pages'] + 1}"
                    )
                raise
            if group:
                checkpoint = _land_group(context, group, checkpoint, endpoint.incremental)
        committed = context.inflight.commit(today(context))
        return Extraction(
            files=committed,
            state={"watermark": checkpoint["watermark_seen"]} if endpoint.incremental else {},
            load_kind="append" if endpoint.incremental else "snapshot",
            details={"pages": checkpoint["pages"]},
        )


def _resumable(context: ExtractionContext, checkpoint: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checkpoint, if it continues the extraction this run asks for: the same watermark and upper bound.
    One left by an attempt that read another range (a backfill, or a run before a reset) is dropped with its
    parts, never committed nor staged: that range is read again by the next run that asks for it."""
    if checkpoint is None:
        return None
    wanted = (context.previous_state.get("watermark"), context.until)
    if (checkpoint["watermark_before"], checkpoint.get("until")) == wanted:
        return checkpoint
    item = context.item
    context.log.warning(
        f"Not resuming the checkpoint of an earlier attempt of {item.source_name}.{item.name}: it read "
        f"from {checkpoint['watermark_before']} up to {checkpoint.get('until') or 'now'}, this run "
        f"reads from {wanted[0]} up to {wanted[1] or 'now'}; its pages are fetched again"
    )
    return None


def _land_group(
    context: ExtractionContext, group: list[Page], checkpoint: dict[str, Any], incremental: Any
) -> dict[str, Any]:
    """Land a group of pages as one part, then move the checkpoint past them."""
    table = pa.concat_tables(
        [pa.Table.from_batches([p.to_batch()]) for p in group], promote_options="default"
    )
    name = f"{context.lineage.run_id}-pages-{group[0].number:06d}-{group[-1].number:06d}.parquet"
    context.inflight.write(name, table.to_batches(), context.lineage)
    watermark = checkpoint["watermark_seen"]
    if incremental is not None:
        for page in group:
            watermark = max_cursor(page.records, incremental.cursor_field, watermark)
    checkpoint = {
        **checkpoint,
        "resume_after": group[-1].resume_after,
        "watermark_seen": watermark,
        "pages": group[-1].number,
    }
    context.inflight.save_checkpoint(checkpoint)
    context.log.info(f"Landed pages {group[0].number}-{group[-1].number} ({table.num_rows} records)")
    return checkpoint


CHECKPOINT_SECONDS = 30.0
"""At most this long between checkpoints, however few records the pages hold: what a killed extraction
fetches again. (A failure that raises loses nothing: its pages are landed on the way out.)"""
UNDECLARED_REQUESTS_PER_SECOND = 10.0
"""The rate a slow-down scales when the catalog declares no `rate_limit`."""


def _source(item: CatalogEntity, rate_scale: float, log: logging.Logger) -> RestApiSource:
    """`log`: the run's log (Dagster's log manager is a `logging.Logger`), where the client reports each
    retry, so that a run that waited through 429s and 503s says so in the UI, not only on stderr."""
    connection = item.source.connection
    assert connection.kind == "rest"
    if rate_scale < 1:
        declared = connection.rate_limit
        base = declared.requests_per_second if declared else UNDECLARED_REQUESTS_PER_SECOND
        slower = RateLimit(requests_per_second=base * rate_scale, burst=1)
        connection = connection.model_copy(update={"rate_limit": slower})
    return RestApiSource(connection, log=log)
