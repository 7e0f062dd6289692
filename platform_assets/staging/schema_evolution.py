"""What a staging run does when the delivered schema differs from the declared one: pure decisions, no
I/O (`decide`), from the entity's `schema_evolution` policy (see `catalog_model.SchemaEvolution`).

**Reference.** A delivery is compared with the *reference*: the declared columns (declared types and
nullability; primary-key columns are never nullable) and, under `on_drift: evolve` only, the undeclared
columns of the previous version (added by evolution before; nullable). Without `evolve`, undeclared
columns are outside the contract: reported in `changes`, never staged, never a violation. One that is new
since the previous version is `dropped_columns`: staging warns about it and the `quality_warnings` check
fails (a quality event), so a column the source started sending is not lost unnoticed.

**Changes** against the reference: a column *added* (delivered, not in the reference), *removed* (in the
reference, not delivered), *retyped* (delivered with a type the reference type cannot hold: integer ->
string, integer -> double, date -> timestamp, ...). A delivered type the reference type holds (integer
delivered for a double column, date for a timestamp, anything for a string) is not a change: staging
casts it without loss. Nor is a timestamp column's time zone turning on, off or changing (Parquet
`timestamp[tz=UTC]` after naive files): staging converts zoned values to their exact UTC instant and naive
ones from the declared `timezone`, so the staged type and readers are unaffected under every policy; the
change is a new schema version, recorded in its diff and logged (`schema_registry`), not drift.

**Compatibility** (Confluent-style, per `compatibility`) says which changes of the *staged table* its
readers (dbt models, analysts) must accept: `backward` = new readers read old data, `forward` = old readers
read new data, `full` = both, `none` = no check. The `compatible` flag reports the delivery's changes:

| delivery change | backward | forward | full | none |
|---|---|---|---|---|
| column added (always nullable: nothing declares it) | ok | ok | ok | ok |
| nullable column removed | ok | ok | ok | ok |
| non-nullable column removed | ok | - | - | ok |
| column retyped | - | - | - | ok |

**Action.** What the staging run does depends on `on_drift` and on whether the *staged* change it would
make is allowed by the mode. Only `evolve` changes the staged table's schema: adding a nullable column
(allowed in every mode), widening a column's type (old readers would meet values their type cannot hold:
allowed under `backward` and `none` only) and relaxing a non-nullable column to nullable (the same).
`quarantine` and `fail` never change the staged schema, so every mode allows them. In this order:
1. a primary-key column is missing: `fail`, whatever the mode and `on_drift`;
2. a declared non-nullable column is missing: `evolve` where the mode allows relaxing it (the column is
   staged as NULL and becomes nullable: `relaxed_columns`); `quarantine`: the column is staged as NULL
   and the rows lacking it break its `nullable` rule and go to quarantine (up to `max_bad_fraction`);
   otherwise `fail`;
3. no retyped column: `none` (`evolve` when `on_drift: evolve` stages added columns);
4. a retyped column: `fail` under `on_drift: fail`; `quarantine` keeps the declared types and sends rows
   whose retyped value does not cast to quarantine (`quarantine_columns`); `evolve` widens the staged
   column to the type holding both (integer -> double, date -> timestamp, anything else -> string only
   with `allow_string_widening`) where the mode allows widening, and fails otherwise.

`none` and `backward` act alike: the platform never adds a required column, the one change `backward`
refuses and `none` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import dagster as dg

from platform_assets.catalog.model import Column, ColumnType, Entity
from platform_assets.catalog.rules import TYPE, rule_label
from platform_assets.staging.schema_registry import (
    SchemaDiff,
    SchemaVersion,
    common_type,
    diff,
    next_version,
    schema_metadata,
    widens_to,
)

Action = Literal["none", "evolve", "quarantine", "fail"]

RESERVED_COLUMNS = frozenset(
    {"_cast_errors", "_violations", "_origin", "_record", "_loaded_at", "_run_id", "_source", "_extracted_at"}
)
"""Columns staging adds itself (staging_sql): a delivered column of that name is never staged."""

EVOLVED_DESCRIPTION = "Added by schema evolution (not declared in the catalog)."


@dataclass(frozen=True)
class DriftDecision:
    compatible: bool
    """Every change is allowed by the entity's `compatibility` mode."""
    violations: list[str]
    """One message per incompatible change or type drift: column, old and new type, the rule, the action."""
    action: Action
    stage_columns: dict[str, ColumnType]
    """The staged table's columns: declared ones (widened under `evolve`), then evolved additions."""
    quarantine_columns: list[str] = field(default_factory=list)
    """Under `quarantine`: columns whose values that do not cast to the staged type send rows to
    quarantine."""
    absent_columns: list[str] = field(default_factory=list)
    """Staged columns the delivery lacks (removed nullable columns): staged as NULL of their type."""
    changes: SchemaDiff = field(default_factory=SchemaDiff)
    """Reference -> delivery (added, removed, retyped), for logs and metadata."""
    relaxed_columns: list[str] = field(default_factory=list)
    """Under `evolve`: declared non-nullable columns the delivery lacks, staged as nullable NULLs."""
    dropped_columns: list[str] = field(default_factory=list)
    """Without `evolve`: delivered columns the catalog does not declare, new since the previous version
    (every undeclared one for the first): not staged."""

    def quarantine_rules(self) -> frozenset[str]:
        """Rule labels of the rows quarantined for drift (the type rule of each `quarantine_columns`):
        they go to quarantine outside `max_bad_fraction`, which bounds data quality, not drift."""
        return frozenset(rule_label(name, TYPE) for name in self.quarantine_columns)

    @property
    def unchanged(self) -> bool:
        """The delivery matches the last staged version: nothing to evolve, quarantine or report."""
        return self.changes.empty and self.action == "none" and not self.violations

    @property
    def widened(self) -> dict[str, ColumnType]:
        """Staged columns whose type differs from the declared one, with their staged type."""
        return {
            name: kind
            for name, kind in self.stage_columns.items()
            if name in self.changes.type_changed and kind.value != self.changes.type_changed[name][0]
        }

    def staged_entity(self, entity: Entity) -> Entity:
        """`entity` with the staged columns (see `evolved_entity`): pass it to the staging SQL and the
        contract instead of the declared entity."""
        return evolved_entity(entity, self.stage_columns, self.relaxed_columns)

    def metadata(self) -> dict[str, dg.MetadataValue]:
        """Materialization metadata of the decision; `schema/staged_columns` is what the contract check
        reads back (`staged_columns_from_metadata`) to validate the table as it was staged."""
        return {
            ACTION_METADATA: dg.MetadataValue.text(self.action),
            COMPATIBLE_METADATA: dg.MetadataValue.bool(self.compatible),
            VIOLATIONS_METADATA: dg.MetadataValue.json(list(self.violations)),
            STAGED_COLUMNS_METADATA: dg.MetadataValue.json(
                {name: kind.value for name, kind in self.stage_columns.items()}
            ),
            RELAXED_METADATA: dg.MetadataValue.json(list(self.relaxed_columns)),
            DROPPED_METADATA: dg.MetadataValue.json(list(self.dropped_columns)),
        }


