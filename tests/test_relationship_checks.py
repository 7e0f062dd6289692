"""The `relationships` check: orphan foreign keys counted in a real DuckDB and a real PostgreSQL, and the
check itself in Dagster runs (ordering after the referenced assets, severity, the last orphan rate)."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.execution.api import create_execution_plan

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.keys import STAGED_SCHEMA, staged_key, staged_table
from platform_assets.quality.relationship_checks import (
    MAX_ORPHAN_EXAMPLES,
    RELATIONSHIP_CHECK,
    build_relationship_check,
    find_orphans,
    foreign_keys,
    last_orphan_rate,
    relationship_result,
)
from resources.warehouses.base import Warehouse
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
from resources.warehouses.postgres_warehouse import PostgresWarehouse


def _source(name: str, entities: dict) -> Source:
    return Source.model_validate(
        {"source": name, "connection": {"kind": "files", "root": "/x"}, "entities": entities}
    )


def _catalog(customer_severity: str = "warn") -> list[CatalogEntity]:
    file = {"format": "csv", "path": "*.csv"}
    shop_db = _source(
        "shop_db",
        {
            "customers": {
                "file": file,
                "primary_key": ["customer_id"],
                "columns": {"customer_id": {"type": "integer"}, "email": {"type": "string"}},
            }
        },
    )
    shop = _source(
        "shop",
        {
            "orders": {
                "file": file,
                "primary_key": ["order_id"],
                "columns": {
                    "order_id": {"type": "integer"},
                    "customer_id": {
                        "type": "integer",
                        "references": "shop_db.customers.customer_id",
                        "references_severity": customer_severity,
                    },
                    "customer_ref": {"type": "string", "references": "shop_db.customers.customer_id"},
                    "parent_order_id": {"type": "integer", "references": "shop.orders.order_id"},
                },
            },
            "notes": {"file": file, "primary_key": ["note_id"], "columns": {"note_id": {"type": "integer"}}},
        },
    )
    return [
        CatalogEntity(shop_db, "customers", shop_db.entities["customers"]),
        CatalogEntity(shop, "orders", shop.entities["orders"]),
        CatalogEntity(shop, "notes", shop.entities["notes"]),
    ]


CUSTOMERS = {"customer_id": [1, 2, 3], "email": ["a", "b", None]}
ORDERS = {
    "order_id": [10, 11, 12, 13, 14],
    "customer_id": [1, 2, 7, None, 8],  # 7 and 8 are orphans, None is not
    "customer_ref": ["1", "3", "3", "9", None],  # text pointing at an integer column: compared as text
    "parent_order_id": [None, 10, 10, 99, None],  # self-reference, 99 is an orphan
}


TEXT_COLUMNS = {"email", "customer_ref"}


def _load(warehouse: Warehouse, source: str, entity: str, columns: dict[str, list]) -> None:
    typed = {
        name: pa.array(values, pa.string() if name in TEXT_COLUMNS else pa.int64())
        for name, values in columns.items()
    }
    table = staged_table(source, entity)
    warehouse.load(STAGED_SCHEMA, table, [pa.RecordBatch.from_pydict(typed)], mode="replace")


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    else:
        yield PostgresWarehouse(url=request.getfixturevalue("postgres_database"))


def test_foreign_keys_of_the_catalog() -> None:
    catalog = _catalog()
    keys = {key.column: key for key in foreign_keys(catalog[1].entity, catalog)}
    assert set(keys) == {"customer_id", "customer_ref", "parent_order_id"}
    assert keys["customer_ref"].cast_to_string and not keys["customer_id"].cast_to_string
    assert keys["parent_order_id"].parent_key == staged_key("shop", "orders")
    assert build_relationship_check(catalog[2], catalog) is None


def test_orphans_are_counted_in_the_warehouse(warehouse: Warehouse) -> None:
    catalog = _catalog()
    _load(warehouse, "shop_db", "customers", CUSTOMERS)
    _load(warehouse, "shop", "orders", ORDERS)
    keys = {key.column: key for key in foreign_keys(catalog[1].entity, catalog)}
    table = staged_table("shop", "orders")

    customer = find_orphans(warehouse, table, keys["customer_id"])
    assert (customer.checked, customer.values, customer.orphans, customer.examples) == (
        True,
        4,
        2,
        ("7", "8"),
    )
    assert customer.rate == pytest.approx(0.5)
    text = find_orphans(warehouse, table, keys["customer_ref"])
    assert (text.values, text.orphans, text.examples) == (4, 1, ("9",))
    parent = find_orphans(warehouse, table, keys["parent_order_id"])
    assert (parent.values, parent.orphans, parent.examples) == (3, 1, ("99",))

    result = relationship_result([customer, text, parent])
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["orphans"] == dg.MetadataValue.int(4)
    assert result.metadata["orphan_rate"].value == pytest.approx(4 / 11)
    assert result.metadata["orphan_rate/customer_id"].value == pytest.approx(0.5)
    records = {r.data["column"]: r.data for r in result.metadata["foreign_keys"].value.records}
    assert records["customer_id"]["orphan_examples"] == "7, 8"


def test_examples_are_capped(warehouse: Warehouse) -> None:
    catalog = _catalog()
    _load(warehouse, "shop_db", "customers", CUSTOMERS)
    count = MAX_ORPHAN_EXAMPLES + 5
    _load(
        warehouse,
        "shop",
        "orders",
        {
            "order_id": list(range(count)),
            "customer_id": [100 + i for i in range(count)],
            "customer_ref": ["1"] * count,
            "parent_order_id": [None] * count,
        },
    )
    key = foreign_keys(catalog[1].entity, catalog)[0]
    report = find_orphans(warehouse, staged_table("shop", "orders"), key)
    assert report.orphans == count
    assert report.examples == tuple(str(100 + i) for i in range(MAX_ORPHAN_EXAMPLES))


def test_a_missing_referenced_table_is_not_checked(tmp_path: Path) -> None:
    catalog = _catalog()
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    _load(warehouse, "shop", "orders", ORDERS)
    key = foreign_keys(catalog[1].entity, catalog)[0]
    report = find_orphans(warehouse, staged_table("shop", "orders"), key)
    assert not report.checked and "materialize staged/shop_db/customers" in report.note
    result = relationship_result([report])
    assert result.passed and "not checked" in (result.description or "")


def _staged(source: str, entity: str, columns: dict[str, list]) -> dg.AssetsDefinition:
    @dg.asset(key=staged_key(source, entity))
    def staged(warehouse: Warehouse) -> None:
        _load(warehouse, source, entity, columns)

    return staged


def _run(
    catalog: list[CatalogEntity],
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
    customers: dict,
    orders: dict,
) -> dg.ExecuteInProcessResult:
    """Orders first in the list (and in step-key order): the check must still wait for customers."""
    check = build_relationship_check(catalog[1], catalog)
    assert check is not None
    return dg.materialize(
        [_staged("shop", "orders", orders), _staged("shop_db", "customers", customers), check],
        instance=instance,
        resources={"warehouse": warehouse},
        raise_on_error=False,
    )


def test_the_check_runs_after_the_referenced_asset_and_records_the_orphan_rate(tmp_path: Path) -> None:
    catalog = _catalog()
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    _load(warehouse, "shop_db", "customers", {"customer_id": [1], "email": ["a"]})  # the previous run's
    clean = {
        "order_id": [10, 11],
        "customer_id": [1, 3],
        "customer_ref": ["3", None],
        "parent_order_id": [None, 10],
    }
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run(catalog, warehouse, instance, CUSTOMERS, clean)
        (evaluation,) = result.get_asset_check_evaluations()
        assert result.success and evaluation.passed, evaluation.description  # customer 3 arrived this run
        assert last_orphan_rate(instance, staged_key("shop", "orders")) == 0.0

        result = _run(catalog, warehouse, instance, CUSTOMERS, ORDERS)
        (evaluation,) = result.get_asset_check_evaluations()
        assert result.success and not evaluation.passed  # warn: reported, nothing blocked
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        assert last_orphan_rate(instance, staged_key("shop", "orders")) == pytest.approx(4 / 11)


def test_error_references_make_a_blocking_check(tmp_path: Path) -> None:
    catalog = _catalog(customer_severity="error")
    check = build_relationship_check(catalog[1], catalog)
    assert check is not None
    (spec,) = check.check_specs
    assert spec.blocking and spec.name == RELATIONSHIP_CHECK
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run(catalog, warehouse, instance, CUSTOMERS, ORDERS)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert not result.success  # a blocking check failing with ERROR fails its step


def test_the_check_step_waits_for_the_referenced_staged_assets() -> None:
    catalog = _catalog()
    check = build_relationship_check(catalog[1], catalog)
    assert check is not None
    definitions = dg.Definitions(
        assets=[_staged("shop", "orders", {}), _staged("shop_db", "customers", {})],
        asset_checks=[check],
        resources={"warehouse": dg.ResourceDefinition.none_resource()},
    )
    plan = create_execution_plan(definitions.resolve_implicit_global_asset_job_def())
    (step,) = [step for step in plan.steps if step.key.endswith(RELATIONSHIP_CHECK)]
    assert step.get_execution_dependency_keys() == {"staged__shop__orders", "staged__shop_db__customers"}
