"""Staged layer: typed warehouse tables built from the landed files, with rows that break error-severity
row rules quarantined (`ops.quarantine`) instead of loaded, and two checks per table: `schema_contract`
(error-severity rules and key uniqueness; blocking: a failure stops everything downstream in the run) and
`quality_warnings` (warn-severity rules; reported, never blocking).

Which landed files make the table depends on how the raw asset loads: a `snapshot` extraction's own files
are the whole entity; `append` extractions (file deliveries, incremental tables and APIs) add up, each key
taken from its latest good extraction, and are staged incrementally when nothing else changed
(`staging_plan`)."""

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
import duckdb
from pydantic import Field, field_validator

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import ColumnType, Entity
from platform_assets.catalog.rules import (
    TYPE,
    column_severity,
    resolve_checks,
    resolve_model,
    split_label,
)
from platform_assets.factories.raw_assets import (
    EXTRACTION_STATE_METADATA,
    LANDED_FILES_METADATA,
    LOAD_KIND_METADATA,
    scaled_batch_rows,
)
from platform_assets.ingestion.bronze_route import bronze_landed, key_scans, retained_landing
from platform_assets.ingestion.files import (
    EMPTY_ENTRY,
    LEDGER_STATE,
    LEGACY_LEDGER_STATE,
    SET_ASIDE_ENTRY,
)
from platform_assets.keys import (
    STAGED_LAYER,
    STAGED_SCHEMA,
    WAREHOUSE_IO_MANAGER_KEY,
    WAREHOUSE_POOL,
    layer_group,
    raw_key,
    staged_key,
    staged_table,
)
from platform_assets.quality.contract_scope import delta_run, scope_metadata
from platform_assets.quality.profile import (
    TableProfile,
    duplicate_key_rows_after_upsert,
    profile_table,
    recorded_profile,
)
from platform_assets.quality.quarantine import (
    QUARANTINE_KEY,
    QUARANTINE_SCHEMA,
    QUARANTINE_TABLE,
    SplitSummary,
    StagingSplit,
    held_rows,
    over_threshold_message,
    record_resolved,
)
from platform_assets.quality.relationship_checks import last_orphan_rate
from platform_assets.quality.score import quality_metadata
from platform_assets.staging.column_hints import missing_column_hint, quoted_columns_hint
from platform_assets.staging.deletes import (
    Deleted,
    latest_key_scan,
    scan_is_new,
    settle_deletes,
    staged_keys,
)
from platform_assets.staging.null_markers import (
    LIKELY_NULL_MARKERS,
    cast_error_values,
    null_marker_hint,
    null_markers_in,
)
from platform_assets.staging.plan import (
    LandedList,
    LandedSet,
    StagingPlan,
    plan_staging,
    staged_through_of,
    staging_fingerprint,
)
from platform_assets.staging.redelivery import no_earlier_copies, redelivered
from platform_assets.staging.retention import apply_retention, rebuild_after_retention
from platform_assets.staging.schema_evolution import (
    DriftDecision,
    decide,
    dropped_columns_from_metadata,
    evolved_entity,
    staged_columns_from_metadata,
    staging_metadata,
    with_kept_evolutions,
)
from platform_assets.staging.schema_registry import (
    SchemaVersion,
    delivered_names_metadata,
    delivered_schema,
    delivered_time_zones,
    delivery_key,
    diff,
    expected_types,
    fingerprint,
    latest_materialization,
    merged_schema,
    merged_time_zones,
    previous_version,
    text_columns,
    text_types_hold,
)
from platform_assets.staging.sql import DUCKDB_TYPES, ORIGIN_COLUMN, staging_select
from resources.files.read_context import MalformedFileError
from resources.landing.delivered import landed_schema, malformed_copy_message
from resources.landing.query import staging_memory
from resources.landing.zone import LandingZone, Lineage, QuarantineFile
from resources.warehouses.base import Warehouse
from resources.warehouses.io_manager import TableUpdate, load_metadata

if TYPE_CHECKING:
    from platform_assets.quality.contract_validation import ContractReport

CONTRACT_CHECK_NAME = "schema_contract"
WARNINGS_CHECK_NAME = "quality_warnings"


