"""A body's landing files of one category, read as the record contract plus lineage (for the validation).

pandas, pyarrow and DuckDB are imported inside functions: DAG files import the validation at parse time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.core.spill import iin_range_sql

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pyarrow as pa

    from osms.core.registry import EditionCategory

__all__ = ["Landing"]

_POS = "_osms_position"


def _arrow_type(column_type: str) -> pa.DataType:
    """The type a landing column is read as (wider than the landing file's: what GX compares)."""
    import pyarrow as pa

    return {
        "string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"), "int": pa.int64(), "bool": pa.bool_(),
    }[column_type]


class Landing:
    """The landing files of one (body, category), read as the record contract plus lineage.

    A column a file lacks is added empty, so its ``required:`` rule reports it
    rather than the run failing; lineage a file lacks comes from the call and the
    landing path (``landing/D/<body>/<system>/<category>.parquet``). A row's
    position counts rows from the first file's first row, file after file.
    """

    def __init__(self, paths: Sequence[Path], cat: EditionCategory, *, body: str, as_of: dt.date) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [pa.field(c.name, _arrow_type(c.type)) for c in cat.record_columns]
        fields += [pa.field("body", pa.string()), pa.field("system", pa.string()),
                   pa.field("category", pa.string()), pa.field("as_of", pa.date32())]
        self.schema = pa.schema(fields)
        self.category, self.body, self.as_of = cat.code, body, as_of
        self._files = []
        start = 0
        for path in map(Path, paths):
            meta = pq.ParquetFile(path).metadata
            self._files.append((path, start, set(meta.schema.to_arrow_schema().names), self._lineage(path)))
            start += meta.num_rows
        self.rows = start

    def _lineage(self, path: Path) -> dict[str, Any]:
        return {"body": self.body, "system": path.parent.name, "category": self.category, "as_of": self.as_of}

    def files(self) -> list[tuple[Path, int, set[str], dict[str, Any]]]:
        """(path, position of its first row, its columns, lineage values) per landing file, in order."""
        return list(self._files)

    def conform(self, t: pa.Table, path: Path) -> pa.Table:
        """Rows of ``path`` in the contract's columns and types, with lineage and missing columns filled."""
        import pyarrow as pa

        lineage = self._lineage(path)
        cols = []
        for f in self.schema:
            if f.name in t.column_names:
                col = t.column(f.name)
                cols.append(col if col.type == f.type else col.cast(f.type))
            elif f.name in lineage:
                cols.append(pa.array([lineage[f.name]] * t.num_rows, f.type))
            else:
                cols.append(pa.nulls(t.num_rows, f.type))
        return pa.Table.from_arrays(cols, schema=self.schema)

    def read(self, con: duckdb.DuckDBPyConnection) -> pa.Table:
        """Every row, in position order."""
        return self.read_range(con, None, None)[0]

    def read_range(self, con: duckdb.DuckDBPyConnection, lo: str | None, hi: str | None) -> tuple[pa.Table, np.ndarray]:
        """(rows whose IIN is in [lo, hi), their positions), in position order; missing IINs: the last range's."""
        import numpy as np
        import pyarrow as pa

        parts, positions = [], []
        for path, start, present, _ in self._files:
            if "iin" in present:
                where, params = iin_range_sql(lo, hi)
            elif hi is not None:
                continue  # no IIN at all: every row is missing one, so it belongs to the last range
            else:
                where, params = "true", []
            sql = (f"SELECT * EXCLUDE (file_row_number), file_row_number AS {_POS}"
                   f" FROM read_parquet(?, file_row_number = true) WHERE {where}")
            rows = con.sql(sql, params=[str(path), *params]).to_arrow_table()
            rows = rows.sort_by(_POS)
            positions.append(rows.column(_POS).to_numpy().astype(np.int64) + start)
            parts.append(self.conform(rows.drop_columns([_POS]), path))
        if not parts:
            return self.schema.empty_table(), np.zeros(0, np.int64)
        return pa.concat_tables(parts).combine_chunks(), np.concatenate(positions)
