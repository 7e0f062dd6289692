"""Arrow batches as PostgreSQL's binary COPY format, encoded column by column in Arrow and numpy.

Why binary: the server parses it ~3x faster than CSV (1M staged rows, 17 columns, the same table: 1.2-1.4 s
against 3.5-4.1 s for the CSV), because integers, floats and timestamps arrive as the bytes it stores
instead of text to parse; the staged tables' lineage columns (three timestamps, a row number) made the
CSV's parsing the bulk of a load. The encoding never loops over rows in Python: each column becomes a
binary array of its fields (a 4-byte big-endian length, -1 for NULL, then the value's bytes), and
`binary_join_element_wise` concatenates each row's fields in Arrow's C++ kernels, so the joined array's
data buffer is the batch's tuples back to back.

Only the types whose binary form is a plain fixed-width number or the value's bytes are encoded here
(`binary_copy_types`); a schema with any other column (numeric, time, nanosecond timestamps, unsigned
64-bit integers) goes as CSV (`postgres_load`). Binary COPY needs each field to be exactly the target
column's type (no widening on input): the caller uses it only when every target column has the
batches' own type.

Format (PostgreSQL docs, "COPY ... Binary Format"): the signature `PGCOPY\\n\\377\\r\\n\\0`, a flags int32
and a header-extension length int32, then per tuple an int16 field count and the fields, then an int16 -1.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
NULL_FIELD = pa.scalar(struct.pack("!i", -1), pa.binary())
NO_SEPARATOR = pa.scalar(b"", pa.large_binary())
POSTGRES_EPOCH_DAYS = 10_957
"""Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's)."""
POSTGRES_EPOCH_MICROS = POSTGRES_EPOCH_DAYS * 86_400 * 1_000_000

_FIXED: list[tuple[object, str, pa.DataType]] = [
    (pa.types.is_boolean, ">u1", pa.uint8()),
    (pa.types.is_int8, ">i2", pa.int16()),
    (pa.types.is_int16, ">i2", pa.int16()),
    (pa.types.is_uint8, ">i2", pa.int16()),
    (pa.types.is_int32, ">i4", pa.int32()),
    (pa.types.is_uint16, ">i4", pa.int32()),
    (pa.types.is_int64, ">i8", pa.int64()),
    (pa.types.is_uint32, ">i8", pa.int64()),
    (pa.types.is_float16, ">f4", pa.float32()),
    (pa.types.is_float32, ">f4", pa.float32()),
    (pa.types.is_float64, ">f8", pa.float64()),
]
"""(Arrow type test, big-endian numpy dtype of the PostgreSQL type `postgres_type` gives it, Arrow type
the values are cast to first)."""


def binary_copy_types(schema: pa.Schema) -> bool:
    """Whether every column of `schema` has a binary encoding here."""
    return all(_encodable(field.type) for field in schema)


def _encodable(arrow_type: pa.DataType) -> bool:
    types = pa.types
    return (
        any(matches(arrow_type) for matches, _, _ in _FIXED)  # type: ignore[operator]
        or types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
        or types.is_binary(arrow_type)
        or types.is_large_binary(arrow_type)
        or types.is_date32(arrow_type)
        or (types.is_timestamp(arrow_type) and arrow_type.unit in ("s", "ms", "us"))
    )


def encode_batch(batch: pa.RecordBatch) -> memoryview:
    """The batch's tuples in binary COPY format (no header or trailer)."""
    if batch.num_rows == 0:
        return memoryview(b"")
    count = _fixed_width(np.full(batch.num_rows, batch.num_columns, dtype=">i2").view("S2"), 2)
    # large_binary throughout: one batch's tuples may pass 2 GiB (int32 offsets) with wide text.
    fields = [_field_array(column).cast(pa.large_binary()) for column in batch.columns]
    rows = pc.binary_join_element_wise(count.cast(pa.large_binary()), *fields, NO_SEPARATOR)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64, count=len(rows) + 1, offset=rows.offset * 8)
    return memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _field_array(array: pa.Array) -> pa.Array:
    """Each value as its binary COPY field (length + bytes), NULL as the length -1 alone."""
    arrow_type = array.type
    types = pa.types
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        array = array.cast(pa.large_binary())  # the UTF-8 bytes, as text's binary form is
        arrow_type = array.type
    if types.is_binary(arrow_type) or types.is_large_binary(arrow_type):
        array = array.cast(pa.large_binary())
        lengths = pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False).astype(">i4")
        prefix = _fixed_width(lengths.view("S4"), 4).cast(pa.large_binary())
        joined = pc.binary_join_element_wise(prefix, array, NO_SEPARATOR)
        return pc.fill_null(joined, NULL_FIELD.cast(pa.large_binary()))
    if types.is_date32(arrow_type):
        values = pc.subtract(array.cast(pa.int32()), POSTGRES_EPOCH_DAYS)
        return _fixed_field(values, ">i4")
    if types.is_timestamp(arrow_type):
        micros = array.cast(pa.timestamp("us", tz=arrow_type.tz)).cast(pa.int64())
        return _fixed_field(pc.subtract(micros, POSTGRES_EPOCH_MICROS), ">i8")
    for matches, dtype, cast_to in _FIXED:
        if matches(arrow_type):  # type: ignore[operator]
            return _fixed_field(array.cast(cast_to), dtype)
    raise TypeError(f"no binary COPY encoding for Arrow type {arrow_type}")


def _fixed_field(array: pa.Array, dtype: str) -> pa.Array:
    """A fixed-width column's fields: the width as int32, then the big-endian value."""
    width = np.dtype(dtype).itemsize
    zero = False if pa.types.is_boolean(array.type) else 0
    values = pc.fill_null(array, zero).to_numpy(zero_copy_only=False).astype(dtype)
    record = np.empty((len(array), 4 + width), dtype=np.uint8)
    record[:, :4] = np.frombuffer(struct.pack("!i", width), dtype=np.uint8)
    record[:, 4:] = values.view(np.uint8).reshape(len(array), width)
    fields = _fixed_width(record.reshape(-1).view(f"S{4 + width}"), 4 + width)
    if array.null_count:
        fields = pc.if_else(array.is_valid(), fields, NULL_FIELD)
    return fields


def _fixed_width(values: np.ndarray, width: int) -> pa.Array:
    """A numpy array of `width`-byte records as an Arrow binary array (one value per record)."""
    buffer = pa.py_buffer(np.ascontiguousarray(values).view(np.uint8))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buffer])
    return fixed.cast(pa.binary())