class StagingConfig(dg.Config):
    batch_rows: int = 100_000
    """Rows per Arrow batch streamed into the warehouse: bounds the step's memory."""
    batch_scale: float = Field(default=1.0, gt=0, le=1)
    """Set by the healing layer after a memory failure: `batch_rows` is scaled by it."""
    on_drift: str | None = None
    """Set by an approved healing action: this run's drift action (evolve, quarantine or fail) instead
    of the catalog's."""
    replay: bool = False
    """Set by `dataplatform replay`: rebuild in full, so that the quarantined rows a relaxed rule or a fixed
    source or check now accepts are staged, and the quarantine marks them released."""

    @field_validator("on_drift")
    @classmethod
    def _drift_action(cls, value: str | None) -> str | None:
        if value not in (None, "evolve", "quarantine", "fail"):
            raise ValueError(f"on_drift must be evolve, quarantine or fail, not {value!r}")
        return value


class StagingError(RuntimeError):
    """The landed data cannot be staged as declared: names the file and what to change."""


class SchemaDriftError(StagingError):
    """The delivery's schema changed in a way the entity's evolution policy refuses."""


class BadRowsError(StagingError):
    """Too many delivered rows break error-severity rules (over `max_bad_fraction` of a delivery and more
    than one row, or all of them)."""


class UpstreamMissingError(StagingError):
    """The raw asset to stage from was never materialized, or its landed files are gone."""


