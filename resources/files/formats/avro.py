"""Avro container files as Arrow batches that keep Avro's own types.

The Arrow schema comes from the file's writer schema, so every batch (and an empty file) has it:

| Avro | Arrow |
|---|---|
| null, boolean, int, long, float, double | null, bool, int32, int64, float32, float64 |
| bytes, string, fixed(n), enum | binary, string, fixed_size_binary(n), string |
| array, map, record | list, map<string, _>, struct |
| union of null and one type | that type, nullable |
| any other union | string: the value as JSON text |
| decimal(p, s) | decimal128(p, s), decimal256 beyond 38 digits |
| uuid | string |
| date, time-millis, time-micros | date32, time32[ms], time64[us] |
| timestamp-millis, timestamp-micros | timestamp[ms/us, UTC] |
| local-timestamp-millis, local-timestamp-micros | timestamp[ms/us] |

Other logical types fall back to their underlying type; a recursive type is refused (Parquet cannot hold
it). Records are decoded by fastavro, `batch_rows` at a time; `_record` is the 1-based record index.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, BinaryIO

import fastavro
import numpy as np
import pyarrow as pa
from fastavro.schema import expand_schema

from resources.files.read_context import ReadContext

Adapter = Callable[[Any], Any]
"""Turns a value as fastavro decodes it into one Arrow takes for the mapped type (None: nothing to do)."""

_PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_TEMPORAL = {
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
}
_DAMAGED_AVRO_ERRORS = (ValueError, EOFError, OSError)


class UnsupportedAvroSchema(ValueError):
    """The writer schema has no Arrow (or Parquet) counterpart."""


def read_avro(stream: BinaryIO, batch_rows: int, context: ReadContext) -> Iterator[pa.RecordBatch]:
    """Batches of `batch_rows` records of one Avro file, lineage attached."""
    try:
        reader = fastavro.reader(stream)
    except _DAMAGED_AVRO_ERRORS as exc:
        context.fail(f"is not an Avro container file ({exc}).")
    try:
        schema, adapt = _record_mapping(expand_schema(reader.writer_schema))
    except UnsupportedAvroSchema as exc:
        context.fail(f"has an Avro schema the platform cannot land: {exc}.")
    records_read = 0
    while True:
        try:
            records = list(islice(reader, batch_rows))
        except _DAMAGED_AVRO_ERRORS as exc:
            context.fail(f"is damaged after record {records_read} ({exc}); deliver it again.")
        if not records:
            return
        if adapt is not None:
            records = [adapt(record) for record in records]
        batch = pa.RecordBatch.from_pylist(records, schema=schema)
        yield context.with_lineage(batch, np.arange(records_read + 1, records_read + 1 + len(records)))
        records_read += len(records)


def _record_mapping(schema: Any) -> tuple[pa.Schema, Adapter | None]:
    """The Arrow schema of the top-level records, and the adapter the records need, if any."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise UnsupportedAvroSchema(f"its records are {json.dumps(schema)[:200]}, not Avro records")
    struct, adapter = _struct(schema, ())
    return pa.schema([struct.field(at) for at in range(struct.num_fields)]), adapter


def _arrow_type(schema: Any, enclosing: tuple[str, ...]) -> tuple[pa.DataType, Adapter | None]:
    """Arrow type of an (expanded) Avro schema, and the adapter its values need, if any."""
    if isinstance(schema, list):
        return _union(schema, enclosing)
    if isinstance(schema, str):
        if schema not in _PRIMITIVES:
            raise UnsupportedAvroSchema(f"unknown type {schema!r}")
        return _PRIMITIVES[schema], None
    logical = schema.get("logicalType")
    kind = schema["type"]
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = schema["precision"], schema.get("scale", 0)
        return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale), None
    if logical == "uuid":
        return pa.string(), _none_safe(str)
    if logical in _TEMPORAL:
        return _TEMPORAL[logical], None
    if kind == "record":
        return _struct(schema, enclosing)
    if kind == "enum":
        return pa.string(), None
    if kind == "fixed":
        return pa.binary(schema["size"]), None
    if kind == "array":
        item_type, adapt = _arrow_type(schema["items"], enclosing)
        return pa.list_(item_type), _none_safe(
            lambda items: [adapt(item) for item in items]
        ) if adapt else None
    if kind == "map":
        value_type, adapt = _arrow_type(schema["values"], enclosing)
        adapter = (
            _none_safe(lambda entries: {key: adapt(value) for key, value in entries.items()})
            if adapt
            else None
        )
        return pa.map_(pa.string(), value_type), adapter
    return _arrow_type(kind, enclosing)


def _struct(schema: dict[str, Any], enclosing: tuple[str, ...]) -> tuple[pa.DataType, Adapter | None]:
    if schema["name"] in enclosing:
        raise UnsupportedAvroSchema(f"record {schema['name']} contains itself (a recursive type)")
    fields, adapters = [], {}
    for avro_field in schema["fields"]:
        arrow_type, adapter = _arrow_type(avro_field["type"], (*enclosing, schema["name"]))
        fields.append(pa.field(avro_field["name"], arrow_type))
        if adapter is not None:
            adapters[avro_field["name"]] = adapter
    if not adapters:
        return pa.struct(fields), None

    def adapt(record: dict[str, Any]) -> dict[str, Any]:
        return {name: adapters[name](value) if name in adapters else value for name, value in record.items()}

    return pa.struct(fields), _none_safe(adapt)


def _union(members: list[Any], enclosing: tuple[str, ...]) -> tuple[pa.DataType, Adapter | None]:
    values = [member for member in members if member != "null"]
    if len(values) == 1:
        return _arrow_type(values[0], enclosing)
    if not values:
        return pa.null(), None
    return pa.string(), _none_safe(_json_text)


def _json_text(value: Any) -> str:
    """A value of a many-typed union as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _none_safe(adapt: Adapter) -> Adapter:
    return lambda value: None if value is None else adapt(value)
