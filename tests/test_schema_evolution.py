"""Schema drift decisions (pure: every compatibility mode x on_drift x kind of change), and what the
warehouses do when an evolved staged column widens (DuckDB and a real PostgreSQL with dbt-like views)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from platform_assets.catalog.model import ColumnType, Entity
from platform_assets.staging.schema_evolution import (
    ACTION_METADATA,
    COMPATIBLE_METADATA,
    VIOLATIONS_METADATA,
    DriftDecision,
    decide,
    evolved_entity,
    staged_columns_from_metadata,
    staging_metadata,
)
from platform_assets.staging.schema_registry import (
    DIFF_METADATA,
    VERSION_METADATA,
    SchemaVersion,
    fingerprint,
    version_from_metadata,
)
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
from resources.warehouses.postgres_warehouse import PostgresWarehouse

INT, DBL, STR, DAY, TSTAMP = (
    ColumnType.INTEGER,
    ColumnType.DOUBLE,
    ColumnType.STRING,
    ColumnType.DATE,
    ColumnType.TIMESTAMP,
)
MODES = ["backward", "forward", "full", "none"]
ON_DRIFT = ["evolve", "quarantine", "fail"]

DECLARED = {
    "id": {"type": "integer", "nullable": False},
    "qty": {"type": "integer", "min": 0, "max": 100},
    "day": {"type": "date"},
    "note": {"type": "string", "nullable": False},
    "opt": {"type": "string"},
    "price": {"type": "double"},
}
DELIVERED = {"id": INT, "qty": INT, "day": DAY, "note": STR, "opt": STR, "price": DBL}
DECLARED_TYPES = dict(DELIVERED)


def entity(mode: str = "backward", on_drift: str = "fail", string_widening: bool = False) -> Entity:
    return Entity.model_validate(
        {
            "primary_key": ["id"],
            "columns": DECLARED,
            "schema_evolution": {
                "compatibility": mode,
                "on_drift": on_drift,
                "allow_string_widening": string_widening,
            },
        }
    )


def without(name: str) -> dict[str, ColumnType]:
    return {key: kind for key, kind in DELIVERED.items() if key != name}


SCENARIOS: dict[str, dict[str, ColumnType]] = {
    "unchanged": dict(DELIVERED),
    "new_column": {**DELIVERED, "extra": DBL},
    "dropped_nullable": without("opt"),
    "dropped_non_nullable": without("note"),
    "dropped_primary_key": without("id"),
    "int_to_string": {**DELIVERED, "qty": STR},
    "int_to_double": {**DELIVERED, "qty": DBL},
    "date_to_timestamp": {**DELIVERED, "day": TSTAMP},
    "int_to_date": {**DELIVERED, "qty": DAY},
    "narrower_delivered": {**DELIVERED, "price": INT},
}
COMPATIBLE: dict[str, set[str]] = {
    "unchanged": set(MODES),
    "new_column": set(MODES),
    "dropped_nullable": set(MODES),
    "dropped_non_nullable": {"backward", "none"},
    "dropped_primary_key": {"backward", "none"},
    "int_to_string": {"none"},
    "int_to_double": {"none"},
    "date_to_timestamp": {"none"},
    "int_to_date": {"none"},
    "narrower_delivered": set(MODES),
}
"""Modes under which each scenario is compatible (the table in schema_evolution's docstring)."""

WIDENING_MODES = {"backward", "none"}
"""Modes that let evolution widen a staged column or relax it to nullable."""

EXPECTED: dict[tuple[str, str, str, bool], tuple[str, dict[str, ColumnType], list[str], list[str]]] = {}
"""(scenario, mode, on_drift, allow_string_widening) -> (action, changes to the staged columns,
quarantined columns, relaxed columns)."""
for widening in (False, True):
    for mode in MODES:
        for drift in ON_DRIFT:
            for same in ("unchanged", "narrower_delivered", "dropped_nullable"):
                EXPECTED[(same, mode, drift, widening)] = ("none", {}, [], [])
            EXPECTED[("dropped_primary_key", mode, drift, widening)] = ("fail", {}, [], [])
        relax = ("evolve", {}, [], ["note"]) if mode in WIDENING_MODES else ("fail", {}, [], [])
        EXPECTED[("dropped_non_nullable", mode, "evolve", widening)] = relax
        EXPECTED[("dropped_non_nullable", mode, "quarantine", widening)] = ("quarantine", {}, [], [])
        EXPECTED[("dropped_non_nullable", mode, "fail", widening)] = ("fail", {}, [], [])
        EXPECTED[("new_column", mode, "evolve", widening)] = ("evolve", {"extra": DBL}, [], [])
        EXPECTED[("new_column", mode, "quarantine", widening)] = ("none", {}, [], [])
        EXPECTED[("new_column", mode, "fail", widening)] = ("none", {}, [], [])
        for scenario, column, widened in [
            ("int_to_double", "qty", DBL),
            ("date_to_timestamp", "day", TSTAMP),
            ("int_to_string", "qty", STR),
            ("int_to_date", "qty", STR),
        ]:
            EXPECTED[(scenario, mode, "quarantine", widening)] = ("quarantine", {}, [column], [])
            EXPECTED[(scenario, mode, "fail", widening)] = ("fail", {}, [], [])
            if (widened == STR and not widening) or mode not in WIDENING_MODES:
                EXPECTED[(scenario, mode, "evolve", widening)] = ("fail", {}, [], [])
            else:
                EXPECTED[(scenario, mode, "evolve", widening)] = ("evolve", {column: widened}, [], [])


@pytest.mark.parametrize("string_widening", [False, True], ids=["no_string_widening", "string_widening"])
@pytest.mark.parametrize("on_drift", ON_DRIFT)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_decision_matrix(scenario: str, mode: str, on_drift: str, string_widening: bool) -> None:
    decision = decide(entity(mode, on_drift, string_widening), None, SCENARIOS[scenario])
    action, stage_changes, quarantined, relaxed = EXPECTED[(scenario, mode, on_drift, string_widening)]
    assert decision.compatible == (mode in COMPATIBLE[scenario])
    assert decision.action == action
    assert decision.quarantine_columns == quarantined
    assert decision.relaxed_columns == relaxed
    if action != "fail":
        assert decision.stage_columns == {**DECLARED_TYPES, **stage_changes}
    if action in ("fail", "quarantine"):
        assert decision.violations, "a failing or quarantining decision says why"
    if scenario in ("unchanged", "narrower_delivered", "new_column", "dropped_nullable"):
        assert decision.violations == []
    dropped = {"dropped_nullable": ["opt"], "dropped_non_nullable": ["note"], "dropped_primary_key": ["id"]}
    assert decision.absent_columns == dropped.get(scenario, [])


@pytest.mark.parametrize("mode", MODES)
def test_violation_names_column_types_rule_and_action(mode: str) -> None:
    decision = decide(entity(mode, "quarantine"), None, {**DELIVERED, "qty": STR})
    (message,) = decision.violations
    assert message.startswith("qty: type changed from integer to string")
    assert f"compatibility {mode}" in message
    assert "on_drift quarantine" in message and "quarantine" in message
    evolve = decide(entity(mode, "evolve"), None, {**DELIVERED, "qty": STR})
    assert "allow_string_widening" in evolve.violations[0]
    widened = decide(entity(mode, "evolve"), None, {**DELIVERED, "qty": DBL})
    if mode in WIDENING_MODES:
        assert "the staged column becomes double" in widened.violations[0]
    else:
        assert f"which compatibility {mode} forbids (its readers expect integer)" in widened.violations[0]


def test_dropped_non_nullable_column_evolves_only_where_relaxing_it_is_compatible() -> None:
    relaxed = decide(entity("backward", "evolve"), None, without("note"))
    assert relaxed.action == "evolve" and relaxed.relaxed_columns == ["note"]
    assert "note is staged as NULL and becomes nullable" in relaxed.violations[0]
    staged = relaxed.staged_entity(entity("backward", "evolve"))
    assert staged.columns["note"].nullable and staged.columns["note"].type == STR
    forward = decide(entity("forward", "evolve"), None, without("note"))
    assert forward.action == "fail"
    assert "against compatibility forward" in forward.violations[0]
    assert "compatibility forward forbids relaxing it" in forward.violations[0]
    quarantined = decide(entity("full", "quarantine"), None, without("note"))
    assert "rows without note break its nullable rule and go to quarantine" in quarantined.violations[0]
    for mode in MODES:
        key = decide(entity(mode, "evolve", True), None, without("id"))
        assert key.action == "fail" and "primary-key column is never evolvable" in key.violations[0]


def test_nothing_delivered_changes_nothing() -> None:
    decision = decide(entity("full", "fail"), None, {})
    assert (decision.action, decision.compatible, decision.violations) == ("none", True, [])
    assert decision.stage_columns == DECLARED_TYPES


def test_delivered_types_may_be_strings() -> None:
    delivered = {name: kind.value for name, kind in {**DELIVERED, "qty": DBL}.items()}
    assert decide(entity("backward", "evolve"), None, delivered).stage_columns["qty"] == DBL


def version(columns: dict[str, ColumnType], number: int = 1) -> SchemaVersion:
    plain = {name: kind.value for name, kind in sorted(columns.items())}
    return SchemaVersion(number, fingerprint(plain), plain, datetime(2026, 1, 1, tzinfo=UTC))


def test_evolved_columns_stay_staged_and_may_widen_later() -> None:
    previous = version({**DELIVERED, "extra": INT})
    again = decide(entity("backward", "evolve"), previous, {**DELIVERED, "extra": INT})
    assert again.action == "evolve" and again.stage_columns["extra"] == INT and again.violations == []
    narrower = decide(
        entity("backward", "evolve"), version({**DELIVERED, "extra": DBL}), {**DELIVERED, "extra": INT}
    )
    assert narrower.stage_columns["extra"] == DBL, "an evolved column keeps the type that holds both"
    widened = decide(entity("backward", "evolve"), previous, {**DELIVERED, "extra": DBL})
    assert widened.action == "evolve" and widened.stage_columns["extra"] == DBL
    to_text = decide(entity("backward", "evolve"), previous, {**DELIVERED, "extra": STR})
    assert to_text.action == "fail" and "extra: type changed from integer to string" in to_text.violations[0]
    gone = decide(entity("forward", "evolve"), previous, dict(DELIVERED))
    assert gone.compatible and gone.action == "none" and "extra" not in gone.stage_columns
    assert gone.changes.removed == {"extra": "integer"}


def test_without_evolve_undeclared_columns_are_outside_the_contract() -> None:
    previous = version({**DELIVERED, "extra": INT})
    for drift in ("quarantine", "fail"):
        decision = decide(entity("full", drift), previous, {**DELIVERED, "extra": STR})
        assert (decision.action, decision.compatible, decision.violations) == ("none", True, [])
        assert decision.changes.added == {"extra": "string"}
        assert decision.stage_columns == DECLARED_TYPES


def test_reserved_staging_columns_are_never_staged() -> None:
    decision = decide(
        entity("backward", "evolve"), None, {**DELIVERED, "_cast_errors": STR, "_loaded_at": TSTAMP}
    )
    assert decision.action == "none" and decision.stage_columns == DECLARED_TYPES


def test_staged_entity_carries_widened_and_evolved_columns() -> None:
    declared = entity("backward", "evolve", string_widening=True)
    decision = decide(declared, None, {**DELIVERED, "qty": STR, "day": TSTAMP, "extra": DBL})
    staged = decision.staged_entity(declared)
    assert {name: column.type for name, column in staged.columns.items()} == {
        **DECLARED_TYPES,
        "qty": STR,
        "day": TSTAMP,
        "extra": DBL,
    }
    assert staged.columns["qty"].min is None and staged.columns["qty"].max is None
    assert staged.columns["extra"].nullable and staged.columns["extra"].description
    assert staged.columns["note"] is declared.columns["note"]
    assert staged.primary_key == declared.primary_key and staged.schema_evolution == declared.schema_evolution
    assert decision.widened == {"qty": STR, "day": TSTAMP}
    assert declared.columns["qty"].type == INT, "the declared entity is unchanged"


def test_decision_metadata_rebuilds_the_staged_entity() -> None:
    declared = entity("backward", "evolve")
    decision = decide(declared, None, {**without("note"), "qty": DBL, "extra": STR})
    metadata = decision.metadata()
    assert metadata[ACTION_METADATA].value == "evolve" and metadata[COMPATIBLE_METADATA].value is False
    assert metadata[VIOLATIONS_METADATA].value == decision.violations
    staged = staged_columns_from_metadata(metadata)
    assert staged == ({**DECLARED_TYPES, "qty": DBL, "extra": STR}, ["note"])
    assert evolved_entity(declared, *staged) == decision.staged_entity(declared)
    assert staged_columns_from_metadata({}) is None


def test_staging_metadata_carries_the_version_forward() -> None:
    declared = entity()
    first = staging_metadata(None, DELIVERED, decide(declared, None, DELIVERED))
    v1 = version_from_metadata(first)
    assert v1 is not None and v1.version == 1 and first[ACTION_METADATA].value == "none"
    assert staging_metadata(v1, DELIVERED, decide(declared, v1, DELIVERED))[VERSION_METADATA].value == 1
    nothing = staging_metadata(v1, {}, decide(declared, v1, {}))
    assert version_from_metadata(nothing) == v1 and nothing[DIFF_METADATA].value["added"] == {}
    assert VERSION_METADATA not in staging_metadata(None, {}, decide(declared, None, {}))
    changed = staging_metadata(v1, {**DELIVERED, "qty": DBL}, decide(declared, v1, {**DELIVERED, "qty": DBL}))
    assert changed[VERSION_METADATA].value == 2 and changed[ACTION_METADATA].value == "fail"
    assert changed[DIFF_METADATA].value["type_changed"] == {"qty": ["integer", "double"]}


def test_decision_is_a_frozen_value() -> None:
    decision = decide(entity(), None, DELIVERED)
    assert isinstance(decision, DriftDecision)
    with pytest.raises(AttributeError):
        decision.action = "fail"  # type: ignore[misc]


# Warehouses: an evolved staged column widens (integer -> double) between two `replace` loads.


def widening_batches() -> tuple[pa.RecordBatch, pa.RecordBatch]:
    before = pa.RecordBatch.from_pydict({"id": [1, 2], "qty": pa.array([3, 4], pa.int64())})
    after = pa.RecordBatch.from_pydict({"id": [1, 2, 3], "qty": [3.5, 4.0, None]})
    return before, after


def test_duckdb_replace_takes_the_widened_type(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    before, after = widening_batches()
    warehouse.load("staged", "orders", [before], mode="replace", primary_key=["id"])
    warehouse.query("CREATE SCHEMA analytics")
    warehouse.query("CREATE VIEW analytics.stg_orders AS SELECT id, qty * 2 AS twice FROM staged.orders")
    warehouse.load("staged", "orders", [after], mode="replace", primary_key=["id"])
    assert dict(warehouse.columns("staged", "orders"))["qty"] == "DOUBLE"
    rows = warehouse.query("SELECT id, twice FROM analytics.stg_orders ORDER BY id")
    assert rows == [(1, 7.0), (2, 8.0), (3, None)]


def test_postgres_replace_widens_a_column_that_views_read(postgres_database: str) -> None:
    """Staged tables are loaded with `replace`; on PostgreSQL a table dbt views read is refilled in place.
    Before the fix this refused the widening (SchemaChangeError: "qty is bigint in the table but double
    precision in the batches"); now the views are dropped and recreated around ALTER COLUMN TYPE."""
    warehouse = PostgresWarehouse(url=postgres_database)
    before, after = widening_batches()
    warehouse.load("staged", "orders", [before], mode="replace", primary_key=["id"])
    warehouse.query("CREATE SCHEMA analytics")
    warehouse.query("CREATE VIEW analytics.stg_orders AS SELECT id, qty * 2 AS twice FROM staged.orders")
    warehouse.load("staged", "orders", [after], mode="replace", primary_key=["id"])
    assert dict(warehouse.columns("staged", "orders"))["qty"] == "double precision"
    rows = warehouse.query("SELECT id, twice FROM analytics.stg_orders ORDER BY id")
    assert rows == [(1, 7.0), (2, 8.0), (3, None)]
