"""Which rows of a staged table a contract check validates: all of them, or only those the latest run
staged.

An incremental staging run upserts its rows (the delta) into the table: it replaces the rows whose key the
delta brings, deletes rows a delivery withdrew, and leaves every other row as it was. When the same check
passed on the materialization just before, under the same staging fingerprint (the same columns, types and
rules), every row the upsert left was validated then; only a delta row can break a row rule now, and only a
key the delta brings can repeat. So validating the delta, and the keys it brings, is validating the table,
at the delta's cost instead of the table's: an incremental run that brings 1% of a table pays for 1%.

Whenever that chain breaks, the whole table is validated: a full rebuild, a changed fingerprint, a first
run, a check that failed, or one that did not run on the materialization before (its rows never validated).
The check records which materialization it validated (`VALIDATED_RUN`) and under which fingerprint, so the
next one can tell.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

from platform_assets.staging.plan import FINGERPRINT_METADATA, MODE_METADATA

VALIDATED_RUN = "validated_run"
"""The run of the staged materialization a check validated."""
VALIDATED_FINGERPRINT = "validated_fingerprint"
SCOPE = "scope"


def delta_run(instance: dg.DagsterInstance, check: dg.AssetCheckKey) -> str | None:
    """The run whose rows alone `check` needs to validate (the latest materialization's, when the chain
    holds), None to validate the whole table."""
    records = instance.fetch_materializations(check.asset_key, limit=2).records
    if len(records) < 2:
        return None
    latest, before = records
    materialization = latest.asset_materialization
    if materialization is None or _value(materialization.metadata.get(MODE_METADATA)) != "incremental":
        return None
    # The latest completed execution: the one planned for the current run has no result yet.
    history = instance.event_log_storage.get_asset_check_execution_history(
        check, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
    )
    evaluation = history[0].event.asset_check_evaluation if history and history[0].event else None
    if evaluation is None or not evaluation.passed:
        return None
    validated = evaluation.metadata
    if _value(validated.get(VALIDATED_RUN)) != before.run_id:
        return None
    if _value(validated.get(VALIDATED_FINGERPRINT)) != _value(
        materialization.metadata.get(FINGERPRINT_METADATA)
    ):
        return None
    return latest.run_id


def scope_metadata(
    latest: tuple[dg.AssetMaterialization, str] | None, only_run: str | None
) -> dict[str, dg.MetadataValue]:
    """What a check records so the next one can continue the chain, and what it read, for a person."""
    if latest is None:
        return {}
    materialization, run_id = latest
    fingerprint = _value(materialization.metadata.get(FINGERPRINT_METADATA))
    return {
        VALIDATED_RUN: dg.MetadataValue.text(run_id),
        **({VALIDATED_FINGERPRINT: dg.MetadataValue.text(str(fingerprint))} if fingerprint else {}),
        SCOPE: dg.MetadataValue.text(
            "whole table"
            if only_run is None
            else f"rows staged by run {only_run} and the keys they bring (the table passed this check "
            "on the materialization before, under the same fingerprint)"
        ),
    }


def _value(entry: object) -> object:
    return entry.value if isinstance(entry, dg.MetadataValue) else entry
