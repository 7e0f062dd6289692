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
        or _is_text_or_bytes(arrow_type)
        or types.is_date32(arrow_type)
        or (types.is_timestamp(arrow_type) and arrow_type.unit in ("s", "ms", "us"))
    )


def encode_batch(batch: pa.RecordBatch) -> memoryview:
    """The batch's tuples in binary COPY format (no header or trailer).

    Each row is the concatenation of pieces, joined by one `binary_join_element_wise` that skips null
    pieces: runs of fixed-width bytes built in numpy (the field count, every length word, the values of
    fixed-width columns without nulls), alternating with the values of text/bytea columns and of
    fixed-width columns with nulls (a null value is skipped, its length word says -1). Fewer, wider
    pieces than one per field: joining 18 per-field arrays was 0.7 s of 1.2 s per 1M staged rows."""
    rows = batch.num_rows
    if rows == 0:
        return memoryview(b"")
    pieces: list[pa.Array] = []
    block: list[np.ndarray] = [np.full(rows, batch.num_columns, dtype=">i2").view(np.uint8).reshape(rows, 2)]
    for column in batch.columns:
        length, value = _field(column)
        block.append(length.view(np.uint8).reshape(rows, 4))
        if isinstance(value, np.ndarray):
            block.append(value.view(np.uint8).reshape(rows, -1))
            continue
        pieces.append(_fixed_width(np.hstack(block)))
        pieces.append(value)
        block = []
    if block:
        pieces.append(_fixed_width(np.hstack(block)))
    options = pc.JoinOptions(null_handling="skip")
    joined = pc.binary_join_element_wise(*pieces, NO_SEPARATOR, options=options)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=rows + 1, offset=joined.offset * 8)
    return memoryview(joined.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _field(array: pa.Array) -> tuple[np.ndarray, np.ndarray | pa.Array]:
    """(big-endian int32 length word of every row, -1 for NULL; the values): a numpy array of fixed-width
    big-endian values when the column has no nulls, else a large_binary array, null where NULL."""
    arrow_type = array.type
    types = pa.types
    validity = None if array.null_count == 0 else array.is_valid()
    if _is_text_or_bytes(arrow_type):
        values = array.cast(pa.large_binary())  # text's binary form is its UTF-8 bytes
        lengths = pc.fill_null(pc.binary_length(values), -1).to_numpy(zero_copy_only=False)
        return lengths.astype(">i4"), values
    if types.is_date32(arrow_type):
        numbers, dtype = pc.subtract(array.cast(pa.int32()), POSTGRES_EPOCH_DAYS), ">i4"
    elif types.is_timestamp(arrow_type):
        micros = array.cast(pa.timestamp("us", tz=arrow_type.tz)).cast(pa.int64())
        numbers, dtype = pc.subtract(micros, POSTGRES_EPOCH_MICROS), ">i8"
    else:
        dtype, cast_to = _fixed_type(arrow_type)
        numbers = array.cast(cast_to)
    width = np.dtype(dtype).itemsize
    values = pc.fill_null(numbers, 0).to_numpy(zero_copy_only=False).astype(dtype)
    lengths = np.full(len(array), width, dtype=">i4")
    if validity is None:
        return lengths, values
    lengths[~validity.to_numpy(zero_copy_only=False)] = -1
    nullable = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(array), [validity.buffers()[1], pa.py_buffer(values)], array.null_count
    )
    return lengths, nullable.cast(pa.large_binary())


def _is_text_or_bytes(arrow_type: pa.DataType) -> bool:
    types = pa.types
    return (
        types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
        or types.is_binary(arrow_type)
        or types.is_large_binary(arrow_type)
    )


def _fixed_type(arrow_type: pa.DataType) -> tuple[str, pa.DataType]:
    """(big-endian numpy dtype, Arrow type to cast to) of a fixed-width number column."""
    for matches, dtype, cast_to in _FIXED:
        if matches(arrow_type):  # type: ignore[operator]
            return dtype, cast_to
    raise TypeError(f"no binary COPY encoding for Arrow type {arrow_type}")


def _fixed_width(records: np.ndarray) -> pa.Array:
    """A (rows, width) uint8 numpy array as a large_binary Arrow array, one row per value."""
    rows, width = records.shape
    buffer = pa.py_buffer(np.ascontiguousarray(records))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows, [None, buffer])
    return fixed.cast(pa.large_binary())
