"""The warehouse IO manager, through real Dagster materializations, on DuckDB, a real PostgreSQL and the
BigQuery emulator (loads staged as Parquet on the GCS emulator): the same asset code, only the warehouse
behind the IO manager changes."""

import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from resources.warehouses.base import Warehouse
from resources.warehouses.bigquery_warehouse import BigQueryWarehouse
from resources.warehouses.duckdb_warehouse import DuckDBWarehouse
from resources.warehouses.io_manager import WarehouseIOManager, load_metadata
from resources.warehouses.load import WarehouseLoadError
from resources.warehouses.postgres_warehouse import PostgresWarehouse


@pytest.fixture(params=["duckdb", "postgres", "bigquery"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    if request.param == "duckdb":
        return DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    if request.param == "postgres":
        return PostgresWarehouse(url=request.getfixturevalue("postgres_database"))
    emulator = request.getfixturevalue("bigquery_emulator")
    return BigQueryWarehouse(
        project=emulator.project,
        staging_uri=f"gs://{request.getfixturevalue('gcs_bucket')}/staging",
        api_endpoint=emulator.endpoint,
        anonymous=True,
    )


def _materialize(assets: list, warehouse: Warehouse, **kwargs: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources={"io_manager": WarehouseIOManager(warehouse=warehouse)}, **kwargs)


def _metadata(result: dg.ExecuteInProcessResult, key: list[str]) -> dict[str, object]:
    (event,) = result.asset_materializations_for_node("__".join(key))
    return {name: value.value for name, value in event.metadata.items()}


def test_arrow_output_is_loaded_and_read_back_as_arrow_pandas_or_a_stream(warehouse: Warehouse) -> None:
    @dg.asset(key=["staged", "demo", "orders"])
    def orders() -> pa.Table:
        return pa.table({"order_id": [1, 2, 3], "Amount": [1.5, 2.5, None]})

    seen: dict[str, object] = {}

    @dg.asset(ins={"frame": dg.AssetIn(["staged", "demo", "orders"])})
    def as_pandas(frame: pd.DataFrame) -> None:
        seen["pandas"] = frame

    @dg.asset(ins={"table": dg.AssetIn(["staged", "demo", "orders"])})
    def as_arrow(table: pa.Table) -> None:
        seen["arrow"] = table

    @dg.asset(ins={"reader": dg.AssetIn(["staged", "demo", "orders"])})
    def as_stream(reader: pa.RecordBatchReader) -> None:
        seen["stream"] = reader.read_all()

    result = _materialize([orders, as_pandas, as_arrow, as_stream], warehouse)
    assert result.success
    metadata = _metadata(result, ["staged", "demo", "orders"])
    assert metadata["dagster/row_count"] == 3
    assert metadata["rows_written"] == 3
    assert metadata["bytes_written"] > 0
    assert metadata["dagster/table_name"] == "staged.demo__orders"
    assert metadata["warehouse"] == warehouse.kind
    assert [c.name for c in metadata["dagster/column_schema"].columns] == ["order_id", "Amount"]
    frame = seen["pandas"]
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["order_id", "Amount"]
    assert sorted(frame["order_id"]) == [1, 2, 3]
    assert isinstance(seen["arrow"], pa.Table)
    assert seen["arrow"].num_rows == 3
    assert seen["stream"].num_rows == 3


def test_a_stream_of_batches_is_loaded_without_collecting_it(warehouse: Warehouse) -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])

    @dg.asset(key=["staged", "demo", "events"])
    def events() -> pa.RecordBatchReader:
        batches = (
            pa.RecordBatch.from_pydict(
                {"id": list(range(i * 1000, (i + 1) * 1000)), "name": ["x"] * 1000}, schema=schema
            )
            for i in range(20)
        )
        return pa.RecordBatchReader.from_batches(schema, batches)

    result = _materialize([events], warehouse)
    assert _metadata(result, ["staged", "demo", "events"])["rows_written"] == 20_000
    assert warehouse.query(
        f"SELECT count(DISTINCT id) FROM {warehouse.table_ref('staged', 'demo__events')}"
    ) == [(20_000,)]


def test_upsert_metadata_updates_changed_rows_and_adds_new_ones(warehouse: Warehouse) -> None:
    version = {"n": 1}

    @dg.asset(
        key=["staged", "demo", "customers"],
        metadata=load_metadata(mode="upsert", primary_key=["customer_id"]),
    )
    def customers() -> pd.DataFrame:
        if version["n"] == 1:
            return pd.DataFrame({"customer_id": [1, 2], "tier": ["basic", "basic"]})
        return pd.DataFrame({"customer_id": [2, 3], "tier": ["gold", "basic"]})

    _materialize([customers], warehouse)
    version["n"] = 2
    result = _materialize([customers], warehouse)
    assert _metadata(result, ["staged", "demo", "customers"])["load_mode"] == "upsert"
    table = warehouse.table_ref("staged", "demo__customers")
    rows = warehouse.query(f"SELECT customer_id, tier FROM {table} ORDER BY customer_id")
    assert [tuple(row) for row in rows] == [(1, "basic"), (2, "gold"), (3, "basic")]


def test_a_partitioned_asset_rewrites_only_its_own_partition(warehouse: Warehouse) -> None:
    regions = dg.StaticPartitionsDefinition(["eu", "us"])
    amounts = {"eu": [1.0, 2.0], "us": [5.0]}

    @dg.asset(
        key=["staged", "demo", "sales"],
        partitions_def=regions,
        metadata=load_metadata(partition_column="region"),
    )
    def sales(context: dg.AssetExecutionContext) -> pa.Table:
        region = context.partition_key
        return pa.table({"region": [region] * len(amounts[region]), "amount": amounts[region]})

    for region in ("eu", "us"):
        assert _materialize([sales], warehouse, partition_key=region).success
    amounts["eu"] = [100.0]
    assert _materialize([sales], warehouse, partition_key="eu").success
    table = warehouse.table_ref("staged", "demo__sales")
    rows = warehouse.query(f"SELECT region, sum(amount) FROM {table} GROUP BY region ORDER BY region")
    assert [tuple(row) for row in rows] == [("eu", 100.0), ("us", 5.0)]


def test_a_partitioned_asset_without_a_partition_column_is_refused_with_the_fix(warehouse: Warehouse) -> None:
    @dg.asset(key=["staged", "demo", "daily"], partitions_def=dg.StaticPartitionsDefinition(["a"]))
    def daily() -> pa.Table:
        return pa.table({"x": [1]})

    with pytest.raises(WarehouseLoadError, match=re.escape('metadata {"partition_expr": "<column>"}')):
        _materialize([daily], warehouse, partition_key="a")


def test_an_output_it_cannot_store_names_the_type(warehouse: Warehouse) -> None:
    @dg.asset(key=["staged", "demo", "odd"])
    def odd() -> dict:
        return {"not": "a table"}

    with pytest.raises(WarehouseLoadError, match="returned a dict; the warehouse IO manager stores"):
        _materialize([odd], warehouse)
