"""A tiny deterministic stand-in for the synthetic population, for fast tests of the mocks.

Every feed of the registry serves up to `size` records; record i is in force from
FIRST_DAY + (i % 400) days, so counts grow day by day over the first 400 days and
every record is served from then on.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from mocks.config import FIRST_DAY
from osms.core import iin
from osms.core.registry import default_registry

class FakePopulation:
    def __init__(self, size: int = 120) -> None:
        reg = default_registry()
        self._cats = {c.code: c for c in reg.all_categories()}
        self._feeds = tuple(sorted({(f.system, f.category) for e in reg.editions for f in e.feeds}))
        self.size = size

    def feeds(self) -> tuple[tuple[str, str], ...]:
        return self._feeds

    def records(self, system: str, category: str, as_of: dt.date) -> pa.Table:
        if (system, category) not in self._feeds:
            raise KeyError(f"no feed {system}.{category}")
        i = np.arange(self.size)
        i = i[i % 400 <= (as_of - FIRST_DAY).days]
        n = len(i)
        births = np.datetime64("1980-01-01") + (i * 97 % 9000).astype("timedelta64[D]")
        sexes = np.where(i % 2 == 0, "M", "F")
        ids, ok = iin.generate_many(births, sexes, (i * 13 + 1) % 10000)
        ids2, _ = iin.generate_many(births, sexes, (i * 13 + 2) % 10000)
        ids = np.where(ok, ids, ids2)
        cols = {}
        for col in self._cats[category].record_columns:
            typ = col.arrow_type
            if col.name == "record_id":
                values = [f"{system.upper()}-{k:06d}" for k in i]
            elif col.name == "iin" or col.type == "iin":
                values = list(ids)
            elif col.name == "birth_date":
                values = list(births.astype(dt.date))
            elif col.name == "sex":
                values = list(sexes)
            elif col.name == "period_start":
                values = [FIRST_DAY + dt.timedelta(days=int(k % 400)) for k in i]
            elif col.name == "period_end":
                values = [None] * n
            elif col.type == "enum":
                values = [col.values[0]] * n
            elif col.type == "date":
                values = [dt.date(2020, 1, 1)] * n
            elif col.type == "timestamp":
                values = [dt.datetime(2022, 9, 26, tzinfo=dt.UTC)] * n
            elif col.type == "int":
                values = [7] * n
            elif col.type == "bool":
                values = [True] * n
            elif col.pattern == "^[0-9]{12}$":
                values = ["123456789012"] * n
            elif col.pattern:
                values = ["KZ"] * n
            else:
                values = ["Әлия" if "name" in col.name else "x"] * n
            cols[col.name] = pa.array(values, typ)
        return pa.table(cols)
