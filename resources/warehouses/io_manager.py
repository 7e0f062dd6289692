"""One IO manager for every warehouse: asset code returns Arrow (or pandas) and never learns where it lands.

The environment switch puts DuckDB, PostgreSQL or BigQuery behind `warehouse`; this IO manager turns an
asset's output into one atomic bulk load there and records what it did (rows, bytes, seconds, the table's
schema) as materialization metadata. Downstream Python assets read a table back as a `pyarrow.Table`, a
streamed `pyarrow.RecordBatchReader` (memory bounded by the batch) or a pandas `DataFrame`, chosen by the
input's type annotation.

How an asset is loaded is declared in its definition metadata (`load_metadata(...)` builds it): the mode
(`replace` by default, `append`, `upsert` on the primary key), the partition column (`partition_expr`,
Dagster's name for it) of partitioned assets (each run rewrites its own partitions), and the physical
layout (partitioning and clustering) for warehouses that have one. The table is `dagster/table_name`
(`schema.table`) when given, else the asset key: `["staged", "shop", "orders"]` is `staged.shop__orders`.
An asset whose load depends on the run returns a `TableUpdate`: its mode for this run, and what to record
about the table once loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from resources.warehouses.base import Warehouse
from resources.warehouses.load import LoadMode, LoadResult, PartitionSlice, TableLayout, WarehouseLoadError

LOAD_MODE_KEY = "warehouse/load_mode"
PRIMARY_KEY_KEY = "warehouse/primary_key"
LAYOUT_KEY = "warehouse/layout"
PARTITION_COLUMN_KEY = "partition_expr"
TABLE_NAME_KEY = "dagster/table_name"
READ_BATCH_ROWS = 100_000

Output = pa.Table | pa.RecordBatchReader | pd.DataFrame | Iterable[pa.RecordBatch]


@dataclass(frozen=True)
class TableUpdate:
    """An asset output that decides its own load and describes the table once it is loaded.

    `mode`, when given, replaces the definition's load mode for this run: an incremental run upserts where a
    full run replaces. `describe` runs against the warehouse after the load committed, for metadata that
    must be about the whole table rather than about this run's rows (a profile after an upsert)."""

    rows: Output
    mode: LoadMode | None = None
    describe: Callable[[Warehouse, str, str], Mapping[str, dg.MetadataValue]] | None = None


def load_metadata(
    *,
    mode: LoadMode = "replace",
    primary_key: list[str] | None = None,
    partition_column: str | None = None,
    layout: TableLayout | None = None,
) -> dict[str, Any]:
    """Definition metadata telling the warehouse IO manager how to load an asset's output."""
    metadata: dict[str, Any] = {LOAD_MODE_KEY: mode}
    if primary_key:
        metadata[PRIMARY_KEY_KEY] = list(primary_key)
    if partition_column:
        metadata[PARTITION_COLUMN_KEY] = partition_column
    if layout is not None:
        metadata[LAYOUT_KEY] = json.dumps(asdict(layout))
    return metadata


