"""The table profile: one aggregate, run by the warehouse (DuckDB and PostgreSQL), over a staged table
loaded from real landed Parquet files.

The staging SELECT here is written out (typed columns by TRY_CAST, `_cast_errors`, `_extracted_at`) rather
than taken from `staging_sql`, so that these tests pin the profile alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest
from conftest import LocalPlatform

from platform_assets.catalog.model import Source
from platform_assets.definitions import DBT_PROJECT_DIR
from platform_assets.quality.profile import (
    DUPLICATE_KEY_ROWS,
    TableProfile,
    duplicate_key_rows_after_upsert,
    measure_columns,
    profile_sql,
    profile_table,
)
from platform_assets.quality.score import WEIGHTS
from resources.environment import PlatformSettings, build_resources
from resources.landing.zone import Lineage, write_parquet
from resources.warehouses.base import Warehouse
from resources.warehouses.duckdb_warehouse import quote_identifier

SOURCE = Source.model_validate(
    {
        "source": "shop",
        "connection": {"kind": "files", "root": "/deliveries"},
        "entities": {
            "order_items": {
                "file": {"format": "csv", "path": "*.csv"},
                "primary_key": ["order_id", "line_no"],
                "columns": {
                    "order_id": {"type": "integer", "nullable": False},
                    "line_no": {"type": "integer", "nullable": False},
                    "product_id": {"type": "integer", "references": "shop.products.product_id"},
                    "quantity": {"type": "integer"},
                    "unit_price": {"type": "double"},
                    "note": {"type": "string"},
                },
            }
        },
    }
)
ENTITY = SOURCE.entities["order_items"]
EXTRACTED = datetime(2026, 11, 20, 6, 30, tzinfo=UTC)


def _landed(tmp_path: Path, rows: dict[str, list[str | None]]) -> Path:
    count = len(next(iter(rows.values())))
    batch = pa.RecordBatch.from_pydict(
        {
            **{name: pa.array(values, pa.string()) for name, values in rows.items()},
            "_file": pa.array(["items.csv"] * count),
            "_record": pa.array(range(1, count + 1), pa.int64()),
        }
    )
    landed = write_parquet(tmp_path / "landed.parquet", [batch], Lineage("shop.order_items", EXTRACTED, "r1"))
    assert landed is not None
    return landed.path


def _staging_select(paths: list[Path]) -> str:
    """What the staging SELECT yields: each declared column typed, the values that did not parse listed."""
    typed, errors = [], []
    for name, column in ENTITY.columns.items():
        raw = quote_identifier(name)
        sql_type = {"integer": "BIGINT", "double": "DOUBLE", "string": "VARCHAR"}[column.type.value]
        typed.append(f"TRY_CAST({raw} AS {sql_type}) AS {raw}")
        errors.append(
            f"CASE WHEN {raw} IS NOT NULL AND TRY_CAST({raw} AS {sql_type}) IS NULL THEN '{name}' END"
        )
    cast_errors = f"NULLIF(concat_ws('; ', {', '.join(errors)}), '') AS _cast_errors"
    if paths:
        landed = f"read_parquet([{', '.join(repr(str(path)) for path in paths)}])"
    else:
        nothing = ", ".join(f"NULL::VARCHAR AS {quote_identifier(name)}" for name in ENTITY.columns)
        landed = f"(SELECT {nothing}, NULL::TIMESTAMPTZ AS _extracted_at WHERE false)"
    return f"SELECT {', '.join(typed)}, {cast_errors}, _extracted_at FROM {landed}"


def test_measure_columns_leave_out_identifiers() -> None:
    assert measure_columns(ENTITY) == ["quantity", "unit_price"]


@pytest.fixture
def warehouse(warehouse_settings: PlatformSettings) -> Warehouse:
    return build_resources(warehouse_settings, DBT_PROJECT_DIR)["warehouse"]


def _profile(warehouse: Warehouse, select: str) -> TableProfile:
    """`select` (embedded DuckDB) loaded as a staged table, and profiled by the warehouse."""
    rows = duckdb.sql(select).to_arrow_table()
    batches = rows.to_batches() or [pa.RecordBatch.from_pylist([], schema=rows.schema)]
    warehouse.load("staged", "shop__order_items", batches, mode="replace")
    return profile_table(warehouse, "staged", "shop__order_items", ENTITY)


def test_profile_of_the_staged_table(tmp_path: Path, warehouse: Warehouse) -> None:
    path = _landed(
        tmp_path,
        {
            "order_id": ["1", "1", "2", "2", "3"],
            "line_no": ["1", "2", "1", "1", "1"],  # (2, 1) delivered twice in one extraction
            "product_id": ["10", "11", None, "12", "13"],
            "quantity": ["1", "2", "three", "4", None],  # one cast error, one null
            "unit_price": ["1.5", "2.5", "3.5", "4.5", "5.5"],
            "note": [None, None, None, "gift", None],
        },
    )
    profile = _profile(warehouse, _staging_select([path]))

    assert profile.rows == 5
    assert profile.null_counts == {
        "order_id": 0,
        "line_no": 0,
        "product_id": 1,
        "quantity": 2,  # the cast error is null in the typed column too
        "unit_price": 0,
        "note": 4,
    }
    assert profile.duplicate_key_rows == 1
    assert profile.cast_error_rows == 1
    assert profile.max_extracted_at == EXTRACTED
    assert profile.means["quantity"] == pytest.approx(7 / 3)
    assert profile.stddevs["quantity"] == pytest.approx(1.5275252)
    assert profile.means["unit_price"] == pytest.approx(3.5)
    assert profile.null_rate("note") == pytest.approx(0.8)

    metadata = profile.metadata()
    assert metadata["profile/null_rate/note"] == dg.MetadataValue.float(0.8)
    assert metadata["profile/mean/unit_price"] == dg.MetadataValue.float(3.5)
    assert metadata["profile/duplicate_key_rows"] == dg.MetadataValue.int(1)
    assert metadata["profile/cast_error_rows"] == dg.MetadataValue.int(1)
    assert "profile/mean/order_id" not in metadata
    document = metadata["profile"].value
    assert json.loads(json.dumps(document))["columns"]["quantity"]["nulls"] == 2
    assert document["max_extracted_at"] == "2026-11-20T06:30:00+00:00"


def test_profile_of_an_empty_table(warehouse: Warehouse) -> None:
    profile = _profile(warehouse, _staging_select([]))
    assert profile.rows == 0
    assert profile.null_rate("note") == 0.0
    assert profile.means == {"quantity": None, "unit_price": None}
    assert profile.max_extracted_at is None
    metadata = profile.metadata()
    assert "profile/mean/quantity" not in metadata
    assert metadata["profile/null_rate/quantity"] == dg.MetadataValue.float(0.0)


def test_profile_sql_is_one_aggregate_with_a_portable_count_of_composite_keys() -> None:
    sql = profile_sql("SELECT 1", ENTITY)
    assert sql.endswith("FROM (SELECT 1) AS __staged")
    assert "count(DISTINCT (" not in sql  # a row-value DISTINCT, which BigQuery does not have
    assert 'SELECT DISTINCT "order_id", "line_no" FROM (SELECT 1) AS __staged' in sql


def test_profile_sql_takes_known_duplicate_key_rows_instead_of_counting_keys() -> None:
    sql = profile_sql("SELECT 1", ENTITY, duplicate_key_rows=3)
    assert "DISTINCT" not in sql
    assert "3 AS __duplicate_key_rows" in sql


def test_duplicate_key_rows_after_an_upsert_are_the_deltas_while_the_table_had_none() -> None:
    def delta(count: int) -> Callable[[], int]:
        return lambda: count

    def never() -> int:
        raise AssertionError("the delta's duplicates are not needed")

    assert duplicate_key_rows_after_upsert({DUPLICATE_KEY_ROWS: dg.MetadataValue.int(0)}, delta(2)) == 2
    assert duplicate_key_rows_after_upsert({DUPLICATE_KEY_ROWS: dg.MetadataValue.int(1)}, never) is None
    assert duplicate_key_rows_after_upsert({}, never) is None
    assert duplicate_key_rows_after_upsert(None, never) is None


def test_each_staged_materialization_records_its_profile_and_quality_score(
    local_platform: LocalPlatform,
) -> None:
    result = local_platform.materialize_ingestion()
    assert result.success
    (event,) = result.asset_materializations_for_node("staged__shop__orders")
    metadata = {name: value.value for name, value in event.metadata.items()}
    assert metadata["rows_quarantined"] == 0
    assert metadata["quality/score"] == 100.0
    assert set(metadata) >= {f"quality/{d}" for d in WEIGHTS}
    assert metadata["profile/null_rate/status"] == 0.0
    assert metadata["profile/mean/amount"] > 0
    assert metadata["profile"]["rows"] == metadata["dagster/row_count"]
