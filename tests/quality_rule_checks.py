"""Custom checks the quality-rule tests name by dotted path (`check: quality_rule_checks.is_upper`), as a
catalog would name a function of its own package."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


def is_upper(values: pd.Series) -> pd.Series:
    """True where the text is in capitals."""
    return values == values.str.upper()


NOT_A_FUNCTION = 3


class AdultUsers(pa.DataFrameModel):
    """A hand-written Pandera model (`pandera_model: quality_rule_checks.AdultUsers`): staged batches come
    with pandas' nullable dtypes."""

    age: Series[pd.Int64Dtype] = pa.Field(ge=18, nullable=True)

    class Config:
        strict = False
