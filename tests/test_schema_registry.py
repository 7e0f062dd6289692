"""The schema registry: delivered schemas as logical types (typed Parquet and text-landed columns),
versions and fingerprints, diffs, materialization metadata, and the `ops/schema_registry` asset."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LocalPlatform

from platform_assets.catalog.loader import load_catalog
from platform_assets.catalog.model import ColumnType
from platform_assets.factories.schema_registry_asset import (
    REGISTRY_SCHEMA,
    build_schema_registry_asset,
    registry_rows,
)
from platform_assets.keys import RAW_ASSETS, SCHEMA_REGISTRY_KEY
from platform_assets.staging.schema_evolution import decide
from platform_assets.staging.schema_registry import (
    DIFF_METADATA,
    VERSION_METADATA,
    SchemaDiff,
    SchemaVersion,
    delivered_schema,
    diff,
    expected_types,
    fingerprint,
    logical_type,
    next_version,
    previous_version,
    schema_metadata,
    strict_cast,
    version_from_metadata,
)
from resources.landing.zone import LandingZone
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
from resources.warehouses.io_manager import LOAD_MODE_KEY, PRIMARY_KEY_KEY, WarehouseIOManager

INT, DBL, STR, DAY, TSTAMP, BOOL = (
    ColumnType.INTEGER,
    ColumnType.DOUBLE,
    ColumnType.STRING,
    ColumnType.DATE,
    ColumnType.TIMESTAMP,
    ColumnType.BOOLEAN,
)
UTC = datetime.UTC


@pytest.mark.parametrize(
    ("arrow_type", "expected"),
    [
        (pa.int8(), INT),
        (pa.int32(), INT),
        (pa.int64(), INT),
        (pa.uint64(), INT),
        (pa.float32(), DBL),
        (pa.float64(), DBL),
        (pa.decimal128(12, 2), DBL),
        (pa.string(), STR),
        (pa.large_string(), STR),
        (pa.dictionary(pa.int32(), pa.string()), STR),
        (pa.bool_(), BOOL),
        (pa.date32(), DAY),
        (pa.timestamp("us"), TSTAMP),
        (pa.timestamp("ns", tz="UTC"), TSTAMP),
        (pa.binary(), STR),
        (pa.null(), None),
    ],
)
def test_logical_types_of_arrow_types(arrow_type: pa.DataType, expected: ColumnType | None) -> None:
    assert logical_type(arrow_type) == expected


def landed(tmp_path: Path, name: str, columns: dict[str, pa.Array]) -> Path:
    """A landed file: the delivered columns plus the landing's lineage columns."""
    rows = len(next(iter(columns.values())))
    lineage = {
        "_source": pa.array(["shop"] * rows),
        "_extracted_at": pa.array([datetime.datetime(2026, 11, 1, tzinfo=UTC)] * rows),
        "_run_id": pa.array(["r1"] * rows),
        "_file": pa.array([name] * rows),
        "_record": pa.array(range(rows), pa.int64()),
    }
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table({**columns, **lineage}), path)
    return path


def test_typed_files_over_all_files_without_lineage(tmp_path: Path) -> None:
    first = landed(
        tmp_path,
        "a",
        {
            "id": pa.array([1, 2], pa.int32()),
            "amount": pa.array([1, 2], pa.int64()),
            "day": pa.array([datetime.date(2024, 1, 1)] * 2),
            "paid": pa.array([True, False]),
            "price": pa.array([1.5, 2.5]).cast(pa.decimal128(5, 2)),
        },
    )
    second = landed(
        tmp_path,
        "b",
        {
            "id": pa.array([3], pa.int64()),
            "amount": pa.array([1.5]),
            "day": pa.array([datetime.datetime(2024, 1, 1, 10)]),
            "code": pa.array([7], pa.int64()),
            "paid": pa.array([1], pa.int64()),
        },
    )
    assert delivered_schema([first]) == {"id": INT, "amount": INT, "day": DAY, "paid": BOOL, "price": DBL}
    assert delivered_schema([first, second]) == {
        "id": INT,
        "amount": DBL,  # integer in one file, double in another: double holds both
        "day": TSTAMP,
        "paid": STR,  # boolean and integer: only string holds both
        "price": DBL,
        "code": INT,
    }
    assert delivered_schema([]) == {}


def test_a_text_column_dropped_at_the_source_is_typed_from_the_files_that_still_have_it(
    tmp_path: Path,
) -> None:
    """Files are counted a few at a time: a group of files landed after the source dropped the column
    counts it as null instead of failing on the missing column (the chaos soak's dropped `method`)."""
    before = landed(tmp_path, "0", {"id": pa.array([1], pa.int64()), "method": text(["card"])})
    after = [landed(tmp_path, str(n), {"id": pa.array([n], pa.int64())}) for n in range(1, 6)]
    expected = {"id": INT, "method": STR}
    assert delivered_schema([*after, before], expected) == {"id": INT, "method": STR}
    assert delivered_schema(after, expected) == {"id": INT}


