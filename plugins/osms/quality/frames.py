"""Arrow chunks as the pandas frames GX validates: typed so that GX's pandas metrics stay vectorised.

GX's pandas engine filters the whole frame once per expectation (the rows of its
domain), factorises columns for the uniqueness rules and fingerprints the frame
(``hash_pandas_object``) each time it builds a batch. On pandas columns backed by
Arrow strings (pandas' default for text) all three are slow: on a national
landing file, 37 s of a 51 s GX run went to Arrow ``take`` calls alone. Python
``object`` strings are no better to hash. So text with repeated values (sex, an
enum, names) reaches GX as pandas ``Categorical`` columns built from Arrow's
dictionary encoding: filters copy int32 codes, and hashing and factorising work
on each distinct value once. A column of mostly distinct values (IINs, record
ids) gains nothing from categories, whose index costs more to build than it
saves: it stays pandas' Arrow-backed text, handed over without a copy. GX's
expectations read a categorical column exactly like the strings it holds
(``isin``, ``isnull``, ``str`` methods, comparisons), which the equivalence tests
check rule by rule.

Dates become ``datetime64[ns]`` (GX compares dates vectorised in ns; dates
outside the span pandas can hold are clamped to its ends, where they still break
every date rule), integers ``float64`` (GX's vectorised ``between`` needs numpy
numbers; nulls become NaN). Rows keep pandas' default index (0..n-1): callers map
GX's ``unexpected_index_list`` back to their own positions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["columns_used", "to_frame"]

# pandas datetime64[ns] spans 1677..2262.
_NS_MIN, _NS_MAX = dt.date(1678, 1, 1), dt.date(2261, 12, 31)
# A text column whose first values are at most this share distinct goes to GX as categories.
_CATEGORICAL_SHARE = 0.25
_SAMPLE = 4096


def columns_used(expectations: Sequence[dict[str, Any]]) -> list[str]:
    """Every column the expectations read (their columns, column lists and row conditions)."""
    used: set[str] = set()
    for e in expectations:
        kw = e["kwargs"]
        used.update(kw[k] for k in ("column", "column_A", "column_B") if k in kw)
        used.update(kw.get("column_list", []))
        cond = kw.get("row_condition")
        if isinstance(cond, dict):
            used.update(_condition_columns(cond))
    return sorted(used)


def _condition_columns(cond: dict[str, Any]) -> set[str]:
    if "column" in cond and isinstance(cond["column"], dict):
        return {cond["column"]["name"]}
    return set().union(*(_condition_columns(c) for c in cond.get("conditions", []))) if cond.get("conditions") else set()


def to_frame(table: pa.Table, columns: Sequence[str]) -> pd.DataFrame:
    """The ``columns`` of ``table`` as a pandas frame for GX (see the module's notes)."""
    import pandas as pd

    return pd.DataFrame({name: _series(table.column(name)) for name in columns}, copy=False)


def _series(col: pa.ChunkedArray) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        sample = col.slice(0, _SAMPLE)
        if pc.count_distinct(sample, mode="all").as_py() > max(1, _CATEGORICAL_SHARE * len(sample)):
            return col.to_pandas()  # mostly distinct: pandas' Arrow-backed text, no copy
        encoded = pc.dictionary_encode(col)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        categories = pd.Index(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        return pd.Categorical.from_codes(codes, categories=categories)
    if pa.types.is_date32(t) or pa.types.is_date64(t):
        lo, hi = pa.scalar(_NS_MIN, pa.date32()), pa.scalar(_NS_MAX, pa.date32())
        col = col.cast(pa.date32())
        col = pc.if_else(pc.less(col, lo), lo, pc.if_else(pc.greater(col, hi), hi, col)).cast(pa.timestamp("ns"))
        return col.to_pandas()
    if pa.types.is_integer(t):
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return col.to_pandas()