def build_staged_asset(item: CatalogEntity, warehouse_kind: str) -> dg.AssetsDefinition:
    entity = item.entity
    upstream = raw_key(item.source_name, item.name)
    table = staged_table(item.source_name, item.name)
    checks = resolve_checks(item.source_name, item.name, entity)

    @dg.asset(
        key=staged_key(item.source_name, item.name),
        deps=[upstream],
        group_name=layer_group(STAGED_LAYER, item.source_name),
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
        context: dg.AssetExecutionContext, config: StagingConfig, landing: LandingZone, warehouse: Warehouse
    ) -> dg.Output[TableUpdate]:
        _remove_killed_runs_scratch(context, landing, table)
        landing.refresh(item.source_name, item.name)
        landed, appends = _landed_files(context, upstream, landing, item)
        declared = _with_drift_action(item, config)
        previous_metadata = _latest_metadata(context)
        # Read before this run writes anything (with the DuckDB warehouse, staging holds its file open).
        held = held_rows(warehouse, context.asset_key.to_user_string())
        first_plan = _replanned(
            plan_staging(
                landed,
                appends=appends,
                primary_key=entity.primary_key,
                previous=previous_metadata,
                table_exists=lambda: bool(warehouse.columns(STAGED_SCHEMA, table)),
            ),
            entity,
            replay=config.replay,
        )

        def decided(parse_text: bool) -> _Decided:
            with _malformed_copies_fail():
                return _decide(context, item, declared, first_plan, list(checks), parse_text=parse_text)

        def build(run: _Decided, type_counted: list[str]) -> StagingSplit:
            _enforce(context, declared, run)
            staged = run.decision.staged_entity(entity)
            columns = {name for path in run.plan.files for name in landed_schema(path, entity.headers).names}
            context.log.info(
                f"Staging {STAGED_SCHEMA}.{table} from {len(run.plan.files)} landed file(s), "
                f"{'incremental' if run.plan.incremental else 'full'}: {run.plan.reason}"
            )
            text = text_columns(run.plan.files, entity.headers)
            with _malformed_copies_fail():
                return StagingSplit(
                    staging_select(
                        staged, run.plan.files, columns, context.run.run_id, parsed=True, text=text
                    ),
                    staged,
                    checks,
                    warehouse.staging_database(landing.staging_scratch(context.run.run_id, table)),
                    (STAGED_SCHEMA, table),
                    spill_dir=landing.spill_dir(),
                    batch_rows=scaled_batch_rows(config.batch_rows, config.batch_scale),
                    memory=staging_memory(config.batch_scale, len(columns)),
                    type_counted=type_counted,
                    redelivered=redelivered(run.plan.files, no_earlier_copies)
                    if entity.file is not None
                    else (),
                    delivery=delivery_key(columns, file_column=ORIGIN_COLUMN),
                    parsed_copies=run.plan.files,
                )

        # Deciding the drift needs the types the landed text parses as: a pass over every value, which
        # staging makes anyway. So the decision first assumes each text column parses as expected; staging
        # counts what did not, and only when that breaks the assumption is the delivery scanned and staged
        # again (10 million rows: the scan was 1.3 s of a 9 s step).
        run = decided(parse_text=False)
        counted = _type_counted_columns(run, entity)
        if counted is None:
            run = decided(parse_text=True)
        split = build(run, counted or [])
        if counted and not text_types_hold(split.type_counts, entity.max_bad_fraction):
            split.close()
            context.log.info(
                f"{item.source_name}.{item.name}: more of the delivered text than the tolerance did not "
                "parse as expected; scanning it to decide whether it drifted"
            )
            run = decided(parse_text=True)
            split = build(run, [])
        plan, previous, delivered, decision = run.plan, run.previous, run.delivered, run.decision
        staged = decision.staged_entity(entity)
        try:
            not_rebuilt = (
                {}
                if plan.incremental
                else rebuild_after_retention(
                    entity.retention,
                    landed.removed_count(),
                    plan.reason,
                    f"{item.source_name}.{item.name}",
                    f"{STAGED_SCHEMA}.{table}",
                )
            )
            if not_rebuilt:
                context.log.warning(
                    f"{item.source_name}.{item.name}: rebuilt in full from the landed files left; "
                    f"{landed.removed_count()} removed by retention were not read (`rebuild: from_remaining`)"
                )
            summary = split.summary(decision.quarantine_rules())
            markers = (
                null_marker_hint(split.cast_error_values(LIKELY_NULL_MARKERS))
                if any(split_label(rule)[1] == TYPE for rule in summary.by_rule)
                else ""
            )
            if summary.total and summary.bad == summary.total and not plan.incremental:
                raise BadRowsError(
                    f"{item.source_name}.{item.name}: every one of the {summary.total} delivered rows breaks "
                    f"a rule ({dict(summary.by_rule)}); staging none of them would empty "
                    f"{STAGED_SCHEMA}.{table}. Nothing was written. Fix the delivery, or the catalog."
                    f"{markers}"
                )
            if (refused := summary.refused(entity.max_bad_fraction)) is not None:
                raise BadRowsError(
                    over_threshold_message(
                        f"{item.source_name}.{item.name}",
                        f"{STAGED_SCHEMA}.{table}",
                        summary,
                        refused,
                        entity.max_bad_fraction,
                    )
                    + markers
                )
            set_aside = _set_aside(context, item, landing, split.malformed)
            deleted = _settle_deletes(split, plan, staged, item, landing, warehouse, previous_metadata)
            quarantined = (
                split.quarantine_rows(context.asset_key.to_user_string(), context.run.run_id)
                if summary.bad
                else None
            )
            # A full run profiles its rows in the staging database, within staging's (healable) memory bound;
            # an incremental one can only profile the whole table once its rows are upserted (`describe`).
            # One that stages nothing leaves its table as it was: the profile recorded last still holds.
            unchanged = recorded_profile(previous_metadata) if plan.incremental and not plan.files else None
            profile = unchanged if plan.incremental else split.profile(staged)
            known_duplicates = (
                duplicate_key_rows_after_upsert(
                    previous_metadata, lambda: split.profile(staged).duplicate_key_rows
                )
                if plan.incremental
                else None
            )
            resolved = split.resolved(held)
            rows = split.staged_rows()
        except BaseException:
            split.close()
            raise
        if not summary.total:
            context.log.info(_no_rows_message(item, plan, f"{STAGED_SCHEMA}.{table}"))
        if quarantined is not None:
            # Written before the staged table (the IO manager loads it after this returns): should that
            # load fail, these rows stay, tagged with this run's id, and the staged table keeps its
            # previous contents; the retry finds them again and upserts them under its own run id.
            context.log.warning(
                f"Quarantining {summary.bad} of {summary.total} row(s) of {STAGED_SCHEMA}.{table} into "
                f"{QUARANTINE_SCHEMA}.{QUARANTINE_TABLE}: {dict(summary.by_rule)}.{markers}"
            )
            try:
                warehouse.load(
                    QUARANTINE_SCHEMA,
                    QUARANTINE_TABLE,
                    quarantined,
                    mode="upsert",
                    primary_key=QUARANTINE_KEY,
                )
            except BaseException:
                rows.close()
                raise
        retained = apply_retention(
            entity.retention,
            landed=retained_landing(landing, item, landed),
            staged_through=staged_through_of(previous_metadata),
            reads_only_new=plan.incremental or not appends,
            warehouse=warehouse,
            asset_key=context.asset_key.to_user_string(),
            quarantine_table=(QUARANTINE_SCHEMA, QUARANTINE_TABLE),
            quarantine_dir=landing.quarantine_dir(item.source_name, item.name),
            now=datetime.now(UTC),
        )
        if entity.retention is not None:
            context.log.info(f"{item.source_name}.{item.name}: {retained.summary()}")
        orphan_rate = last_orphan_rate(context.instance, context.asset_key)

        def quality(profile: TableProfile) -> dict[str, dg.MetadataValue]:
            score = quality_metadata(profile, staged, rows_quarantined=summary.bad, orphan_rate=orphan_rate)
            return {**profile.metadata(), **score}

        def describe(loaded: Warehouse, schema: str, name: str) -> dict[str, dg.MetadataValue]:
            """Once the load committed: the quarantine rows it resolves marked so (before, a failed load
            would leave them resolved by rows never staged); after an upsert, the whole table's size,
            profile and quality score, from the warehouse."""
            counts = record_resolved(loaded, resolved)
            recorded = {f"quarantine/{status}": dg.MetadataValue.int(n) for status, n in counts.items()}
            if unchanged is not None:
                recorded["dagster/row_count"] = dg.MetadataValue.int(unchanged.rows)
            elif profile is None:
                whole = profile_table(loaded, schema, name, staged, duplicate_key_rows=known_duplicates)
                recorded.update({"dagster/row_count": dg.MetadataValue.int(whole.rows), **quality(whole)})
            return recorded

        return dg.Output(
            TableUpdate(rows, mode="upsert" if plan.incremental else None, describe=describe),
            metadata={
                "landed_files": landed.summary()[0],
                "staged_files": len(plan.files),
                "rows_delivered": summary.total,
                **plan.metadata(run.fingerprint),
                **_quarantine_metadata(summary),
                **set_aside,
                **deleted.metadata(),
                **staging_metadata(previous, delivered, decision, run.timezones),
                **delivered_names_metadata(
                    plan.files, entity.headers, previous_metadata, incremental=plan.incremental
                ),
                **(quality(profile) if profile is not None else {}),
                **(retained.metadata() if entity.retention is not None else {}),
                **not_rebuilt,
            },
        )

    return staged_entity