def text(values: list[str | None]) -> pa.Array:
    return pa.array(values, pa.string())


@pytest.mark.parametrize(
    ("values", "expected_type", "tolerance", "inferred"),
    [
        (["1", "2", None, " 3 "], INT, 0.0, INT),
        (["1", "2.0", "-7"], INT, 0.0, INT),  # integral values are integers
        (["1", "1.5"], INT, 0.0, DBL),  # TRY_CAST would round 1.5 to 2: not an integer
        (["1", "1e3"], INT, 0.0, INT),
        (["1", "twelve", "eleven"], INT, 0.0, STR),  # the int column turned into strings
        (["1"] * 99 + ["twelve"], INT, 0.05, INT),  # one bad value: the rules' business, not drift
        (["1"] * 90 + ["twelve"] * 10, INT, 0.05, STR),
        # A lone value beyond the tolerance that parses as no typed candidate is a bad row, not drift...
        (["10", "n/a", "30"], INT, 0.05, INT),
        (["1", "twelve"], INT, 0.0, INT),
        (["1"] * 94 + ["twelve"] * 6, INT, 0.05, INT),  # 5% of 100 values, and one more
        (["1.5", "12,5x", "2"], DBL, 0.05, DBL),
        # ... a second one is a type change...
        (["10", "n/a", "abc"], INT, 0.05, STR),
        (["1"] * 93 + ["twelve"] * 7, INT, 0.05, STR),
        # ... and a lone value of a widening still widens, beside a lone unparseable one or not.
        (["10", "1.5", "30"], INT, 0.05, DBL),
        (["10", "1.5", "n/a"], INT, 0.05, DBL),
        (["2024-01-01", "2024-01-02 10:30:00", "soon"], DAY, 0.0, TSTAMP),
        (["1.5", "2"], DBL, 0.0, DBL),
        (["2024-01-01", "2024-02-29"], DAY, 0.0, DAY),
        (["2024-01-01", "2024-01-02 10:30:00"], DAY, 0.0, TSTAMP),  # would be cut to a date
        (["2024-01-01T00:00:00"], DAY, 0.0, DAY),
        (["yesterday", "today"], DAY, 0.0, STR),
        (["2024-01-01 10:00:00"], TSTAMP, 0.0, TSTAMP),
        (["true", "false"], BOOL, 0.0, BOOL),
        (["true", "maybe", "perhaps"], BOOL, 0.0, STR),
        (["12345"], STR, 0.0, STR),  # digits declared as string stay string
        ([None, None], INT, 0.0, INT),  # no value: the expected type
        ([], DAY, 0.0, DAY),
    ],
)
def test_text_columns_are_typed_by_what_their_values_parse_as(
    tmp_path: Path,
    values: list[str | None],
    expected_type: ColumnType,
    tolerance: float,
    inferred: ColumnType,
) -> None:
    path = landed(tmp_path, "t", {"id": pa.array(range(len(values)), pa.int64()), "value": text(values)})
    schema = delivered_schema([path], {"value": expected_type}, tolerance=tolerance)
    assert schema == {"id": INT, "value": inferred}


def test_a_lone_unparseable_value_is_judged_in_its_own_delivery(tmp_path: Path) -> None:
    """Orders arrive three rows at a time: one malformed amount in each of two deliveries is a bad value
    in each, not a type change (over both deliveries' rows it would be two); two in one delivery are."""
    first = landed(tmp_path, "a", {"amount": text(["10", "n/a", "30"])})
    second = landed(tmp_path, "b", {"amount": text(["abc", "50", "60"])})
    assert delivered_schema([first, second], {"amount": INT}, tolerance=0.05) == {"amount": INT}
    third = landed(tmp_path, "c", {"amount": text(["n/a", "abc", "90"])})
    assert delivered_schema([first, third], {"amount": INT}, tolerance=0.05) == {"amount": STR}


def test_text_columns_without_expected_type_are_strings(tmp_path: Path) -> None:
    path = landed(
        tmp_path, "t", {"id": text(["1", "2"]), "fresh": text(["1", "2"]), "empty": text([None, None])}
    )
    assert delivered_schema([path], {"id": "integer"}) == {"id": INT, "fresh": STR, "empty": STR}