ACTION_METADATA = "schema/action"
COMPATIBLE_METADATA = "schema/compatible"
VIOLATIONS_METADATA = "schema/violations"
STAGED_COLUMNS_METADATA = "schema/staged_columns"
RELAXED_METADATA = "schema/relaxed_columns"
DROPPED_METADATA = "schema/dropped_columns"


def evolved_entity(
    entity: Entity, stage_columns: Mapping[str, ColumnType | str], relaxed: Iterable[str] = ()
) -> Entity:
    """`entity` with `stage_columns`: declared columns with their staged type (numeric rules dropped from
    a column widened to string; `relaxed` ones made nullable), other columns as nullable evolved additions,
    in `stage_columns`' order. A copy, not revalidated; the declared entity is unchanged."""
    relaxed = set(relaxed)
    columns: dict[str, Column] = {}
    for name, value in stage_columns.items():
        kind = ColumnType(value)
        declared = entity.columns.get(name)
        if declared is None:
            columns[name] = Column(type=kind, nullable=True, description=EVOLVED_DESCRIPTION)
            continue
        update: dict[str, object] = {}
        if declared.type != kind:
            update["type"] = kind
            if kind == ColumnType.STRING:
                update.update(min=None, max=None)
        if name in relaxed:
            update["nullable"] = True
        columns[name] = declared.model_copy(update=update) if update else declared
    return entity.model_copy(update={"columns": columns})


