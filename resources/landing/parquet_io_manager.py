"""Asset values as Parquet files on local disk or in GCS: staging data that stays typed, columnar and readable
by anything, instead of pickles that only this Python can open.

Dagster's `UPathIOManager` decides where each asset (and each partition of it) lives, under one base path:
`<base>/<asset key>.parquet`, or `<base>/<asset key>/<partition>.parquet`. Moving from a laptop directory to
`gs://bucket/prefix` is a change of `base_path`. This module only says how a value becomes a file and back.

Writes stream: a `RecordBatchReader` or an iterable of batches goes to disk batch by batch, so memory is
bounded by one batch, never by the data. Writes are atomic: locally the file is written under a temporary
sibling name, fsynced, then renamed over the final one; on GCS the object is uploaded without auto-commit
and only finalized once complete (a GCS object appears whole or not at all). Either way a failed write
leaves the previous materialization as it was. Loads follow the input's type annotation: `pa.Table` (the
default), `pa.RecordBatchReader` (streamed, not read whole) or `pandas.DataFrame`.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, get_args, get_origin

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field
from upath import UPath

PARQUET_EXTENSION = ".parquet"
WRITABLE_TYPES = (
    "pyarrow.Table, pyarrow.RecordBatchReader, an iterable of pyarrow.RecordBatch, pandas.DataFrame"
)
Batches = Iterable[pa.RecordBatch | pa.Table]


class MissingParquetError(FileNotFoundError):
    """An input's Parquet file does not exist. A FileNotFoundError, so that `UPathIOManager` still honours
    `allow_missing_partitions` for it."""


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Stores asset values as Parquet files under `base_path`, partitions as one file each."""

    base_path: str = Field(description="A local directory, or gs://bucket[/prefix].")
    storage_options: dict[str, Any] = Field(
        default={},
        description="Passed to fsspec for the base path, e.g. gcsfs `token`, `project` or `endpoint_url`.",
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetUPathIOManager:
        return ParquetUPathIOManager(base_path=UPath(self.base_path, **self.storage_options))


class ParquetUPathIOManager(dg.UPathIOManager):
    extension = PARQUET_EXTENSION

    def dump_to_path(self, context: dg.OutputContext, obj: object, path: UPath) -> None:
        schema, batches = _as_batches(obj)
        with _atomic_sink(path) as sink:
            rows = _write_parquet(sink, schema, batches)
            size = sink.tell()
        context.add_output_metadata(
            {
                "dagster/row_count": rows,
                "bytes": size,
                "dagster/column_schema": _table_schema(schema),
            }
        )

    def load_from_path(
        self, context: dg.InputContext, path: UPath
    ) -> pa.Table | pa.RecordBatchReader | pd.DataFrame:
        read = _reader_for(context.dagster_type.typing_type)
        try:
            parquet = pq.ParquetFile(path.path, filesystem=path.fs)
        except FileNotFoundError as exc:
            raise MissingParquetError(_missing_message(context, path)) from exc
        return read(parquet)

    def make_directory(self, path: UPath) -> None:
        """Only local disk has directories; on GCS a prefix exists as soon as an object is under it."""
        if _is_local(path):
            path.mkdir(parents=True, exist_ok=True)

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        """Also escapes `..` segments (the base class only escapes a leading `/`): on local disk a partition
        key like `../x` would otherwise land outside the asset's directory."""
        segments = ["%2E%2E" if segment == ".." else segment for segment in partition.split("/")]
        return super().make_safe_partition_path(base_path, "/".join(segments))


def _as_batches(obj: object) -> tuple[pa.Schema, Batches]:
    """The value's schema and its data as a stream of tables or batches, without reading a stream ahead."""
    if isinstance(obj, pa.Table):
        return obj.schema, [obj]
    if isinstance(obj, pa.RecordBatchReader):
        return obj.schema, obj
    if isinstance(obj, pd.DataFrame):
        table = pa.Table.from_pandas(obj, preserve_index=False)
        return table.schema, [table]
    if isinstance(obj, Iterable):
        return _peeked_batches(obj)
    raise TypeError(_unsupported_message(type(obj).__name__))


def _peeked_batches(obj: Iterable[Any]) -> tuple[pa.Schema, Batches]:
    """An iterable of record batches, its schema taken from the first batch."""
    batches = iter(obj)
    first = next(batches, None)
    if first is None:
        raise ValueError(
            f"ParquetIOManager got an empty {type(obj).__name__} of record batches, which carries no schema. "
            "Return an empty pyarrow.Table or a RecordBatchReader with the schema instead."
        )
    if not isinstance(first, pa.RecordBatch):
        raise TypeError(_unsupported_message(f"{type(obj).__name__} of {type(first).__name__}"))
    return first.schema, itertools.chain([first], batches)


def _unsupported_message(kind: str) -> str:
    return (
        f"ParquetIOManager cannot write values of type {kind}. Supported output types: {WRITABLE_TYPES}. "
        "Convert the value to one of these, or give the asset another IO manager."
    )


def _write_parquet(sink: BinaryIO, schema: pa.Schema, batches: Batches) -> int:
    """Writes the batches one at a time (each becomes at least one row group); returns the row count."""
    rows = 0
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in batches:
            writer.write(batch)
            rows += batch.num_rows
    return rows


@contextmanager
def _atomic_sink(path: UPath) -> Iterator[BinaryIO]:
    """A file that shows up at `path` only if the block completes; on failure, nothing at `path` changes."""
    if _is_local(path):
        with _renamed_local_file(Path(path.path)) as sink:
            yield sink
    else:
        with _uncommitted_object(path) as sink:
            yield sink


@contextmanager
def _renamed_local_file(final: Path) -> Iterator[BinaryIO]:
    """Written under a temporary sibling name, fsynced, then renamed over `final` (atomic on one disk)."""
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def _uncommitted_object(path: UPath) -> Iterator[BinaryIO]:
    """Uploaded without auto-commit: the object is finalized by `commit` once complete, and a failed upload
    is discarded. Not even closing the file (as the garbage collector would) can finalize a partial one."""
    sink = path.fs.open(path.path, "wb", autocommit=False)
    try:
        yield sink
        sink.close()
        sink.commit()
    except BaseException:
        sink.discard()
        sink.closed = True  # keeps the garbage collector's close() from starting an upload to discard
        raise


def _is_local(path: UPath) -> bool:
    return isinstance(path.fs, LocalFileSystem)


def _table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                field.name, str(field.type), constraints=dg.TableColumnConstraints(nullable=field.nullable)
            )
            for field in schema
        ]
    )


