"""The Parquet IO manager, through real Dagster materializations on a local directory and on the GCS emulator:
values round-trip by the downstream annotation, streams are written batch by batch and read back streamed,
partitions are one file each and load downstream as a dict, a failed write changes nothing at the final
path, and the errors name what went wrong."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from resources.landing.parquet_io_manager import ParquetIOManager

GCS_MIN_BLOCK_SIZE = 2**18
"""gcsfs's smallest upload chunk: set on the emulator so that uploads span chunks, as large ones do."""
READER_BATCH_ROWS = 65_536
"""Rows per batch that `ParquetFile.iter_batches` yields at most."""
EVENTS_SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64())])


@dataclass(frozen=True)
class Storage:
    base_path: str
    storage_options: dict[str, Any]

    def io_manager(self) -> dict[str, ParquetIOManager]:
        return {
            "io_manager": ParquetIOManager(base_path=self.base_path, storage_options=self.storage_options)
        }

    def path(self, *parts: str) -> UPath:
        return UPath(self.base_path, **self.storage_options).joinpath(*parts)

    def files(self) -> list[str]:
        """Every file under the base path, relative to it."""
        base = self.path()
        base.fs.invalidate_cache()
        if not base.fs.exists(base.path):
            return []
        return sorted(name.removeprefix(base.path).lstrip("/") for name in base.fs.find(base.path))

    def parquet(self, *parts: str) -> pq.ParquetFile:
        path = self.path(*parts)
        return pq.ParquetFile(path.path, filesystem=path.fs)