def _quarantine_metadata(summary: SplitSummary) -> dict[str, dg.MetadataValue]:
    """What staging set aside. (Other per-materialization metadata, e.g. a profile, belongs beside it.)"""
    return {
        "rows_quarantined": dg.MetadataValue.int(summary.bad),
        "rows_quarantined_for_drift": dg.MetadataValue.int(summary.drifted),
        "quarantined_by_rule": dg.MetadataValue.json(dict(summary.by_rule)),
        "bad_fraction": dg.MetadataValue.float(round(summary.bad_fraction, 6)),
    }


@contextlib.contextmanager
def _malformed_copies_fail() -> Iterator[None]:
    """A delivered copy DuckDB cannot parse as declared fails the step as a malformed file (what landing
    raised when it parsed the delivery: the healing layer's `malformed_file`), naming file and line."""
    try:
        yield
    except duckdb.InvalidInputException as error:
        message = malformed_copy_message(error)
        if message is None:
            raise
        raise MalformedFileError(message) from error


def _set_aside(
    context: dg.AssetExecutionContext,
    item: CatalogEntity,
    landing: LandingZone,
    malformed: list[dict[str, object]],
) -> dict[str, dg.MetadataValue]:
    """Write the malformed records the scan set aside (`on_malformed: skip`: a delivered copy is parsed
    here, not at landing) to the entity's landing quarantine, as landing sets aside those of the formats it
    parses; their count, and the file, for the materialization."""
    if not malformed:
        return {}
    quarantine = QuarantineFile(
        landing.quarantine_dir(item.source_name, item.name) / f"{context.run.run_id}.parquet",
        Lineage(f"{item.source_name}.{item.name}", datetime.now(UTC), context.run.run_id),
    )
    for record in malformed:
        quarantine.add(record)
    quarantine.close()
    landing.keep_quarantine(item.source_name, item.name)
    context.log.warning(
        f"{quarantine.count} malformed record(s) set aside in {quarantine.path}; first: "
        f"{quarantine.examples[0]}"
    )
    return {
        "malformed_records": dg.MetadataValue.int(quarantine.count),
        "quarantine_file": dg.MetadataValue.path(str(quarantine.path)),
    }