def with_kept_evolutions(entity: Entity, metadata: Mapping[str, object]) -> Entity:
    """`entity` with what evolutions made of its declared columns kept (`metadata`: the last staging run's):
    a declared column staged wider (an approved `evolve_schema`, or `on_drift: evolve`) keeps the wider
    type, and one relaxed stays nullable, so the next delivery of that type is no drift to approve again.
    Everything else is as declared: a column declared since, or no longer declared, still changes the
    staging."""
    staged = staged_columns_from_metadata(metadata)
    if staged is None:
        return entity
    columns, relaxed = staged
    kept: dict[str, ColumnType] = {name: column.type for name, column in entity.columns.items()}
    for name, declared in list(kept.items()):
        wider = columns.get(name)
        if wider is not None and wider != declared and widens_to(declared, wider):
            kept[name] = wider
    return evolved_entity(entity, kept, [name for name in relaxed if name in kept])


def dropped_columns_from_metadata(metadata: Mapping[str, object]) -> list[str]:
    """The columns a materialization recorded as delivered and dropped (`DriftDecision.dropped_columns`)."""
    value = metadata.get(DROPPED_METADATA)
    return list(getattr(value, "value", value) or [])


def staged_columns_from_metadata(
    metadata: Mapping[str, object],
) -> tuple[dict[str, ColumnType], list[str]] | None:
    """The staged columns and the relaxed ones a materialization recorded (`DriftDecision.metadata`); None
    when it has none."""
    if STAGED_COLUMNS_METADATA not in metadata:
        return None
    value = getattr(metadata[STAGED_COLUMNS_METADATA], "value", metadata[STAGED_COLUMNS_METADATA])
    relaxed = getattr(metadata.get(RELAXED_METADATA), "value", metadata.get(RELAXED_METADATA)) or []
    return {name: ColumnType(kind) for name, kind in dict(value).items()}, list(relaxed)


def removal_compatible(mode: str, *, nullable: bool) -> bool:
    """Whether the mode allows removing a column (nullable or not)."""
    return nullable or mode in ("backward", "none")


def retype_compatible(mode: str) -> bool:
    """Whether the mode allows a column's type to change (to one its old type cannot hold)."""
    return mode == "none"


def staged_widening_allowed(mode: str) -> bool:
    """Whether the mode lets evolution widen a staged column or relax it to nullable: new readers read
    the old rows, old readers may meet values their declaration excludes (`backward` and `none`)."""
    return mode in ("backward", "none")


RULES = {
    "backward": "backward allows removing columns and adding nullable ones",
    "forward": "forward allows adding columns and removing nullable ones",
    "full": "full allows adding and removing nullable columns only",
    "none": "none allows any change",
}