def test_text_and_typed_files_of_one_column(tmp_path: Path) -> None:
    typed = landed(tmp_path, "a", {"qty": pa.array([1, 2], pa.int64())})
    as_text = landed(tmp_path, "b", {"qty": text(["3", "4.5"])})
    assert delivered_schema([typed, as_text], {"qty": INT}) == {"qty": DBL}
    bad_text = landed(tmp_path, "c", {"qty": text(["many", "few"])})
    assert delivered_schema([typed, bad_text], {"qty": INT}) == {"qty": STR}
    empty_text = landed(tmp_path, "d", {"qty": text([None])})
    assert delivered_schema([typed, empty_text], {"qty": DBL}) == {"qty": DBL}  # ints read as double
    assert delivered_schema([empty_text], {"qty": DBL}) == {"qty": DBL}


def test_expected_types_prefer_the_declaration() -> None:
    previous = next_version(None, {"qty": STR, "extra": DBL})
    assert expected_types({"qty": INT}, previous) == {"qty": INT, "extra": DBL}
    assert expected_types({"qty": INT}, None) == {"qty": INT}


@pytest.mark.parametrize(
    ("sql", "kind", "value"),
    [
        ("'7'", INT, 7),
        ("'1.5'", INT, None),
        ("1.5::DOUBLE", INT, None),
        ("2.0::DOUBLE", INT, 2),
        ("'1.5'", DBL, 1.5),
        ("'2024-01-01 10:00'", DAY, None),
        ("TIMESTAMP '2024-01-01 00:00'", DAY, datetime.date(2024, 1, 1)),
        ("'2024-01-01 10:00'", TSTAMP, datetime.datetime(2024, 1, 1, 10)),
        ("42::BIGINT", STR, "42"),
        ("NULL::VARCHAR", INT, None),
    ],
)
def test_strict_cast_refuses_lossy_conversions(sql: str, kind: ColumnType, value: object) -> None:
    with duckdb.connect() as con:
        assert con.execute(f"SELECT {strict_cast(f'({sql})', kind)}").fetchone() == (value,)


def test_fingerprint_is_order_independent_and_type_sensitive() -> None:
    a = fingerprint({"b": "string", "a": INT})
    assert a == fingerprint({"a": "integer", "b": STR})
    assert len(a) == 64 and a != fingerprint({"a": DBL, "b": STR})
    assert fingerprint({"a": INT}) != fingerprint({"a": INT, "b": STR})


def test_versions_follow_fingerprints() -> None:
    first = next_version(None, {"id": INT, "qty": INT}, now=datetime.datetime(2026, 1, 1, tzinfo=UTC))
    assert (first.version, first.columns) == (1, {"id": "integer", "qty": "integer"})
    assert next_version(first, {"qty": "integer", "id": INT}) is first  # same fingerprint, same version
    second = next_version(first, {"id": INT, "qty": DBL})
    assert second.version == 2 and second.recorded_at > first.recorded_at
    assert next_version(second, {"id": INT, "qty": INT}).version == 3  # back to v1's schema: a new version


def test_diff() -> None:
    before = next_version(None, {"id": INT, "qty": INT, "gone": STR})
    changes = diff(before, {"id": INT, "qty": STR, "fresh": DAY})
    assert changes == SchemaDiff(
        added={"fresh": "date"}, removed={"gone": "string"}, type_changed={"qty": ("integer", "string")}
    )
    assert not changes.empty and diff(before, before.columns).empty
    assert diff(None, {"id": INT}).added == {"id": "integer"}
    assert changes.to_json() == {
        "added": {"fresh": "date"},
        "removed": {"gone": "string"},
        "type_changed": {"qty": ["integer", "string"]},
    }


def test_metadata_round_trip() -> None:
    version = next_version(None, {"id": INT, "qty": DBL}, now=datetime.datetime(2026, 11, 23, 1, tzinfo=UTC))
    metadata = schema_metadata(version, diff(None, version.columns))
    assert metadata[VERSION_METADATA] == dg.MetadataValue.int(1)
    assert isinstance(metadata[DIFF_METADATA], dg.JsonMetadataValue)
    assert version_from_metadata(metadata) == version
    assert version_from_metadata({"rows": dg.MetadataValue.int(3)}) is None


STAGED = dg.AssetKey(["staged", "shop", "orders"])
OTHER = dg.AssetKey(["staged", "shop", "customers"])


def record(
    instance: dg.DagsterInstance, key: dg.AssetKey, columns: dict[str, ColumnType], *, in_run: bool = False
) -> SchemaVersion:
    """What a staged asset does: compute the next version from the previous one and record it (in a run,
    or, faster, as a runless materialization event)."""
    previous = previous_version(instance, key)
    version = next_version(previous, columns)
    metadata = schema_metadata(version, diff(previous, columns))
    if not in_run:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))
        return version

    @dg.asset(key=key)
    def staged() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=metadata)

    assert dg.materialize([staged], instance=instance).success
    return version