def _reader_for(
    annotation: Any,
) -> Callable[[pq.ParquetFile], pa.Table | pa.RecordBatchReader | pd.DataFrame]:
    """How to read the file for an input annotated `annotation`; for a dict of partitions, by its values."""
    if get_origin(annotation) in (dict, Mapping):
        annotation = (get_args(annotation) or (Any, Any))[1]
    readers = {
        Any: _read_table,
        object: _read_table,
        pa.Table: _read_table,
        pa.RecordBatchReader: _stream_batches,
        pd.DataFrame: _read_dataframe,
    }
    if annotation not in readers:
        named = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        raise TypeError(
            f"ParquetIOManager cannot load an input annotated {named}. Annotate it as pyarrow.Table "
            "(the default), pyarrow.RecordBatchReader or pandas.DataFrame, or a dict of one of these when "
            "loading several partitions."
        )
    return readers[annotation]


def _read_table(parquet: pq.ParquetFile) -> pa.Table:
    with parquet:
        return parquet.read()


def _read_dataframe(parquet: pq.ParquetFile) -> pd.DataFrame:
    return _read_table(parquet).to_pandas()


def _stream_batches(parquet: pq.ParquetFile) -> pa.RecordBatchReader:
    """Batches read from the file as the consumer pulls them; the file closes once they are exhausted."""
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, _closing_batches(parquet))


def _closing_batches(parquet: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
    with parquet:
        yield from parquet.iter_batches()


def _missing_message(context: dg.InputContext, path: UPath) -> str:
    what = f"asset {context.asset_key.to_user_string()}" if context.has_asset_key else "the upstream output"
    return (
        f"No Parquet file for {what} at {path}. It has not been materialized there (or under this base "
        f"path): materialize {what} first, then run this step again."
    )