def _settle_deletes(
    split: StagingSplit,
    plan: StagingPlan,
    staged: Entity,
    item: CatalogEntity,
    landing: LandingZone,
    warehouse: Warehouse,
    previous: Mapping[str, object] | None,
) -> Deleted:
    """Remove from the run's rows, or mark as tombstones for the load, the keys deleted at the source
    (`staging/deletes.py`). An incremental run judges the staged keys only against a scan newer than
    what it staged before; a full run judges its rows against the latest scan."""
    after = staged_through_of(previous) if plan.incremental else None
    scan = latest_key_scan(staged, plan.landed, lambda: key_scans(landing, item, plan.landed, after))
    keys = None
    if plan.incremental:
        scan = scan if scan_is_new(scan, previous) else None
        if scan is not None:
            keys = staged_keys(
                split.con,
                warehouse,
                (STAGED_SCHEMA, staged_table(item.source_name, item.name)),
                staged.primary_key,
                in_warehouse=split.database.in_warehouse,
                batch_rows=split.batch_rows,
            )
    return settle_deletes(
        split.con, split.table, staged, incremental=plan.incremental, scan=scan, staged=keys
    )


def build_contract_checks(item: CatalogEntity) -> list[dg.AssetChecksDefinition]:
    """Both checks of a staged table: `schema_contract` (blocking) and `quality_warnings`."""
    return [build_contract_check(item, "error"), build_contract_check(item, "warn")]


