"""Raw layer: each catalog entity, extracted from its source and landed as Parquet with lineage columns.

The extraction state (processed-file ledger, watermark) is read from the asset's previous materialization
and recorded in this one, so it lives in Dagster and advances only once the landing has committed: the
materialization event is written after the step returns, and the step returns after the commit.
"""

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.ingestion.backfill import (
    BACKFILL_SINCE,
    BACKFILL_UNTIL,
    BackfillRange,
    backfill_range,
    starting_state,
    state_after,
)
from platform_assets.ingestion.bronze_route import open_extraction
from platform_assets.ingestion.extraction import Extraction, ExtractionContext
from platform_assets.ingestion.registry import EXTRACTORS
from platform_assets.keys import RAW_LAYER, layer_group, raw_key
from resources.landing.zone import LandingZone, Lineage
from sensors.healing.step_retry import step_retry

EXTRACTION_STATE_METADATA = "extraction_state"
"""Materialization metadata key holding the state the next extraction starts from."""
LANDED_FILES_METADATA = "landed_files"
LOAD_KIND_METADATA = "load_kind"
"""`snapshot`: this run's files are the whole entity; `append`: they add to (or update, by key) the files
landed before."""
SOURCE_POOL_PREFIX = "source_"
"""Raw assets of one source share the concurrency pool `source_<name>` (limit in `dagster.yaml`, one by
default): however many runs are queued, one source's API or database serves one extraction at a time."""


def source_pool(source: str) -> str:
    return f"{SOURCE_POOL_PREFIX}{source}"


class RawConfig(dg.Config):
    batch_rows: int = 65_536
    """Rows per Arrow batch (and per page group for APIs): memory is bounded by it, not by the data size."""
    batch_scale: float = Field(default=1.0, gt=0, le=1)
    """Set by the healing layer after a memory or timeout failure: `batch_rows` is scaled by it."""
    rate_scale: float = Field(default=1.0, gt=0, le=1)
    """Set by the healing layer after rate limiting: the source's requests per second are scaled by it."""
    observed_files: dict[str, float] = Field(default_factory=dict)
    """Set by the delivery sensor (files): `path|size|version` -> when it first listed the file so, in epoch
    seconds; the run counts that listing towards the entity's `stable_after_seconds`."""
    backfill_since: str | None = Field(
        default=None,
        description="Backfill (incremental tables and APIs): re-extract rows whose cursor is at or after "
        "this (ISO timestamp, or key) without moving the watermark; see `backfill_until`.",
    )
    backfill_until: str | None = Field(
        default=None,
        description="Backfill: re-extract rows whose cursor is at most this; alone, from the start up to it.",
    )

    def backfill(self, item: CatalogEntity) -> BackfillRange | None:
        """The range this run re-extracts, checked against the entity; None for a regular run."""
        if self.backfill_since is None and self.backfill_until is None:
            return None
        return backfill_range(item, self.backfill_since, self.backfill_until)


def build_raw_asset(item: CatalogEntity) -> dg.AssetsDefinition:
    kind = item.source.connection.kind
    extractor = EXTRACTORS[kind]

    @dg.asset(
        key=raw_key(item.source_name, item.name),
        group_name=layer_group(RAW_LAYER, item.source_name),
        kinds={"parquet", extractor.kind_tag(item)},
        owners=item.source.owners,
        description=f"Landed copy of {item.source_name}.{item.name} as extracted from its {kind} source. "
        f"{item.entity.description or ''}".strip(),
        metadata={"source_location": extractor.location(item)},
        pool=source_pool(item.source_name),
    )
    def raw_entity(
        context: dg.AssetExecutionContext, config: RawConfig, landing: LandingZone
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        key = raw_key(item.source_name, item.name)
        previous = _previous_state(context, key)
        backfill = config.backfill(item)
        if backfill is not None:
            context.log.info(f"Backfill of {item.source_name}.{item.name} {backfill.describe()}")
        lineage = Lineage(
            source=f"{item.source_name}.{item.name}",
            extracted_at=datetime.now(UTC),
            run_id=context.run.run_id,
        )
        try:
            with open_extraction(landing, item) as inflight:
                extraction = extractor.extract(
                    ExtractionContext(
                        item=item,
                        landing=landing,
                        inflight=inflight,
                        lineage=lineage,
                        previous_state=previous
                        if backfill is None
                        else starting_state(item, previous, backfill),
                        batch_rows=scaled_batch_rows(config.batch_rows, config.batch_scale),
                        log=context.log,
                        rate_scale=config.rate_scale,
                        observed_files=dict(config.observed_files),
                        until=None if backfill is None else backfill.until,
                    )
                )
        except Exception as error:
            retry = step_retry(error, asset_key=key, retry_number=context.retry_number)
            if retry is None:
                raise
            context.log.warning(
                f"{item.source_name}.{item.name}: {error!r}; retrying the step once in this run"
            )
            raise retry from error
        rows = "" if extraction.rows is None else f"{extraction.rows} rows "
        context.log.info(
            f"Landed {rows}({extraction.bytes} bytes) of {item.source_name}.{item.name} "
            f"in {len(extraction.files)} file(s)"
        )
        if backfill is not None:
            extraction = replace(extraction, state=state_after(previous, extraction.state))
        metadata = _metadata(extraction, previous, time.monotonic() - started, backfill)
        return dg.MaterializeResult(metadata={**metadata, "source_location": extractor.location(item)})

    return raw_entity


def scaled_batch_rows(batch_rows: int, scale: float) -> int:
    """`batch_rows` scaled by a healing override, never below 1000 rows (or `batch_rows` if smaller)."""
    return max(min(batch_rows, 1000), int(batch_rows * scale))


def _previous_state(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    event = context.instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if materialization is None or EXTRACTION_STATE_METADATA not in materialization.metadata:
        return {}
    return dict(materialization.metadata[EXTRACTION_STATE_METADATA].value)


def _metadata(
    extraction: Extraction, previous: dict[str, Any], seconds: float, backfill: BackfillRange | None
) -> dict[str, Any]:
    schema = extraction.schema
    metadata: dict[str, Any] = {
        "bytes": extraction.bytes,
        "duration_seconds": round(seconds, 3),
        LOAD_KIND_METADATA: extraction.load_kind,
        LANDED_FILES_METADATA: dg.MetadataValue.json([str(f.path) for f in extraction.files]),
        EXTRACTION_STATE_METADATA: dg.MetadataValue.json(extraction.state),
        **extraction.details,
    }
    if "watermark" in extraction.state or "watermark" in previous:
        metadata["watermark_before"] = dg.MetadataValue.json(previous.get("watermark"))
        metadata["watermark_after"] = dg.MetadataValue.json(extraction.state.get("watermark"))
    if backfill is not None:
        metadata[BACKFILL_SINCE] = dg.MetadataValue.text(backfill.since or "the start")
        metadata[BACKFILL_UNTIL] = dg.MetadataValue.text(backfill.until or "now")
    if extraction.rows is not None:
        metadata["dagster/row_count"] = extraction.rows
    if schema is not None:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(field.name, str(field.type)) for field in schema]
        )
    return metadata
