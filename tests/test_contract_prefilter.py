"""The contract check's SQL pre-filter: it must find every row Pandera would fail (on DuckDB and
PostgreSQL), and a violation it lets through to Pandera is reported exactly as before."""

from __future__ import annotations

import pyarrow as pa
import pytest

from platform_assets.catalog.loader import CatalogEntity
from platform_assets.catalog.model import Source
from platform_assets.factories.dbt_models import DBT_PROJECT_DIR
from platform_assets.keys import STAGED_SCHEMA, staged_table
from platform_assets.quality.contract_prefilter import suspect_condition
from platform_assets.quality.contract_validation import FIRST_BATCH_ROWS, validate_staged_table
from resources.environment import PlatformSettings, build_resources
from resources.warehouses.base import Warehouse

COLUMNS = {
    "order_id": {"type": "integer", "nullable": False},
    "amount": {"type": "double", "min": 0},
    "score": {"type": "double", "min": 0, "max": 1},
    "quantity": {"type": "integer", "min": 1, "max": 99},
    "status": {"type": "string", "nullable": False, "allowed_values": ["paid", "shipped"]},
    "code": {"type": "string", "min_length": 2, "max_length": 4},
    "note": {"type": "string", "severity": "warn", "max_length": 3},
}


def _item(columns: dict) -> CatalogEntity:
    source = Source.model_validate(
        {
            "source": "acme",
            "connection": {"kind": "files", "root": "/deliveries"},
            "entities": {
                "orders": {
                    "file": {"format": "csv", "path": "*.csv"},
                    "primary_key": ["order_id"],
                    "columns": columns,
                }
            },
        }
    )
    return CatalogEntity(source, "orders", source.entities["orders"])


ITEM = _item(COLUMNS)
CLEAN = {
    "order_id": 1,
    "amount": 10.0,
    "score": 0.5,
    "quantity": 3,
    "status": "paid",
    "code": "ab",
    "note": "ok",
    "_cast_errors": None,
}
BREAKING = {
    "order_id is null": {"order_id": None},
    "amount below min": {"amount": -0.01},
    "amount NaN (min only)": {"amount": float("nan")},
    "score above max": {"score": 1.5},
    "score NaN": {"score": float("nan")},
    "quantity below min": {"quantity": 0},
    "status not allowed": {"status": "lost"},
    "status null": {"status": None},
    "code too short": {"code": "a"},
    "code too long": {"code": "abcde"},
    "a value did not parse": {"_cast_errors": "quantity=three"},
}
SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("amount", pa.float64()),
        ("score", pa.float64()),
        ("quantity", pa.int64()),
        ("status", pa.string()),
        ("code", pa.string()),
        ("note", pa.string()),
        ("_cast_errors", pa.string()),
        ("_origin", pa.string()),
        ("_record", pa.int64()),
    ]
)


@pytest.fixture
def warehouse(warehouse_settings: PlatformSettings) -> Warehouse:
    return build_resources(warehouse_settings, DBT_PROJECT_DIR)["warehouse"]


def _load(warehouse: Warehouse, rows: list[dict]) -> str:
    records = [{**row, "_origin": "orders.csv", "_record": index + 2} for index, row in enumerate(rows)]
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    warehouse.load(STAGED_SCHEMA, staged_table("acme", "orders"), table.to_batches(), mode="replace")
    return warehouse.table_ref(STAGED_SCHEMA, staged_table("acme", "orders"))


def test_every_row_pandera_would_fail_is_suspect_and_a_clean_row_is_not(warehouse: Warehouse) -> None:
    rows = [CLEAN] + [
        {**CLEAN, "order_id": index + 2, **change} for index, change in enumerate(BREAKING.values())
    ]
    table = _load(warehouse, rows)
    condition = suspect_condition(ITEM.entity, "error", warehouse.quote)
    assert condition is not None
    record = warehouse.quote("_record")
    suspects = warehouse.query(f"SELECT {record} FROM {table} WHERE {condition} ORDER BY {record}")
    assert [record for (record,) in suspects] == [index + 3 for index in range(len(BREAKING))]
    report = validate_staged_table(warehouse, ITEM)
    assert report.rows_checked == len(rows)
    assert dict(report.counts) == {
        "order_id: nullable": 1,
        "amount: min": 2,  # -0.01 and NaN
        "score: min": 1,  # NaN
        "score: max": 2,  # 1.5 and NaN
        "quantity: min": 1,
        "quantity: type": 1,
        "status: allowed_values": 1,
        "status: nullable": 1,
        "code: min_length": 1,
        "code: max_length": 1,
    }


def test_a_violation_past_the_first_batch_is_reported_by_pandera(warehouse: Warehouse) -> None:
    rows = [{**CLEAN, "order_id": index + 1} for index in range(FIRST_BATCH_ROWS * 2)]
    rows[FIRST_BATCH_ROWS + 500]["amount"] = -5.0
    _load(warehouse, rows)
    report = validate_staged_table(warehouse, ITEM)
    assert dict(report.counts) == {"amount: min": 1}
    assert report.rows_checked == len(rows)
    (example,) = report.examples
    assert (example.key, example.value, example.source_record) == (
        {"order_id": str(FIRST_BATCH_ROWS + 501)},
        "-5.0",
        FIRST_BATCH_ROWS + 502,
    )


def test_a_clean_table_passes_with_every_row_counted_and_warn_rules_apart(warehouse: Warehouse) -> None:
    rows = [{**CLEAN, "order_id": index + 1} for index in range(FIRST_BATCH_ROWS * 3)]
    rows[-1]["note"] = "long note"
    _load(warehouse, rows)
    errors = validate_staged_table(warehouse, ITEM)
    assert errors.passed and errors.rows_checked == len(rows)
    warnings = validate_staged_table(warehouse, ITEM, severity="warn")
    assert dict(warnings.counts) == {"note: max_length": 1}


@pytest.mark.parametrize(
    "column",
    [
        {"type": "string", "regex": "^[a-z]+$"},
        {"type": "integer", "allowed_values": ["1", "2"]},
        {"type": "string", "check": "quality_rule_checks.is_upper"},
    ],
    ids=["regex", "allowed values of integers", "custom check"],
)
def test_a_rule_without_portable_sql_leaves_every_row_to_pandera(column: dict) -> None:
    item = _item({"order_id": {"type": "integer", "nullable": False}, "value": column})
    assert suspect_condition(item.entity, "error", lambda name: f'"{name}"') is None