def build_contract_check(
    item: CatalogEntity, severity: Literal["error", "warn"] = "error"
) -> dg.AssetChecksDefinition:
    error = severity == "error"
    checks = resolve_checks(item.source_name, item.name, item.entity)
    if error and item.entity.pandera_model is not None:  # fails the code location now, naming the entity
        resolve_model(item.entity.pandera_model, f"{item.source_name}.{item.name}")
    description = (
        "Error-severity rules declared in the catalog (types, nullability, ranges, allowed values, regex, "
        "lengths, custom checks; Pandera, batch by batch) and key uniqueness (primary key, unique columns "
        "and composite keys, computed by the warehouse). Blocking: a failure stops downstream models in "
        "the run."
        if error
        else "Rules declared with `severity: warn` in the catalog (Pandera, batch by batch; unique columns "
        "computed by the warehouse), and new delivered columns the catalog does not declare, dropped by "
        "staging (`on_drift` other than evolve). Reported, never blocking."
    )

    @dg.asset_check(
        asset=staged_key(item.source_name, item.name),
        name=CONTRACT_CHECK_NAME if error else WARNINGS_CHECK_NAME,
        blocking=error,
        pool=WAREHOUSE_POOL,
        description=description,
    )
    def contract(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
        # Imported here, not at the top: pandas and Pandera take seconds to import, and loading the code
        # location (every `dagster dev` reload, every run worker) should not pay for them.
        from platform_assets.quality.contract_validation import validate_staged_table

        latest = latest_materialization(context.instance, staged_key(item.source_name, item.name))
        metadata = latest[0].metadata if latest else {}
        check_name = CONTRACT_CHECK_NAME if error else WARNINGS_CHECK_NAME
        only_run = delta_run(
            context.instance, dg.AssetCheckKey(staged_key(item.source_name, item.name), check_name)
        )
        report = validate_staged_table(
            warehouse, _as_last_staged(metadata, item), severity=severity, checks=checks, only_run=only_run
        )
        hint = null_marker_hint(
            value
            for violation in report.examples
            if violation.rule == TYPE
            for value in cast_error_values(violation.value, violation.column)
        )
        if not report.passed:
            log = context.log.error if error else context.log.warning
            log(
                f"{item.source_name}.{item.name}: {report.violation_count} {severity}-severity "
                f"violation(s): {dict(report.counts)}{hint}"
            )
        # A dropped column is no row's fault, so no rule's: it is reported here, with the warnings, because
        # a failed check is what the quality-events sensor records and the healing layer and alerts read.
        dropped = [] if error else dropped_columns_from_metadata(metadata)
        return dg.AssetCheckResult(
            passed=report.passed and not dropped,
            severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
            metadata={
                **_report_metadata(item, report),
                **scope_metadata(latest, only_run),
                **({"dropped_columns": dg.MetadataValue.json(dropped)} if dropped else {}),
                **({"hint": dg.MetadataValue.text(hint.strip())} if hint else {}),
            },
        )

    return contract


def _remove_killed_runs_scratch(context: dg.AssetExecutionContext, landing: LandingZone, table: str) -> None:
    """Remove the staging scratch files of `table` that killed runs left (PostgreSQL and BigQuery stage in
    a scratch DuckDB file; a SIGKILLed step cannot remove its own). Kept: the files of runs Dagster still
    has in progress (this one, and a concurrent run of the asset should the warehouse pool admit two). A
    run whose whole worker was killed stays in progress until Dagster marks it failed; its file goes
    with the first run of the asset after that."""

    def in_progress(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    for path in landing.remove_staging_leftovers(table, in_progress):
        context.log.info(f"Removed {path.name}, staging scratch a killed (or finished) run left")


def _landed_files(
    context: dg.AssetExecutionContext, upstream: dg.AssetKey, landing: LandingZone, item: CatalogEntity
) -> tuple[LandedSet, bool]:
    """The entity's landed files, and whether they add up (`append`: its landed index, which staging asks
    without opening every file) rather than each extraction's being the whole entity (`snapshot`)."""
    event = context.instance.get_latest_materialization_event(upstream)
    materialization = event.asset_materialization if event else None
    if materialization is None or LOAD_KIND_METADATA not in materialization.metadata:
        raise UpstreamMissingError(
            f"{upstream.to_user_string()} has never been materialized; materialize it first "
            f"(or select it together with this asset)."
        )
    appends = materialization.metadata[LOAD_KIND_METADATA].value == "append"
    latest = [
        landing.cached(item.source_name, item.name, Path(p))
        for p in materialization.metadata[LANDED_FILES_METADATA].value
    ]
    snapshot = None if appends else [path.name for path in latest]
    in_bronze = bronze_landed(landing, item, context.run.run_id, snapshot)
    if in_bronze is not None:
        return in_bronze, appends
    if appends:
        index = landing.landed_index(item.source_name, item.name)
        count, _, _ = index.summary()
        state = materialization.metadata.get(EXTRACTION_STATE_METADATA)
        never_landed = count == 0 and not index.removed_count()
        # The oldest and newest landed files stand for the rest: a cleaned-up landing zone loses them all,
        # and checking each of 100,000 files would cost what the index saves (raw's next run reconciles).
        gone = index.spot_check()
        if gone or (never_landed and state is not None and _landed_a_copy(state.value)):
            raise UpstreamMissingError(
                f"{upstream.to_user_string()} landed rows, but landed files of {item.source_name}."
                f"{item.name} are gone from {landing.root} ({', '.join(map(str, gone[:2])) or 'all'}). "
                f"Re-materialize {upstream.to_user_string()}: it lands again every delivered file whose "
                f"landed copy is gone."
            )
        return index, True
    gone = [p for p in latest if not p.exists()]
    if gone:
        raise UpstreamMissingError(
            f"Files landed by the latest {upstream.to_user_string()} run are gone: {gone[:3]}. "
            f"Re-materialize {upstream.to_user_string()}."
        )
    return LandedList(latest), False


def _no_rows_message(item: CatalogEntity, plan: StagingPlan, table: str) -> str:
    """Why a run staged no row, and what became of the table: no data today is normal, not a failure."""
    entity = f"{item.source_name}.{item.name}"
    kept = "is left as it was" if plan.incremental else "is staged empty, with the declared columns"
    if plan.incremental and not plan.files:
        return f"{entity}: no new rows to stage (nothing landed since the last run); {table} {kept}."
    if plan.files:
        what = f"its {len(plan.files)} landed file(s) hold no rows (a header only)"
    else:
        what = "no file with rows was landed (none delivered yet, or only empty ones)"
    return f"{entity}: the delivery had no rows: {what}; {table} {kept}."


def _landed_a_copy(state: Mapping[str, object]) -> bool:
    """Whether an extraction state says something was landed: a watermark or cursor, or a file ledger
    naming a copy. A ledger of only empty deliveries (a 0-byte file: no data today) or of files set aside
    (`on_bad_file: skip`) landed nothing, so staging them is staging no rows, not a missing upstream that
    re-materializing would bring back."""
    summary = state.get(LEDGER_STATE)
    if isinstance(summary, Mapping):
        return bool(summary.get("with_copies"))
    ledger = state.get(LEGACY_LEDGER_STATE)
    if not isinstance(ledger, Mapping):
        return bool(state)
    return any(not entry.get(EMPTY_ENTRY) and SET_ASIDE_ENTRY not in entry for entry in ledger.values())


def _replanned(plan: StagingPlan, entity: Entity, *, replay: bool) -> StagingPlan:
    """The plan, rebuilt in full for a replay, or when its new files re-deliver a file: withdrawing the
    replaced rows takes the full set of landed files (`platform_assets/staging/redelivery.py`)."""
    if replay:
        return plan.rebuild("a replay of the quarantine was asked for (dataplatform replay)")
    again = (
        redelivered(plan.files, plan.landed.delivered_before)
        if plan.incremental and entity.file is not None
        else []
    )
    if again:
        return plan.rebuild(f"re-delivered file(s) replace their earlier rows: {', '.join(again[:3])}")
    return plan


def _latest_metadata(context: dg.AssetExecutionContext) -> Mapping[str, object] | None:
    latest = latest_materialization(context.instance, context.asset_key)
    return latest[0].metadata if latest else None


def _as_last_staged(metadata: Mapping[str, object], item: CatalogEntity) -> CatalogEntity:
    """The entity with the columns and types its latest materialization (`metadata`) staged: after a
    schema evolution the table has widened or added columns, and the contract is checked against what was
    staged."""
    staged = staged_columns_from_metadata(metadata)
    return replace(item, entity=evolved_entity(item.entity, *staged)) if staged else item


def _with_drift_action(item: CatalogEntity, config: StagingConfig) -> CatalogEntity:
    """The entity with this run's `on_drift` (an approved healing action), else as declared."""
    if config.on_drift is None:
        return item
    policy = item.entity.schema_evolution.model_copy(update={"on_drift": config.on_drift})
    return replace(item, entity=item.entity.model_copy(update={"schema_evolution": policy}))


@dataclass(frozen=True)
class _Decided:
    """What a staging run stages: the plan, the schema decision, and the fingerprint it records."""

    plan: StagingPlan
    previous: SchemaVersion | None
    delivered: dict[str, ColumnType]
    timezones: dict[str, str]
    """The zoned timestamp columns of `delivered` (`delivered_time_zones`)."""
    decision: DriftDecision
    fingerprint: str

    @property
    def schema_changed(self) -> bool:
        """Whether the delivered schema differs from the last staged version (before the first one: from
        the declared columns). Not whether it differs from the declaration: a column evolved before stays
        evolved, and the runs after it are no drift."""
        if self.previous is None:
            return not self.decision.unchanged
        return fingerprint(self.delivered, self.timezones) != self.previous.fingerprint


def _decide(
    context: dg.AssetExecutionContext,
    item: CatalogEntity,
    declared: CatalogEntity,
    plan: StagingPlan,
    check_names: list[str],
    *,
    parse_text: bool,
) -> _Decided:
    """The schema decision for `plan` (`declared`: the entity with this run's drift action), and the plan
    rebuilt in full when the schema or the fingerprint (of the entity as catalogued) says so."""

    def decided(plan: StagingPlan) -> _Decided:
        previous, delivered, decision = _schema_decision(context, declared, plan, parse_text=parse_text)
        fingerprint = staging_fingerprint(decision.staged_entity(item.entity), check_names)
        timezones = _time_zones(plan, previous, item.entity)
        return _Decided(plan, previous, delivered, timezones, decision, fingerprint)

    run = decided(plan)
    rebuild = plan.incremental and plan.rebuild_reason(run.fingerprint, schema_changed=run.schema_changed)
    return decided(plan.rebuild(rebuild)) if rebuild else run


def _type_counted_columns(run: _Decided, entity: Entity) -> list[str] | None:
    """The text-landed columns whose assumed types staging verifies by counting their type failures; None
    when the decision cannot rest on the assumption: the delivery changed otherwise (drift is then decided
    on scanned types, as always), or a column's type failures are not marked (a warn-severity column)."""
    if run.schema_changed:
        return None
    staged = run.decision.staged_entity(entity)
    text = text_columns(run.plan.files, entity.headers)
    counted = [
        name for name, column in staged.columns.items() if name in text and column.type != ColumnType.STRING
    ]
    if any(column_severity(staged, name) != "error" for name in counted):
        return None
    return counted


def _schema_decision(
    context: dg.AssetExecutionContext, item: CatalogEntity, plan: StagingPlan, *, parse_text: bool
) -> tuple[SchemaVersion | None, dict[str, ColumnType], DriftDecision]:
    """The schema of the files the plan stages against the last staged version and the entity's evolution
    policy: what to stage (`_enforce` refuses a `fail`). An incremental run adds its files to the table, so
    it delivers the last staged version merged with its new files' schema (the version itself when there
    is no new file): what a full run over every file would find. Without `parse_text`, text columns are
    taken to parse as expected. A declared column an evolution widened or relaxed stays so
    (`with_kept_evolutions`): the next delivery of that type is no drift to approve again."""
    entity = with_kept_evolutions(item.entity, _latest_metadata(context) or {})
    previous = previous_version(context.instance, context.asset_key)
    declared = {name: column.type for name, column in entity.columns.items()}
    delivered = delivered_schema(
        plan.files,
        expected_types(declared, previous),
        tolerance=entity.max_bad_fraction,
        parse_text=parse_text,
        formats=entity.text_format,
        headers=entity.headers,
    )
    if plan.incremental and previous is not None:
        delivered = merged_schema(previous.column_types(), delivered)
    return previous, delivered, decide(entity, previous, delivered)


def _time_zones(plan: StagingPlan, previous: SchemaVersion | None, entity: Entity) -> dict[str, str]:
    """The zoned timestamp columns of the files the plan stages; an incremental run's are the last
    version's, updated by its new files' (as `_schema_decision` merges their types)."""
    delivered = delivered_time_zones(plan.files, entity.headers)
    before = previous.timezones if plan.incremental and previous is not None else {}
    return merged_time_zones(before, delivered)


def _enforce(context: dg.AssetExecutionContext, item: CatalogEntity, run: _Decided) -> None:
    """Log the decision's violations (a warning when this delivery brought them, else a reminder of a
    drift staged before) and the new columns it drops; a StagingError naming each violation when the
    policy says fail."""
    plan, decision = run.plan, run.decision
    log = context.log.warning if run.schema_changed else context.log.info
    hint = _drift_null_marker_hint(item, run) if run.schema_changed or decision.action == "fail" else ""
    for message in decision.violations:
        log(f"{item.source_name}.{item.name}: {message}")
    for name, (old, new) in diff(run.previous, run.delivered, run.timezones).timezone_changed.items():
        context.log.warning(
            f"{item.source_name}.{item.name}: {name} is delivered {_zoned(new)}, was {_zoned(old)}: a new "
            f"schema version, staged as before (every value converted to its exact UTC instant; a naive "
            f"one read in the column's declared timezone, UTC when none)"
        )
    if hint:
        log(f"{item.source_name}.{item.name}:{hint}")
    renamed = missing_column_hint(item.entity, decision.absent_columns, run.delivered)
    if renamed:
        context.log.warning(f"{item.source_name}.{item.name}:{renamed}")
    if decision.action == "evolve" and (quoted := quoted_columns_hint(item.entity, decision.changes.added)):
        log(f"{item.source_name}.{item.name}:{quoted}")
    if decision.dropped_columns:
        on_drift = item.entity.schema_evolution.on_drift
        context.log.warning(
            f"{item.source_name}.{item.name}: the delivery brings new column(s) the catalog does not "
            f"declare, dropped: {', '.join(decision.dropped_columns)} (on_drift {on_drift} stages declared "
            f"columns only). Declare them under columns, or set schema_evolution.on_drift: evolve."
        )
    if decision.action == "fail":
        raise SchemaDriftError(
            f"{item.source_name}.{item.name}: the delivery's schema drifted and the policy says fail "
            f"({len(plan.files)} landed file(s)): {'; '.join(decision.violations)}. Fix the delivery, or "
            f"change the catalog (declare the change, or set schema_evolution.on_drift).{hint}{renamed}"
        )


def _zoned(zone: str | None) -> str:
    return f"with time zone {zone}" if zone is not None else "without time zone (naive)"


def _drift_null_marker_hint(item: CatalogEntity, run: _Decided) -> str:
    """The null-marker hint for the text columns whose type drifted: a column of numbers with `NA` for the
    missing ones does not parse as a number, and drifts to string, which says nothing of the marker."""
    text = text_columns(run.plan.files, item.entity.headers)
    drifted = [name for name in run.decision.changes.type_changed if name in text]
    if not drifted:
        return ""
    found = null_markers_in(run.plan.files, drifted, item.entity.null_values or (), item.entity.headers)
    return null_marker_hint(value for values in found.values() for value in values)


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
