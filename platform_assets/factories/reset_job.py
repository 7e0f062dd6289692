"""`reset_extraction`: the job that resets an incremental entity's extraction state (what
`platform_assets/ingestion/reset.py` computes), from the Dagster UI's launchpad or `dataplatform reset`.

It records the reset as a materialization of the entity's raw asset, so the next run of that asset starts
from it, and the asset's history shows who reset what, when, why, and from which state. It lands and
stages nothing: the next run does (the re-read rows are upserted by key, never duplicated).
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.factories.raw_assets import (
    EXTRACTION_STATE_METADATA,
    LANDED_FILES_METADATA,
    LOAD_KIND_METADATA,
)
from platform_assets.ingestion.reset import (
    RESET_BY,
    RESET_PREVIOUS_STATE,
    RESET_REASON,
    RESET_SINCE,
    RESET_UNDONE,
    ResetError,
    entities_named,
    reset_state,
)
from platform_assets.keys import raw_key

RESET_JOB_NAME = "reset_extraction"


class ResetConfig(dg.Config):
    entities: list[str] = Field(
        description="`source.entity` of each incremental entity to reset, or `source` for all of a source's."
    )
    since: str | None = Field(
        default=None,
        description="Re-extract rows whose cursor is at or after this (ISO timestamp, or key); none: "
        "everything (from the entity's initial_value).",
    )
    undo: bool = Field(default=False, description="Restore the state from before the latest reset instead.")
    requested_by: str = Field(description="Who asks (Dagster OSS records no user): kept in the history.")
    reason: str = Field(description="Why: kept in the asset's history.")


def build_reset_job(catalog: Sequence[CatalogEntity]) -> dg.JobDefinition:
    @dg.op(name="reset_extraction_state")
    def reset_extraction_state(context: dg.OpExecutionContext, config: ResetConfig) -> None:
        items = entities_named(catalog, config.entities)
        for item in items:
            key = raw_key(item.source_name, item.name)
            latest = _latest_metadata(context.instance, key)
            state = dict(latest.get(EXTRACTION_STATE_METADATA) or {})
            if config.undo:
                if RESET_PREVIOUS_STATE not in latest:
                    raise ResetError(
                        f"The latest materialization of {key.to_user_string()} is no reset (a run has landed "
                        f"since, or it was never reset): there is nothing to undo. Reset it again instead."
                    )
                new_state = dict(latest[RESET_PREVIOUS_STATE])
            else:
                new_state = reset_state(item, state, config.since)
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=key,
                    description=f"Extraction state {'restored' if config.undo else 'reset'} by "
                    f"{config.requested_by}: {config.reason}",
                    metadata={
                        LOAD_KIND_METADATA: latest.get(LOAD_KIND_METADATA, "append"),
                        LANDED_FILES_METADATA: dg.MetadataValue.json([]),
                        EXTRACTION_STATE_METADATA: dg.MetadataValue.json(new_state),
                        RESET_PREVIOUS_STATE: dg.MetadataValue.json(state),
                        RESET_SINCE: dg.MetadataValue.text(config.since or "the start"),
                        RESET_BY: dg.MetadataValue.text(config.requested_by),
                        RESET_REASON: dg.MetadataValue.text(config.reason),
                        **({RESET_UNDONE: dg.MetadataValue.bool(True)} if config.undo else {}),
                        "watermark_before": dg.MetadataValue.json(state.get("watermark")),
                        "watermark_after": dg.MetadataValue.json(new_state.get("watermark")),
                    },
                )
            )
            context.log.info(
                f"{key.to_user_string()}: watermark {state.get('watermark')} -> {new_state.get('watermark')}"
                f" ({'undo' if config.undo else 'reset'} by {config.requested_by}: {config.reason}); its "
                f"next run extracts from there"
            )

    @dg.job(
        name=RESET_JOB_NAME,
        description="Reset (or undo the reset of) incremental entities' extraction state, so their next "
        "run re-extracts a range; recorded in each raw asset's history.",
    )
    def reset_extraction() -> None:
        reset_extraction_state()

    return reset_extraction


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return {}
    return {name: getattr(value, "value", value) for name, value in materialization.metadata.items()}