def decide(
    entity: Entity, previous: SchemaVersion | None, delivered: Mapping[str, ColumnType | str]
) -> DriftDecision:
    """The decision for a delivery of `delivered` columns (name -> logical type, from
    `schema_registry.delivered_schema`), given the entity's declaration and policy and the previous
    version (None: none recorded yet). An empty `delivered` (nothing landed) changes nothing."""
    policy = entity.schema_evolution
    mode, on_drift = policy.compatibility, policy.on_drift
    declared = {name: column.type for name, column in entity.columns.items()}
    if not delivered:
        return DriftDecision(True, [], "none", dict(declared))
    now = {name: ColumnType(kind) for name, kind in delivered.items() if name not in RESERVED_COLUMNS}
    evolving = on_drift == "evolve"
    reference = dict(declared)
    if evolving and previous is not None:
        for name, kind in previous.column_types().items():
            if name not in reference and name not in RESERVED_COLUMNS:
                reference[name] = kind

    def nullable(name: str) -> bool:
        return entity.is_nullable(name) if name in entity.columns else True

    added = {name: kind for name, kind in now.items() if name not in reference}
    removed = {name: kind for name, kind in reference.items() if name not in now}
    retyped = {
        name: (reference[name], kind)
        for name, kind in now.items()
        if name in reference and not widens_to(kind, reference[name])
    }
    changes = SchemaDiff(
        added={name: kind.value for name, kind in added.items()},
        removed={name: kind.value for name, kind in removed.items()},
        type_changed={name: (old.value, new.value) for name, (old, new) in retyped.items()},
    )
    required_removed = [name for name in removed if not nullable(name)]
    compatible = all(removal_compatible(mode, nullable=nullable(name)) for name in removed) and (
        not retyped or retype_compatible(mode)
    )

    violations: list[str] = []
    stage = dict(declared)
    absent = [name for name in declared if name not in now]
    relaxed: list[str] = []
    refused = False
    for name in required_removed:
        allowed = "allowed by" if removal_compatible(mode, nullable=False) else "against"
        head = (
            f"{name}: declared non-nullable {reference[name].value} column is missing from the delivery "
            f"({allowed} compatibility {mode}: {RULES[mode]}); "
        )
        if name in entity.primary_key:
            outcome = "a primary-key column is never evolvable: the step fails"
            refused = True
        elif on_drift == "quarantine":
            outcome = f"on_drift quarantine: rows without {name} break its nullable rule and go to quarantine"
        elif evolving and staged_widening_allowed(mode):
            outcome = f"on_drift evolve: {name} is staged as NULL and becomes nullable"
            relaxed.append(name)
        else:
            why = "on_drift fail" if on_drift == "fail" else f"compatibility {mode} forbids relaxing it"
            outcome = f"{why}: the step fails"
            refused = True
        violations.append(head + outcome + ". Restore the column in the delivery, or declare it nullable.")
    if refused:
        return DriftDecision(compatible, violations, "fail", stage, [], absent, changes)

    for name, (old, new) in retyped.items():
        rule = f"compatibility {mode}: {RULES[mode]}" + ("" if mode == "none" else ", not type changes")
        if on_drift == "fail":
            outcome = "on_drift fail: the step fails"
            refused = True
        elif on_drift == "quarantine":
            outcome = f"on_drift quarantine: rows whose {name} does not cast to {old.value} go to quarantine"
        else:
            widened = common_type(old, new)
            if widened == ColumnType.STRING and old != ColumnType.STRING and not policy.allow_string_widening:
                outcome = (
                    f"on_drift evolve cannot widen {old.value} to string without allow_string_widening: "
                    f"the step fails"
                )
                refused = True
            elif not staged_widening_allowed(mode):
                outcome = (
                    f"on_drift evolve would widen the staged column to {widened.value}, which compatibility "
                    f"{mode} forbids (its readers expect {old.value}): the step fails. Use on_drift "
                    f"quarantine, or compatibility backward"
                )
                refused = True
            else:
                outcome = f"on_drift evolve: the staged column becomes {widened.value}"
                stage[name] = widened  # undeclared (evolved before) columns included
        violations.append(f"{name}: type changed from {old.value} to {new.value} ({rule}); {outcome}")
    if refused:
        return DriftDecision(compatible, violations, "fail", stage, [], absent, changes)

    if evolving:
        for name, kind in reference.items():  # columns evolved before and delivered again
            if name not in stage and name in now:
                stage[name] = kind
        for name, kind in added.items():
            stage[name] = kind
        action: Action = "evolve" if stage != declared or relaxed else "none"
        return DriftDecision(compatible, violations, action, stage, [], absent, changes, relaxed)
    before = previous.columns if previous is not None else {}
    dropped = [name for name in added if name not in before]
    if on_drift == "quarantine" and (retyped or required_removed):
        quarantined = [name for name in retyped if name in declared]
        return DriftDecision(
            compatible,
            violations,
            "quarantine",
            dict(declared),
            quarantined,
            absent,
            changes,
            dropped_columns=dropped,
        )
    return DriftDecision(compatible, violations, "none", stage, [], absent, changes, dropped_columns=dropped)


def staging_metadata(
    previous: SchemaVersion | None,
    delivered: Mapping[str, ColumnType | str],
    decision: DriftDecision,
    timezones: Mapping[str, str] | None = None,
) -> dict[str, dg.MetadataValue]:
    """All `schema/*` metadata of a staging run: the delivery's version (the next one, or `previous`
    itself when the fingerprint is the same, or when nothing was landed: the latest materialization must
    always carry the current version, or the next run would start over at 1) and the decision.
    `timezones`: the delivery's zoned timestamp columns, part of its version."""
    if delivered:
        version = next_version(previous, delivered, timezones)
        recorded = schema_metadata(version, diff(previous, delivered, timezones))
    else:
        recorded = schema_metadata(previous, SchemaDiff()) if previous is not None else {}
    return {**recorded, **decision.metadata()}
