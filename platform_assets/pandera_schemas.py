"""Pandera schemas compiled from the catalog: the row-level contract of a staged table.

Uniqueness is not here: a batch cannot see duplicates in other batches, so `contract_validation` pushes
it down to the warehouse instead.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pyarrow

from platform_assets.catalog_model import Column, ColumnType, Entity
from platform_assets.staging_sql import CAST_ERRORS_COLUMN

PANDAS_DTYPES: dict[ColumnType, str | None] = {
    ColumnType.INTEGER: "Int64",
    ColumnType.DOUBLE: "Float64",
    ColumnType.STRING: "string",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: None,
    ColumnType.TIMESTAMP: "datetime64[us]",
}

ARROW_TO_PANDAS = {
    pyarrow.int64(): pd.Int64Dtype(),
    pyarrow.float64(): pd.Float64Dtype(),
    pyarrow.string(): pd.StringDtype(),
    pyarrow.bool_(): pd.BooleanDtype(),
}
"""How warehouse batches become pandas for validation: nullable dtypes, so NULL stays NULL."""

PARSES_CHECK = "values_parse_as_declared_types"


def to_pandas(batch: pyarrow.RecordBatch) -> pd.DataFrame:
    return batch.to_pandas(types_mapper=ARROW_TO_PANDAS.get)


def row_schema(entity: Entity) -> pa.DataFrameSchema:
    columns = {name: _column(name, column, entity) for name, column in entity.columns.items()}
    columns[CAST_ERRORS_COLUMN] = pa.Column(
        "string",
        pa.Check(lambda s: s.isna(), ignore_na=False, name=PARSES_CHECK),
        nullable=True,
        description="Values that did not parse as their declared type (column=value).",
    )
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _column(name: str, column: Column, entity: Entity) -> pa.Column:
    checks = []
    if column.min is not None:
        checks.append(pa.Check.ge(column.min))
    if column.max is not None:
        checks.append(pa.Check.le(column.max))
    if column.allowed_values is not None:
        checks.append(pa.Check.isin(column.allowed_values))
    return pa.Column(
        PANDAS_DTYPES[column.type], checks, nullable=entity.is_nullable(name), description=column.description
    )
