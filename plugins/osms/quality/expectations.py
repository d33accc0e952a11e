"""Custom Great Expectations for IINs, vectorised over the whole column.

Importing this module registers the expectations and their metrics with GX, so
a suite JSON can name them by type (``expect_column_values_to_be_valid_iin``,
``expect_iin_to_match_birth_date_and_sex``). It imports GX at module level (the
classes subclass GX's), so only :mod:`osms.quality.validate` imports it, inside
a function.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation, MulticolumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    MulticolumnMapMetricProvider,
    column_condition_partial,
    multicolumn_condition_partial,
)

from osms.core import iin

__all__ = ["ExpectColumnValuesToBeValidIin", "ExpectIinToMatchBirthDateAndSex"]


def _arrow_strings(series: pd.Series):
    """The column as a pyarrow string array without a per-value Python loop."""
    import pyarrow as pa

    try:
        arr = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array(series.astype("string"), type=pa.string(), from_pandas=True)
    return arr


class ColumnValuesValidIin(ColumnMapMetricProvider):
    """True where the value is a valid IIN (12 digits, check digit computable and matching)."""

    condition_metric_name = "column_values.valid_iin"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs) -> pd.Series:
        return pd.Series(iin.check(_arrow_strings(column)).valid, index=column.index)


class ExpectColumnValuesToBeValidIin(ColumnMapExpectation):
    """Expect each value to be a valid IIN: 12 digits whose check digit is computable and matches."""

    map_metric: ClassVar[str] = "column_values.valid_iin"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["osms", "iin"], "contributors": []}


class IinMatchesBirthDateAndSex(MulticolumnMapMetricProvider):
    """True where a valid IIN's birth-date and sex digits agree with the record.

    An invalid IIN counts as matching here: the check digit rule reports it.
    """

    condition_metric_name = "multicolumn_values.iin_matches_birth_date_sex"
    condition_domain_keys = ("batch_id", "table", "column_list", "row_condition", "condition_parser", "ignore_row_if")

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, **kwargs) -> pd.Series:
        iin_col, birth_col, sex_col = column_list.columns[:3]
        result = iin.check(_arrow_strings(column_list[iin_col]))
        decoded_birth = result.birth_date  # datetime64[D], NaT where the digits give none
        birth = pd.to_datetime(column_list[birth_col]).to_numpy(dtype="datetime64[D]")
        sex = column_list[sex_col].astype("string").fillna("").to_numpy(dtype=str)
        comparable = result.valid & ~np.isnat(decoded_birth)
        agrees = (np.isnat(birth) | (decoded_birth == birth)) & ((sex == "") | (result.sex == sex))
        return pd.Series(~comparable | agrees, index=column_list.index)


class ExpectIinToMatchBirthDateAndSex(MulticolumnMapExpectation):
    """Expect a valid IIN's birth-date and sex digits to agree with the record's (column_list: iin, birth_date, sex).

    Since 2013 the digits are not guaranteed for new numbers, so suites give this
    expectation ``severity: warning``: it is counted, never a reason to quarantine.
    """

    map_metric: ClassVar[str] = "multicolumn_values.iin_matches_birth_date_sex"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["osms", "iin"], "contributors": []}