@pytest.fixture(params=["local", "gcs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "staging"), {})
    emulator: str = request.getfixturevalue("gcs_emulator")
    bucket: str = request.getfixturevalue("gcs_bucket")
    return Storage(
        f"gs://{bucket}/staging",
        {"token": "anon", "endpoint_url": emulator, "block_size": GCS_MIN_BLOCK_SIZE},
    )


def _event_batches(count: int, rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of random (incompressible) values: the file takes about `count * rows * 16` bytes."""
    random = np.random.default_rng(7)
    for index in range(count):
        ids = np.arange(index * rows, (index + 1) * rows)
        yield pa.record_batch([pa.array(ids), pa.array(random.random(rows))], schema=EVENTS_SCHEMA)


def _step_error(result: dg.ExecuteInProcessResult) -> str:
    """The failed step's error and its causes (the IO manager's exception is Dagster's error's cause)."""
    messages: list[str] = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return "\n".join(messages)


def test_arrow_table_round_trips_and_an_unannotated_input_loads_a_table(storage: Storage) -> None:
    table = pa.table({"id": [1, 2, 3], "name": ["a", None, "c"], "day": pa.array([0, 1, 2], pa.date32())})
    received: dict[str, object] = {}

    @dg.asset(key_prefix=["staging"])
    def orders() -> pa.Table:
        return table

    @dg.asset(ins={"orders": dg.AssetIn(key=["staging", "orders"])})
    def typed(orders: pa.Table) -> None:
        received["typed"] = orders

    @dg.asset(ins={"orders": dg.AssetIn(key=["staging", "orders"])})
    def untyped(orders) -> None:  # no annotation on the input: what this pins
        received["untyped"] = orders

    result = dg.materialize([orders, typed, untyped], resources=storage.io_manager())

    assert result.success, _step_error(result)
    assert storage.files() == ["staging/orders.parquet"]
    assert storage.parquet("staging", "orders.parquet").read().equals(table)
    assert received["typed"].equals(table)
    assert received["untyped"].equals(table)


def test_record_batch_reader_is_written_batch_by_batch_and_read_back_streamed(storage: Storage) -> None:
    count, rows = 50, 2_000
    expected = pa.Table.from_batches(list(_event_batches(count, rows)))
    received: list[pa.RecordBatch] = []

    @dg.asset
    def events() -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(EVENTS_SCHEMA, _event_batches(count, rows))

    @dg.asset
    def consumer(events: pa.RecordBatchReader) -> None:
        assert isinstance(events, pa.RecordBatchReader)
        received.extend(events)

    result = dg.materialize([events, consumer], resources=storage.io_manager())

    assert result.success, _step_error(result)
    assert storage.parquet("events.parquet").metadata.num_row_groups == count  # one per batch written
    assert len(received) == -(-count * rows // READER_BATCH_ROWS)  # pulled batch by batch, not whole
    assert all(batch.num_rows <= READER_BATCH_ROWS for batch in received)
    assert pa.Table.from_batches(received).equals(expected)


def test_an_iterable_of_record_batches_is_written_as_one_file(storage: Storage) -> None:
    @dg.asset
    def events() -> list[pa.RecordBatch]:
        return list(_event_batches(3, 10))

    result = dg.materialize([events], resources=storage.io_manager())

    assert result.success, _step_error(result)
    assert storage.parquet("events.parquet").read().equals(pa.Table.from_batches(_event_batches(3, 10)))


def test_pandas_round_trip_keeps_column_names_and_dtypes_and_drops_the_index(storage: Storage) -> None:
    frame = pd.DataFrame(
        {
            "order id": pd.array([1, 2, 3], dtype="int64"),
            "amount": [12.5, None, 3.0],
            "customer": ["ann", "bob", None],
            "placed_at": pd.to_datetime(
                ["2026-01-01 10:00", "2026-01-02 11:30", "2026-01-03 00:00"], utc=True
            ),
            "paid": [True, False, True],
            "status": pd.Categorical(["new", "paid", "new"]),
            "quantity": pd.array([1, None, 3], dtype="Int32"),
        },
        index=[10, 11, 12],
    )
    received: list[pd.DataFrame] = []

    @dg.asset
    def orders() -> pd.DataFrame:
        return frame

    @dg.asset
    def consumer(orders: pd.DataFrame) -> None:
        received.append(orders)

    result = dg.materialize([orders, consumer], resources=storage.io_manager())

    assert result.success, _step_error(result)
    pd.testing.assert_frame_equal(received[0], frame.reset_index(drop=True))


@pytest.mark.parametrize(
    ("partitions_def", "keys"),
    [
        (
            dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03"),
            ["2024-01-01", "2024-01-02"],
        ),
        (dg.StaticPartitionsDefinition(["eu", "us"]), ["eu", "us"]),
    ],
    ids=["daily", "static"],
)
def test_partitions_are_one_file_each_and_load_downstream_as_a_dict(
    storage: Storage, partitions_def: dg.PartitionsDefinition, keys: list[str]
) -> None:
    received: dict[str, pa.Table] = {}

    @dg.asset(partitions_def=partitions_def)
    def sales(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"partition": [context.partition_key] * 2, "amount": [1, 2]})

    @dg.asset
    def all_sales(sales: dict[str, pa.Table]) -> None:
        received.update(sales)

    for key in keys:
        result = dg.materialize([sales], partition_key=key, resources=storage.io_manager())
        assert result.success, _step_error(result)
    result = dg.materialize([sales, all_sales], selection=[all_sales], resources=storage.io_manager())

    assert result.success, _step_error(result)
    assert storage.files() == [f"sales/{key}.parquet" for key in keys]
    assert sorted(received) == keys
    for key in keys:
        assert received[key].equals(pa.table({"partition": [key] * 2, "amount": [1, 2]}))


def test_materialization_metadata_has_rows_bytes_path_and_column_schema(storage: Storage) -> None:
    @dg.asset
    def orders() -> pa.Table:
        return pa.table(
            {
                "id": pa.array([1, 2, 3], pa.int64()),
                "name": pa.array(["a", "b", "c"], pa.string()),
                "amount": pa.array([1.5, None, 2.5], pa.float64()),
            },
            schema=pa.schema(
                [pa.field("id", pa.int64(), nullable=False), ("name", pa.string()), ("amount", pa.float64())]
            ),
        )

    result = dg.materialize([orders], resources=storage.io_manager())

    assert result.success, _step_error(result)
    (event,) = result.get_asset_materialization_events()
    metadata = {name: value.value for name, value in event.materialization.metadata.items()}
    path = storage.path("orders.parquet")
    assert metadata["dagster/row_count"] == 3
    assert metadata["bytes"] == path.fs.size(path.path)
    assert metadata["path"] == str(path)
    assert [(c.name, c.type, c.constraints.nullable) for c in metadata["dagster/column_schema"].columns] == [
        ("id", "int64", False),
        ("name", "string", True),
        ("amount", "double", True),
    ]


@pytest.mark.parametrize(
    "batches_before_failure", [0, 5], ids=["before-any-upload", "after-uploading-chunks"]
)
def test_a_failed_write_leaves_no_partial_file_and_the_previous_one_intact(
    storage: Storage, batches_before_failure: int
) -> None:
    previous = pa.table({"id": [1, 2], "value": [0.5, 1.5]}, schema=EVENTS_SCHEMA)

    @dg.asset(name="events")
    def first_events() -> pa.Table:
        return previous

    def dies_mid_stream() -> Iterator[pa.RecordBatch]:
        yield from _event_batches(batches_before_failure, 20_000)  # 5 batches: ~1.6 MB, several GCS chunks
        raise ConnectionError("source went away mid-stream")

    @dg.asset(name="events")
    def failing_events() -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(EVENTS_SCHEMA, dies_mid_stream())

    assert dg.materialize([first_events], resources=storage.io_manager()).success
    result = dg.materialize([failing_events], resources=storage.io_manager(), raise_on_error=False)

    assert not result.success
    assert "source went away mid-stream" in _step_error(result)
    assert storage.files() == ["events.parquet"]
    assert storage.parquet("events.parquet").read().equals(previous)


@pytest.mark.parametrize(("value", "named"), [(42, "int"), (["a", "b"], "list of str")], ids=["int", "list"])
def test_an_unsupported_output_type_is_named_with_the_supported_ones(
    storage: Storage, value: object, named: str
) -> None:
    @dg.asset
    def orders() -> object:
        return value

    result = dg.materialize([orders], resources=storage.io_manager(), raise_on_error=False)

    assert not result.success
    error = _step_error(result)
    assert f"ParquetIOManager cannot write values of type {named}." in error
    assert (
        "pyarrow.Table, pyarrow.RecordBatchReader, an iterable of pyarrow.RecordBatch, pandas.DataFrame"
        in error
    )
    assert storage.files() == []


def test_loading_an_unmaterialized_asset_names_the_asset_and_the_path(storage: Storage) -> None:
    @dg.asset(key_prefix=["staging"])
    def orders() -> pa.Table:
        return pa.table({"id": [1]})

    @dg.asset(ins={"orders": dg.AssetIn(key=["staging", "orders"])})
    def summary(orders: pa.Table) -> None:
        pass

    result = dg.materialize(
        [orders, summary], selection=[summary], resources=storage.io_manager(), raise_on_error=False
    )

    assert not result.success
    error = _step_error(result)
    assert f"No Parquet file for asset staging/orders at {storage.path('staging', 'orders.parquet')}" in error
    assert "materialize asset staging/orders first" in error


def test_an_unsupported_input_annotation_names_the_supported_ones(storage: Storage) -> None:
    @dg.asset
    def orders() -> pa.Table:
        return pa.table({"id": [1]})

    @dg.asset
    def summary(orders: int) -> None:
        pass

    result = dg.materialize([orders, summary], resources=storage.io_manager(), raise_on_error=False)

    assert not result.success
    error = _step_error(result)
    assert "ParquetIOManager cannot load an input annotated int." in error
    assert "pyarrow.Table (the default), pyarrow.RecordBatchReader or pandas.DataFrame" in error


def test_a_partition_key_with_dotdot_segments_stays_under_the_asset_path(storage: Storage) -> None:
    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["../../outside"]))
    def sales() -> pa.Table:
        return pa.table({"id": [1]})

    result = dg.materialize([sales], partition_key="../../outside", resources=storage.io_manager())

    assert result.success, _step_error(result)
    assert storage.files() == ["sales/%2E%2E/%2E%2E/outside.parquet"]