def warehouse_table(asset_key: dg.AssetKey, metadata: Mapping[str, Any]) -> tuple[str, str]:
    """(schema, table) of an asset: its `dagster/table_name` (last two parts), else its key."""
    declared = metadata.get(TABLE_NAME_KEY)
    if declared:
        parts = str(getattr(declared, "value", declared)).split(".")
        if len(parts) >= 2:
            return parts[-2], parts[-1]
    path = asset_key.path
    if len(path) < 2:
        raise WarehouseLoadError(
            f"asset {asset_key.to_user_string()} names no warehouse schema: give it a key with a prefix "
            f'(["staged", "orders"]) or metadata {{"{TABLE_NAME_KEY}": "schema.table"}}'
        )
    return path[0], "__".join(path[1:])


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs as warehouse tables with bulk loads, and reads them back for Python assets."""

    warehouse: Warehouse
    read_batch_rows: int = READ_BATCH_ROWS

    def handle_output(self, context: dg.OutputContext, obj: Output | None) -> None:
        if obj is None:
            return
        update = obj if isinstance(obj, TableUpdate) else TableUpdate(obj)
        metadata = context.definition_metadata or {}
        schema, table = warehouse_table(context.asset_key, metadata)
        partition = self._partition(context, metadata)
        mode: LoadMode = (
            "replace_partitions" if partition else update.mode or metadata.get(LOAD_MODE_KEY, "replace")
        )
        layout = metadata.get(LAYOUT_KEY)
        context.log.info(f"Loading {context.asset_key.to_user_string()} into {schema}.{table} ({mode})")
        result = self.warehouse.load(
            schema,
            table,
            _batches(update.rows, context.asset_key),
            mode=mode,
            primary_key=metadata.get(PRIMARY_KEY_KEY),
            partition=partition,
            layout=TableLayout(**json.loads(layout)) if layout else None,
        )
        sent = "built in the warehouse's file" if result.bytes is None else f"{result.bytes / 1e6:.1f} MB"
        context.log.info(
            f"Loaded {result.rows} rows ({sent}) into {schema}.{table} in {result.seconds:.2f} s"
        )
        recorded = _result_metadata(self.warehouse, schema, table, mode, result)
        if update.describe is not None:
            recorded.update(update.describe(self.warehouse, schema, table))
        context.add_output_metadata(recorded)

    def load_input(self, context: dg.InputContext) -> pa.Table | pa.RecordBatchReader | pd.DataFrame:
        upstream = context.upstream_output
        assert upstream is not None and upstream.asset_key is not None
        schema, table = warehouse_table(upstream.asset_key, upstream.definition_metadata or {})
        if not self.warehouse.columns(schema, table):
            raise dg.DagsterInvariantViolationError(
                f"{schema}.{table} (asset {upstream.asset_key.to_user_string()}) does not exist in the "
                f"{self.warehouse.kind} warehouse; materialize that asset first."
            )
        partition = None
        if context.has_asset_partitions:
            column = (upstream.definition_metadata or {}).get(PARTITION_COLUMN_KEY)
            if column:
                partition = PartitionSlice(column, tuple(context.asset_partition_keys))
        reader = self.warehouse.stream_table(
            schema, table, partition=partition, batch_rows=self.read_batch_rows
        )
        wanted = context.dagster_type.typing_type
        if wanted is pa.RecordBatchReader:
            return reader
        if wanted is pd.DataFrame:
            return reader.read_pandas()
        return reader.read_all()

    @staticmethod
    def _partition(context: dg.OutputContext, metadata: Mapping[str, Any]) -> PartitionSlice | None:
        if not context.has_asset_partitions:
            return None
        column = metadata.get(PARTITION_COLUMN_KEY)
        if not column:
            raise WarehouseLoadError(
                f"{context.asset_key.to_user_string()} is partitioned but names no partition column: add "
                f'metadata {{"{PARTITION_COLUMN_KEY}": "<column>"}} so that each run rewrites only its '
                f"own partitions"
            )
        return PartitionSlice(str(column), tuple(context.asset_partition_keys))


def _batches(obj: object, asset_key: dg.AssetKey) -> Iterable[pa.RecordBatch]:
    if isinstance(obj, pa.Table):
        return obj.to_batches() or [pa.RecordBatch.from_pylist([], schema=obj.schema)]
    if isinstance(obj, pd.DataFrame):
        return _batches(pa.Table.from_pandas(obj, preserve_index=False), asset_key)
    if isinstance(obj, pa.RecordBatchReader | Iterable) and not isinstance(obj, str | bytes | Mapping):
        return obj
    raise WarehouseLoadError(
        f"{asset_key.to_user_string()} returned a {type(obj).__name__}; the warehouse IO manager stores a "
        f"pyarrow Table, RecordBatchReader or iterable of RecordBatches, or a pandas DataFrame"
    )


def _result_metadata(
    warehouse: Warehouse, schema: str, table: str, mode: LoadMode, result: LoadResult
) -> dict[str, dg.MetadataValue]:
    whole_table = {"dagster/row_count": dg.MetadataValue.int(result.rows)} if mode == "replace" else {}
    return {
        **whole_table,
        "rows_written": dg.MetadataValue.int(result.rows),
        **({} if result.bytes is None else {"bytes_written": dg.MetadataValue.int(result.bytes)}),
        "load_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "load_mode": dg.MetadataValue.text(mode),
        "warehouse": dg.MetadataValue.text(warehouse.kind),
        TABLE_NAME_KEY: dg.MetadataValue.text(f"{schema}.{table}"),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(name, sql_type) for name, sql_type in result.columns])
        ),
    }
