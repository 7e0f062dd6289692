"""Schema drift through real Dagster materializations on DuckDB and PostgreSQL: a second delivery whose
columns differ from the first is evolved, quarantined or refused as the entity's policy says (every
compatibility mode x every `on_drift`, the table in `schema_evolution.py`), and every staged
materialization records its schema version and the diff.

Two sources: CSV files (later files add up: a retyped or new column) and a SQLite table extracted as a
snapshot (each run is the whole entity: a column dropped at the source is gone from the delivery)."""

import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.exports_platform import materialize_entity

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.keys import STAGED_SCHEMA, staged_table
from resources.environment import PlatformSettings, build_resources
from resources.state.quality_events import QualityEventStore
from resources.warehouses.base import Warehouse
from sensors.healing.quality_events import build_quality_events_sensor


@dataclass
class DriftPlatform:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance

    def deliver(self, name: str, text: str) -> None:
        (self.root / "orders").mkdir(parents=True, exist_ok=True)
        (self.root / "orders" / name).write_text(text)

    def deliver_parquet(self, name: str, table: pa.Table) -> None:
        (self.root / "orders").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.root / "orders" / name)

    def database(self, create_sql: str, rows: list[tuple[object, ...]]) -> None:
        """Replaces the SQLite source table `orders` (the snapshot source's whole entity)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.root / "shop.sqlite") as connection:
            connection.execute("DROP TABLE IF EXISTS orders")
            connection.execute(create_sql)
            marks = ", ".join("?" * len(rows[0]))
            connection.executemany(f"INSERT INTO orders VALUES ({marks})", rows)

    def materialize(
        self,
        on_drift: str,
        compatibility: str = "backward",
        *,
        snapshot: bool = False,
        max_bad_fraction: float = 0.05,
        file_format: str = "csv",
    ) -> dg.ExecuteInProcessResult:
        if snapshot:
            connection = {"kind": "database", "url": f"sqlite:///{self.root / 'shop.sqlite'}"}
            extraction = {"table": {"table": "orders"}}
        else:
            connection = {"kind": "files", "root": str(self.root)}
            extraction = {"file": {"format": file_format, "path": f"orders/*.{file_format}"}}
        source = Source.model_validate(
            {
                "source": "drift",
                "connection": connection,
                "entities": {
                    "orders": {
                        **extraction,
                        "primary_key": ["order_id"],
                        "max_bad_fraction": max_bad_fraction,
                        "schema_evolution": {"compatibility": compatibility, "on_drift": on_drift},
                        "columns": {
                            "order_id": {"type": "integer"},
                            "amount": {"type": "integer", "nullable": not snapshot},
                            "note": {"type": "string"},
                        },
                    }
                },
            }
        )
        return materialize_entity(
            CatalogEntity(source, "orders", source.entities["orders"]), self.settings, self.instance
        )

    @property
    def warehouse(self) -> Warehouse:
        return build_resources(self.settings, DBT_PROJECT_DIR)["warehouse"]

    def staged_columns(self) -> dict[str, str]:
        return dict(self.warehouse.columns(STAGED_SCHEMA, staged_table("drift", "orders")))

    def staged_rows(self, columns: str) -> list[tuple[object, ...]]:
        table = self.warehouse.table_ref(STAGED_SCHEMA, staged_table("drift", "orders"))
        return [tuple(row) for row in self.warehouse.query(f"SELECT {columns} FROM {table} ORDER BY 1")]

    def quarantined(self) -> list[tuple[str, dict[str, object]]]:
        """(column, row) of every quarantined row of the staged entity."""
        if "quarantine" not in self.warehouse.tables("ops"):
            return []
        table = self.warehouse.table_ref("ops", "quarantine")
        rows = self.warehouse.query(f"SELECT {self.warehouse.quote('column')}, row_json FROM {table}")
        return [(column, json.loads(row)) for column, row in rows]

    def staged_metadata(self, result: dg.ExecuteInProcessResult) -> dict[str, object]:
        (event,) = result.asset_materializations_for_node("staged__drift__orders")
        return {name: value.value for name, value in event.metadata.items()}

    def warnings(self, result: dg.ExecuteInProcessResult) -> list[str]:
        """The warnings the run logged."""
        logs = self.instance.all_logs(result.run_id)
        return [entry.user_message for entry in logs if entry.level == logging.WARNING]


@pytest.fixture
def drift(tmp_path: Path, warehouse_settings: PlatformSettings) -> Iterator[DriftPlatform]:
    with dg.instance_for_test() as instance:
        yield DriftPlatform(tmp_path / "deliveries", warehouse_settings, instance)


FIRST = "order_id,amount,note\n1,10,a\n2,20,b\n"


def test_evolve_adds_a_new_column_and_widens_integer_to_double(drift: DriftPlatform) -> None:
    drift.deliver("1.csv", FIRST)
    first = drift.materialize("evolve")
    assert first.success
    assert drift.staged_metadata(first)["schema/version"] == 1

    drift.deliver("2.csv", "order_id,amount,note,channel\n3,30.5,c,web\n")
    second = drift.materialize("evolve")
    assert second.success
    metadata = drift.staged_metadata(second)
    assert metadata["schema/version"] == 2
    assert "channel" in metadata["schema/diff"]["added"]
    assert "amount" in metadata["schema/diff"]["type_changed"]
    columns = drift.staged_columns()
    assert "channel" in columns
    assert columns["amount"].upper() in {"DOUBLE", "DOUBLE PRECISION"}
    assert all(check.passed for check in second.get_asset_check_evaluations())


def test_fail_refuses_an_integer_column_turning_into_strings_and_keeps_the_table(
    drift: DriftPlatform,
) -> None:
    drift.deliver("1.csv", FIRST)
    assert drift.materialize("fail").success
    drift.deliver("2.csv", "order_id,amount,note\n3,many,c\n4,lots,d\n")
    second = drift.materialize("fail")
    assert not second.success
    failure = next(e for e in second.all_events if e.event_type_value == "STEP_FAILURE")
    assert "schema drifted" in str(failure.event_specific_data)
    assert "amount" in str(failure.event_specific_data)
    table = drift.warehouse.table_ref(STAGED_SCHEMA, staged_table("drift", "orders"))
    assert drift.warehouse.query(f"SELECT count(*) FROM {table}") == [(2,)]


SMALL = "order_id,amount,note\n{}"
"""A delivery of a few orders (the chaos soak's orders arrive three rows at a time)."""


def test_a_lone_unparseable_value_in_a_small_delivery_is_a_quarantined_row_not_drift(
    drift: DriftPlatform,
) -> None:
    """One malformed amount is 33% of its three-row delivery, over any tolerance, yet a bad row, not the
    column turning into strings: its two good rows are staged, it is quarantined under the type rule,
    the schema stays version 1, and the next clean delivery stages as usual (before, the column drifted
    to string and every later delivery was held behind the drift)."""
    drift.deliver("1.csv", SMALL.format("1,10,a\n2,20,b\n3,30,c\n"))
    assert drift.materialize("fail").success
    drift.deliver("2.csv", SMALL.format("4,40,d\n5,n/a,e\n6,60,f\n"))
    lone = drift.materialize("fail")
    assert lone.success, step_failure(lone)
    metadata = drift.staged_metadata(lone)
    assert (metadata["staging/mode"], metadata["schema/version"]) == ("incremental", 1), metadata
    assert metadata["schema/diff"] == {"added": {}, "removed": {}, "type_changed": {}}
    assert metadata["quarantined_by_rule"] == {"amount: type": 1}
    ((column, row),) = drift.quarantined()
    assert (column, row["order_id"], row["_cast_errors"]) == ("amount", 5, "amount=n/a")

    drift.deliver("3.csv", SMALL.format("7,70,g\n8,80,h\n9,90,i\n"))
    clean = drift.materialize("fail")
    assert clean.success
    metadata = drift.staged_metadata(clean)
    assert (metadata["staging/mode"], metadata["schema/version"]) == ("incremental", 1), metadata
    assert metadata["rows_quarantined"] == 0
    assert drift.staged_rows("order_id, amount") == [(i, i * 10) for i in (1, 2, 3, 4, 6, 7, 8, 9)]
    assert drift.staged_columns()["amount"].upper() == "BIGINT"


def test_two_unparseable_values_in_a_small_delivery_turn_the_column_into_strings(
    drift: DriftPlatform,
) -> None:
    """A second text value in the same delivery is what tells a type change from a typo."""
    drift.deliver("1.csv", SMALL.format("1,10,a\n2,20,b\n3,30,c\n"))
    assert drift.materialize("fail").success
    drift.deliver("2.csv", SMALL.format("4,40,d\n5,n/a,e\n6,abc,f\n"))
    second = drift.materialize("fail")
    assert not second.success
    assert "amount: type changed from integer to string" in step_failure(second)
    assert drift.staged_rows("order_id, amount") == [(1, 10), (2, 20), (3, 30)]
    assert drift.quarantined() == []


def test_a_later_file_without_a_nullable_column_stages_its_rows_with_null(drift: DriftPlatform) -> None:
    drift.deliver("1.csv", FIRST)
    assert drift.materialize("fail").success
    drift.deliver("2.csv", "order_id,amount\n3,30\n")
    second = drift.materialize("fail")
    assert second.success
    table = drift.warehouse.table_ref(STAGED_SCHEMA, staged_table("drift", "orders"))
    rows = drift.warehouse.query(f"SELECT order_id, note FROM {table} ORDER BY order_id")
    assert [tuple(row) for row in rows] == [(1, "a"), (2, "b"), (3, None)]


def test_a_new_column_dropped_under_fail_is_logged_and_raises_a_quality_event(
    drift: DriftPlatform, tmp_path: Path
) -> None:
    """`on_drift: fail` stages declared columns only: a new undeclared column is dropped, with a warning in
    the run log and a failed `quality_warnings` check that the quality-events sensor records; once."""
    drift.deliver("1.csv", FIRST)
    assert drift.materialize("fail").success
    drift.deliver("2.csv", "order_id,amount,note,channel\n3,30,c,web\n")
    second = drift.materialize("fail")
    assert second.success and "channel" not in drift.staged_columns()
    warnings = [
        entry.user_message
        for entry in drift.instance.all_logs(second.run_id)
        if entry.level == logging.WARNING and "dropped: channel" in entry.user_message
    ]
    assert warnings and "on_drift fail stages declared columns only" in warnings[0], warnings
    (check,) = [e for e in second.get_asset_check_evaluations() if e.check_name == "quality_warnings"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["dropped_columns"].value == ["channel"]

    events = QualityEventStore(tmp_path / "quality_events.jsonl")
    sensor = build_quality_events_sensor(events.path, {}, [check.asset_check_key])
    sensor.evaluate_tick(dg.build_sensor_context(instance=drift.instance))
    (event,) = events.read()
    assert (event.check_name, event.severity) == ("quality_warnings", "warn")
    assert event.details["metadata"]["dropped_columns"] == ["channel"]

    third = drift.materialize("fail")
    assert all(e.passed for e in third.get_asset_check_evaluations()), "reported once, not on every run"


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return event.step_failure_data.error.to_string()


MODES = ["backward", "forward", "full", "none"]
ON_DRIFT = ["evolve", "quarantine", "fail"]
WIDENING_MODES = {"backward", "none"}


@pytest.mark.parametrize("on_drift", ON_DRIFT)
@pytest.mark.parametrize("mode", MODES)
def test_retyped_and_new_column_per_mode_and_action(drift: DriftPlatform, mode: str, on_drift: str) -> None:
    """A later file brings a new column and an integer column turning double (30.5)."""
    drift.deliver("1.csv", FIRST)
    first = drift.materialize(on_drift, mode)
    assert first.success
    drift.deliver("2.csv", "order_id,amount,note,channel\n3,30.5,c,web\n4,40,d,app\n")
    second = drift.materialize(on_drift, mode)

    if on_drift == "evolve" and mode in WIDENING_MODES:
        assert second.success
        metadata = drift.staged_metadata(second)
        assert metadata["schema/action"] == "evolve" and metadata["schema/version"] == 2
        assert metadata["schema/compatible"] is (mode == "none"), metadata
        columns = drift.staged_columns()
        assert columns["amount"].upper() in {"DOUBLE", "DOUBLE PRECISION"} and "channel" in columns
        assert drift.staged_rows("order_id, amount, channel") == [
            (1, 10.0, None),
            (2, 20.0, None),
            (3, 30.5, "web"),
            (4, 40.0, "app"),
        ]
        assert all(check.passed for check in second.get_asset_check_evaluations())
    elif on_drift == "quarantine":
        assert second.success
        metadata = drift.staged_metadata(second)
        assert metadata["schema/action"] == "quarantine" and metadata["rows_quarantined"] == 1
        assert metadata["rows_quarantined_for_drift"] == 1 and metadata["bad_fraction"] == 0.0, (
            "drift quarantine is outside max_bad_fraction (25% of the rows here, 5% allowed)"
        )
        assert "channel" not in drift.staged_columns()
        assert drift.staged_rows("order_id, amount") == [(1, 10), (2, 20), (4, 40)]
        ((column, row),) = drift.quarantined()
        assert column == "amount" and row["order_id"] == 3 and "30.5" in str(row["_cast_errors"])
    else:
        assert not second.success
        failure = step_failure(second)
        assert "schema drifted" in failure and "amount: type changed from integer to double" in failure
        if on_drift == "evolve":
            assert f"compatibility {mode} forbids" in failure
        assert drift.staged_rows("order_id, amount") == [(1, 10), (2, 20)], "the table is left as it was"
        assert drift.quarantined() == []


@pytest.mark.parametrize("on_drift", ON_DRIFT)
@pytest.mark.parametrize("mode", MODES)
def test_non_nullable_column_dropped_at_the_source_per_mode_and_action(
    drift: DriftPlatform, mode: str, on_drift: str
) -> None:
    """A snapshot source loses its non-nullable `amount` column between two runs."""
    drift.database(
        "CREATE TABLE orders (order_id INTEGER, amount INTEGER, note TEXT)", [(1, 10, "a"), (2, 20, "b")]
    )
    assert drift.materialize(on_drift, mode, snapshot=True).success
    drift.database("CREATE TABLE orders (order_id INTEGER, note TEXT)", [(1, "a"), (2, "b"), (3, "c")])
    second = drift.materialize(on_drift, mode, snapshot=True)

    if on_drift == "evolve" and mode in WIDENING_MODES:
        assert second.success
        metadata = drift.staged_metadata(second)
        assert metadata["schema/action"] == "evolve" and metadata["schema/relaxed_columns"] == ["amount"]
        assert metadata["schema/diff"]["removed"] == {"amount": "integer"}
        assert drift.staged_rows("order_id, amount, note") == [(1, None, "a"), (2, None, "b"), (3, None, "c")]
        assert all(check.passed for check in second.get_asset_check_evaluations()), (
            "the contract is checked against the relaxed column"
        )
    else:
        assert not second.success
        failure = step_failure(second)
        if on_drift == "quarantine":
            assert "every one of the 3 delivered rows breaks a rule ({'amount: nullable': 3})" in failure
        else:
            assert "amount: declared non-nullable integer column is missing" in failure
        assert drift.staged_rows("order_id, amount, note") == [(1, 10, "a"), (2, 20, "b")]
        assert drift.quarantined() == []


LARGE_ROWS = 60_000
"""The integer table a small drifted delivery lands in: 1,000 decimal rows are 1.6% of all, far under the
5% `max_bad_fraction`, and 100% of their own delivery."""


@pytest.mark.parametrize("rebuild", [False, True], ids=["incremental", "full-rebuild"])
@pytest.mark.parametrize("on_drift", ["fail", "evolve"])
def test_a_small_all_decimal_delivery_into_a_large_integer_table_is_drift_judged_on_its_own_rows(
    drift: DriftPlatform, on_drift: str, rebuild: bool
) -> None:
    """The decimals were once typed over every landed row: 1.6% unparseable integers, within the tolerance,
    so no drift, and the delivery's 1,000 rows quarantined as bad casts inside `max_bad_fraction`. A full
    rebuild (here forced by a catalog edit) must judge the delivery as the incremental run does."""
    drift.deliver("large.csv", "order_id,amount,note\n" + "".join(f"{i},{i},n\n" for i in range(LARGE_ROWS)))
    assert drift.materialize(on_drift).success
    small = range(LARGE_ROWS, LARGE_ROWS + 1_000)
    drift.deliver("small.csv", "order_id,amount,note\n" + "".join(f"{i},46.5,n\n" for i in small))
    result = drift.materialize(on_drift, max_bad_fraction=0.04 if rebuild else 0.05)

    if on_drift == "fail":
        assert not result.success
        assert "amount: type changed from integer to double" in step_failure(result)
        assert drift.staged_rows("count(*), max(order_id)") == [(LARGE_ROWS, LARGE_ROWS - 1)]
        assert drift.quarantined() == []
        return
    assert result.success
    metadata = drift.staged_metadata(result)
    assert metadata["staging/mode"] == "full", "a widened column rebuilds the table"
    assert metadata["schema/diff"]["type_changed"] == {"amount": ["integer", "double"]}
    assert metadata["schema/version"] == 2 and metadata["rows_quarantined"] == 0
    assert drift.staged_columns()["amount"].upper() in {"DOUBLE", "DOUBLE PRECISION"}
    assert drift.staged_rows("count(*), sum(amount)") == [
        (LARGE_ROWS + 1_000, sum(range(LARGE_ROWS)) + 46.5 * 1_000)
    ]


def _assert_incremental_and_quiet(
    drift: DriftPlatform, result: dg.ExecuteInProcessResult, version: int
) -> None:
    """A run after an evolution that delivered no change: incremental, the same schema version, an empty
    diff, and no drift warning repeated (nor quarantine rows upserted again)."""
    assert result.success
    metadata = drift.staged_metadata(result)
    assert (metadata["staging/mode"], metadata["schema/version"]) == ("incremental", version), metadata
    assert "extracted after" in str(metadata["staging/reason"]), metadata["staging/reason"]
    assert metadata["schema/diff"] == {"added": {}, "removed": {}, "type_changed": {}}
    assert metadata["rows_quarantined"] == 0
    assert not [w for w in drift.warnings(result) if "type changed" in w or "Quarantining" in w]


def test_csv_runs_after_a_widened_and_an_added_column_are_incremental(drift: DriftPlatform) -> None:
    drift.deliver("1.csv", FIRST)
    assert drift.materialize("evolve").success
    drift.deliver("2.csv", "order_id,amount,note,channel\n3,30.5,c,web\n")
    evolved = drift.materialize("evolve")
    assert evolved.success
    assert drift.staged_metadata(evolved)["schema/version"] == 2

    drift.deliver("3.csv", "order_id,amount,note,channel\n4,40,d,app\n")  # integers: within double
    _assert_incremental_and_quiet(drift, drift.materialize("evolve"), 2)
    drift.deliver("4.csv", "order_id,amount,note,channel\n5,50.5,e,web\n")
    _assert_incremental_and_quiet(drift, drift.materialize("evolve"), 2)
    _assert_incremental_and_quiet(drift, drift.materialize("evolve"), 2)  # no new file
    assert drift.staged_rows("order_id, amount, channel") == [
        (1, 10.0, None),
        (2, 20.0, None),
        (3, 30.5, "web"),
        (4, 40.0, "app"),
        (5, 50.5, "web"),
    ]


def _amounts(first_id: int, amounts: pa.Array) -> pa.Table:
    ids = pa.array(range(first_id, first_id + len(amounts)), pa.int64())
    return pa.table({"order_id": ids, "amount": amounts, "note": pa.array(["n"] * len(amounts))})


def test_parquet_runs_after_int32_int64_double_are_incremental(drift: DriftPlatform) -> None:
    drift.deliver_parquet("1.parquet", _amounts(1, pa.array([10, 20], pa.int32())))
    assert drift.materialize("evolve", file_format="parquet").success
    drift.deliver_parquet("2.parquet", _amounts(3, pa.array([30], pa.int64())))
    same = drift.materialize("evolve", file_format="parquet")
    assert drift.staged_metadata(same)["staging/mode"] == "incremental", "int32 and int64 are integers"
    drift.deliver_parquet("3.parquet", _amounts(4, pa.array([40.5], pa.float64())))
    widened = drift.materialize("evolve", file_format="parquet")
    assert widened.success
    assert drift.staged_metadata(widened)["schema/diff"]["type_changed"] == {"amount": ["integer", "double"]}

    for n in range(3):
        drift.deliver_parquet(f"{4 + n}.parquet", _amounts(5 + n, pa.array([50.5 + n], pa.float64())))
        _assert_incremental_and_quiet(drift, drift.materialize("evolve", file_format="parquet"), 2)
    assert drift.staged_rows("order_id, amount") == [
        (1, 10.0),
        (2, 20.0),
        (3, 30.0),
        (4, 40.5),
        (5, 50.5),
        (6, 51.5),
        (7, 52.5),
    ]
