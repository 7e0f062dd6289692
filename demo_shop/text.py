"""Vectorised text rendering with Arrow compute, so formatting a chunk never loops over rows in Python."""

import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NEEDS_JSON_ESCAPING = r'["\\\x00-\x1f]'


def zero_padded(prefix: str, numbers: np.ndarray, width: int) -> pa.StringArray:
    """Render ids like ``SKU-00001``: fixed width keeps them sortable as text."""
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def labels(names: tuple[str, ...], codes: np.ndarray) -> pa.StringArray:
    """Map integer category codes drawn by the generator onto their names."""
    return pa.array(names).take(pa.array(codes))


def cents_to_decimal(cents: np.ndarray) -> pa.Decimal128Array:
    """Reinterpret integer cents as ``decimal(18, 2)`` without any arithmetic.

    A decimal's storage is its unscaled integer, so the cents are written straight into the
    little-endian 128-bit words; no float ever touches the money, and CSV/JSON render exactly 2 places.
    """
    words = np.empty((len(cents), 2), dtype="<i8")
    words[:, 0] = cents
    words[:, 1] = cents >> 63
    return pa.Array.from_buffers(pa.decimal128(18, 2), len(cents), [None, pa.py_buffer(words)])


def _json_value(values: pa.Array) -> pa.StringArray:
    """Render one column as JSON literals; nulls become ``null``.

    Free text is checked rather than escaped: every string comes from the generator's own vocabularies,
    so a value needing escapes means a vocabulary bug, which should fail loudly instead of writing bad JSON.
    Rendered timestamps and numbers cannot contain such characters, so they skip the check.
    """
    if pa.types.is_boolean(values.type):
        rendered = pc.if_else(values, "true", "false")
    elif pa.types.is_integer(values.type) or pa.types.is_decimal(values.type):
        rendered = values.cast(pa.string())
    elif pa.types.is_timestamp(values.type):
        rendered = pc.binary_join_element_wise('"', values.cast(pa.string()), '"', "")
    elif pa.types.is_string(values.type):
        if pc.any(pc.match_substring_regex(values, _NEEDS_JSON_ESCAPING)).as_py():
            raise ValueError("text value needs JSON escaping, which this fast renderer does not do")
        rendered = pc.binary_join_element_wise('"', values, '"', "")
    else:
        raise TypeError(f"no JSON rendering for Arrow type {values.type}")
    return rendered.fill_null("null")


def json_objects(columns: Mapping[str, pa.Array]) -> pa.StringArray:
    """Render rows as compact JSON objects, one string per row, keys in the given order."""
    parts: list[str | pa.Array] = []
    for position, (name, values) in enumerate(columns.items()):
        parts += [("{" if position == 0 else ",") + json.dumps(name) + ":", _json_value(values)]
    return pc.binary_join_element_wise(*parts, "}", "")


def join_text(strings: pa.StringArray, separator: str) -> str:
    """Concatenate all strings with a separator in one Arrow kernel call."""
    as_one_list = pa.ListArray.from_arrays(pa.array([0, len(strings)], pa.int32()), strings)
    return pc.binary_join(as_one_list, separator)[0].as_py()