def test_previous_version_comes_from_the_latest_materialization() -> None:
    with dg.instance_for_test() as instance:
        assert previous_version(instance, STAGED) is None
        first = record(instance, STAGED, {"id": INT, "qty": INT}, in_run=True)
        assert previous_version(instance, STAGED) == first
        assert record(instance, STAGED, {"id": INT, "qty": INT}) == first
        second = record(instance, STAGED, {"id": INT, "qty": DBL})
        assert second.version == 2 and previous_version(instance, STAGED) == second


def test_registry_rows_one_per_asset_and_version() -> None:
    with dg.instance_for_test() as instance:
        assert registry_rows(instance, [STAGED]).equals(REGISTRY_SCHEMA.empty_table())
        record(instance, STAGED, {"id": INT, "qty": INT})
        record(instance, STAGED, {"id": INT, "qty": INT})
        record(instance, STAGED, {"id": INT, "qty": DBL}, in_run=True)
        record(instance, OTHER, {"id": INT})
        table = registry_rows(instance, [STAGED, OTHER])
    assert table.schema == REGISTRY_SCHEMA
    rows = table.to_pylist()
    assert [(row["asset_key"], row["version"]) for row in rows] == [
        ("staged/shop/customers", 1),
        ("staged/shop/orders", 1),
        ("staged/shop/orders", 2),
    ]
    second = rows[2]
    assert json.loads(second["columns_json"]) == {"id": "integer", "qty": "double"}
    assert json.loads(second["diff_json"])["type_changed"] == {"qty": ["integer", "double"]}
    assert len(second["fingerprint"]) == 64 and second["run_id"] and second["recorded_at"].tzinfo


def test_schema_registry_asset_upserts_into_the_warehouse(tmp_path: Path) -> None:
    class Item:  # the two attributes the factory reads from a catalog entity
        def __init__(self, source_name: str, name: str) -> None:
            self.source_name, self.name = source_name, name

    registry = build_schema_registry_asset([Item("shop", "orders"), Item("shop", "customers")], "duckdb")  # type: ignore[list-item]
    spec = next(iter(registry.specs))
    assert spec.key == SCHEMA_REGISTRY_KEY and spec.group_name == "ops" and spec.kinds == {"duckdb"}
    assert not spec.deps, "it reads the staged assets' history, not their tables: no edge from each of them"
    assert spec.metadata[LOAD_MODE_KEY] == "upsert"
    assert spec.metadata[PRIMARY_KEY_KEY] == ["asset_key", "version"]
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    resources = {"warehouse_io_manager": WarehouseIOManager(warehouse=warehouse)}
    with dg.instance_for_test() as instance:
        assert dg.materialize([registry], instance=instance, resources=resources).success
        assert warehouse.query("SELECT count(*) FROM ops.schema_registry") == [(0,)]
        record(instance, STAGED, {"id": INT, "qty": INT})
        assert dg.materialize([registry], instance=instance, resources=resources).success
        record(instance, STAGED, {"id": INT, "qty": STR})
        record(instance, OTHER, {"id": INT})
        assert dg.materialize([registry], instance=instance, resources=resources).success
        assert dg.materialize([registry], instance=instance, resources=resources).success  # idempotent
    rows = warehouse.query("SELECT asset_key, version FROM ops.schema_registry ORDER BY 1, 2")
    assert rows == [("staged/shop/customers", 1), ("staged/shop/orders", 1), ("staged/shop/orders", 2)]
    assert [name for name, _ in warehouse.columns("ops", "schema_registry")] == REGISTRY_SCHEMA.names


def test_the_shipped_demo_delivers_its_declared_schema(local_platform: LocalPlatform) -> None:
    """Under every entity's default policy (backward, fail), the demo's own deliveries change nothing:
    wiring the registry into staging must not fail a healthy delivery."""
    job = dg.define_asset_job("raw", selection=RAW_ASSETS)
    definitions = dg.Definitions.merge(local_platform.definitions, dg.Definitions(jobs=[job]))
    result = definitions.resolve_job_def("raw").execute_in_process(instance=local_platform.instance)
    assert result.success
    landing = LandingZone(root=str(local_platform.settings.landing_dir))
    for item in load_catalog(variables=local_platform.settings.catalog_vars()):
        declared = {name: column.type for name, column in item.entity.columns.items()}
        files = landing.committed_files(item.source_name, item.name)
        assert files, f"{item.source_name}.{item.name} landed nothing"
        delivered = delivered_schema(files, declared, tolerance=item.entity.max_bad_fraction)
        assert {name: delivered[name] for name in declared} == declared, f"{item.source_name}.{item.name}"
        decision = decide(item.entity, None, delivered)
        assert (decision.action, decision.violations) == ("none", []), f"{item.source_name}.{item.name}"
        assert next_version(None, delivered).version == 1
