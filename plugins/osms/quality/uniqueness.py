"""Exact duplicates and the uniqueness rules over a whole feed, in bounded memory.

Row rules see one row; the uniqueness rules (``expect_compound_columns_to_be_unique``,
``expect_column_values_to_be_unique``) and exact duplicates compare every row with
every other one. Holding a national feed (6 M rows) as one table to compare them
cost about 0.9 KiB per row. Here the landing files are read by DuckDB instead:

1. **hash pass**: each row's key of each rule, and the whole record for exact
   duplicates, is hashed into a table of (position, hashes), about 8 bytes a key
   a row, which DuckDB spills to disk beyond its memory limit. A key whose hash
   occurs once cannot be repeated: only rows whose hash occurs more than once
   are **candidates** (a collision only adds a candidate, it never hides a repeat).
2. **candidate pass**: the candidates' rows are read back. Exact duplicates among
   them are grouped (the first copy is kept, later copies go to quarantine as
   ``duplicate_record``); then **GX runs the uniqueness rules over the remaining
   candidates**, so GX still decides which rows break them: a row that is not a
   candidate has a key no other row has, so the rule's verdict on the candidates
   is its verdict on the whole feed.

Every key of the suites names ``system`` and each landing file is one feed (one
system), so a file's rows are only ever compared as that file typed them.
Candidates are normally a fraction of a per cent of a feed. When they are not
(a source sending everything twice), they are split by hash into parts of at
most one chunk, each read and judged on its own, so memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pyarrow as pa

__all__ = ["TABLE_WIDE_TYPES", "TableWide", "find_table_wide", "is_table_wide", "rule_key"]

TABLE_WIDE_TYPES = frozenset({"expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique"})
POSITION = "_pos"


class Feed(Protocol):
    """The landing files of a (body, category) as validation reads them."""

    def files(self) -> list[tuple[Path, int, set[str], dict[str, Any]]]:
        """(path, position of its first row, its columns, lineage values it may lack) per file, in order."""

    def conform(self, table: pa.Table, path: Path) -> pa.Table:
        """Rows of ``path`` in the record contract's columns and types, plus lineage."""


def is_table_wide(expectation: dict[str, Any]) -> bool:
    """Whether the expectation compares rows with each other (it must see the whole feed)."""
    return expectation["type"] in TABLE_WIDE_TYPES


def rule_key(expectation: dict[str, Any]) -> tuple[list[str], str]:
    """(key columns, which missing values exclude a row) of a uniqueness expectation, as GX reads it."""
    kw = expectation["kwargs"]
    if expectation["type"] == "expect_column_values_to_be_unique":
        return [kw["column"]], "any_value_is_missing"  # a column map rule never looks at a null
    return list(kw["column_list"]), kw.get("ignore_row_if", "all_values_are_missing")


@dataclass
class TableWide:
    """What the whole-feed comparisons found, by position in the feed."""

    copies: np.ndarray  # positions of exact copies of an earlier row (sorted)
    unexpected: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> positions breaking it (sorted)
    missing: dict[str, int] = field(default_factory=dict)  # rule -> rows it ignores (a key value missing)
    exceptions: dict[str, str] = field(default_factory=dict)  # rule -> why GX could not evaluate it
    gx_runs: list[dict[str, Any]] = field(default_factory=list)  # the GX results over the candidates, raw
    prefix_counts: dict[str | None, int] = field(default_factory=dict)  # first 3 characters of the IIN -> rows


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _null_condition(columns: list[str], ignore_row_if: str) -> str:
    """When a row is left out of a uniqueness rule, in SQL over the column expressions ``columns``."""
    nulls = [f"{c} IS NULL" for c in columns]
    if ignore_row_if == "never":
        return "false"
    if ignore_row_if == "all_values_are_missing":
        return " AND ".join(nulls)
    return " OR ".join(nulls)  # any_value_is_missing (GX's default for compound keys in our suites)


def find_table_wide(
    feed: Feed,
    *,
    record_columns: Sequence[str],
    expectations: Sequence[dict[str, Any]],
    chunk_rows: int,
    con: duckdb.DuckDBPyConnection,
    validate: Callable[[list[dict[str, Any]], pa.Table, np.ndarray], dict[str, Any]],
) -> TableWide:
    """Exact duplicates and the table-wide rules' failures of the whole feed (see the module's notes).

    ``record_columns`` (with ``system``) define an exact duplicate; ``expectations``
    are the suite's table-wide ones; ``validate(expectations, table, positions)``
    runs them with GX over a table whose rows are at ``positions`` and returns the
    raw GX result as a dict.
    """
    import numpy as np

    keys = [rule_key(e) for e in expectations]
    rules = [e["meta"]["rule"] for e in expectations]
    row_columns = list(dict.fromkeys([*record_columns, "system"]))
    con.execute("CREATE OR REPLACE TEMP TABLE osms_keys (pos BIGINT, h_row UBIGINT, "
                + "".join(f"h_{i} UBIGINT, " for i in range(len(keys))) + "prefix VARCHAR)")
    for path, start, present, lineage in feed.files():
        def column(name: str) -> str:
            if name in present:
                return _quote(name)
            return _literal(lineage[name]) if name in lineage else "NULL"

        selects = [f"hash({', '.join(column(c) for c in row_columns)})"]
        for cols, ignore in keys:
            selects.append(f"CASE WHEN {_null_condition([column(c) for c in cols], ignore)} THEN NULL"
                           f" ELSE hash({', '.join(column(c) for c in cols)}) END")
        selects.append(f"substr({column('iin')}, 1, 3)")
        con.execute(f"INSERT INTO osms_keys SELECT file_row_number + ?, {', '.join(selects)}"
                    " FROM read_parquet(?, file_row_number = true)", [start, str(path)])

    def positions(sql: str) -> np.ndarray:
        table = con.sql(sql).to_arrow_table()
        return table.column(0).to_numpy().astype(np.int64) if table.num_rows else np.zeros(0, np.int64)

    def repeated(h: str) -> str:
        return (f"SELECT pos FROM osms_keys WHERE {h} IN (SELECT {h} FROM osms_keys WHERE {h} IS NOT NULL"
                f" GROUP BY {h} HAVING count(*) > 1) ORDER BY pos")

    found = TableWide(copies=np.zeros(0, np.int64))
    found.prefix_counts = dict(con.execute("SELECT prefix, count(*) FROM osms_keys GROUP BY prefix").fetchall())

    # Exact duplicates first: a later copy is not a record of its own, for any rule.
    row_candidates = positions(repeated("h_row"))
    rule_candidates = [positions(repeated(f"h_{i}")) for i in range(len(keys))]
    if len(row_candidates):
        parts = _parts(con, "h_row", row_candidates, chunk_rows)
        copies = [_copies(_collect(feed, con, part), row_columns) for part in parts]
        found.copies = np.unique(np.concatenate(copies)) if copies else found.copies
    con.register("osms_copies", _positions_table(found.copies))
    for i, rule in enumerate(rules):
        found.missing[rule] = con.execute(
            f"SELECT count(*) FROM osms_keys ANTI JOIN osms_copies c ON osms_keys.pos = c.pos WHERE h_{i} IS NULL"
        ).fetchall()[0][0]
    con.unregister("osms_copies")

    candidates = [np.setdiff1d(c, found.copies, assume_unique=True) for c in rule_candidates]
    total = sum(len(c) for c in candidates)
    found.unexpected = {rule: np.zeros(0, np.int64) for rule in rules}
    if 0 < total <= chunk_rows:
        # One GX run over every candidate: a row that is a candidate of one rule only has a key
        # of the other rules that no other row has, so each rule's verdict stays exact.
        union = np.unique(np.concatenate(candidates))
        _judge(feed, con, union, list(expectations), validate, found)
    elif total:
        for i, expectation in enumerate(expectations):  # many candidates: each rule on its own, in parts
            for part in _parts(con, f"h_{i}", candidates[i], chunk_rows):
                _judge(feed, con, part, [expectation], validate, found)
    con.execute("DROP TABLE osms_keys")  # the hashes are done with: give their memory back
    return found


def _literal(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _positions_table(positions: np.ndarray) -> pa.Table:
    import pyarrow as pa

    return pa.table({"pos": pa.array(positions, pa.int64())})


def _parts(con: duckdb.DuckDBPyConnection, h: str, candidates: np.ndarray, chunk_rows: int) -> list[np.ndarray]:
    """``candidates`` split by hash into parts of at most about ``chunk_rows``: equal keys stay together."""
    import numpy as np

    n = math.ceil(len(candidates) / chunk_rows)
    if n <= 1:
        return [candidates]
    con.register("osms_candidates", _positions_table(candidates))
    rows = con.sql(f"SELECT k.pos, k.{h} % {n} FROM osms_keys k SEMI JOIN osms_candidates c ON k.pos = c.pos"
                       " ORDER BY k.pos").to_arrow_table()
    con.unregister("osms_candidates")
    pos = rows.column(0).to_numpy().astype(np.int64)
    part = rows.column(1).to_numpy().astype(np.int64)
    return [pos[part == p] for p in range(n) if (part == p).any()]


def _collect(feed: Feed, con: duckdb.DuckDBPyConnection, wanted: np.ndarray) -> pa.Table:
    """The rows at ``wanted`` (sorted positions) as validation reads them, with their position in ``_pos``."""
    import numpy as np
    import pyarrow as pa

    parts = []
    for path, start, _, _ in feed.files():
        con.register("osms_wanted", _positions_table(wanted))
        rows = con.sql(f"SELECT * EXCLUDE (file_row_number), file_row_number + {int(start)} AS {POSITION}"
                       f" FROM read_parquet({_literal(path)}, file_row_number = true)"
                       f" WHERE file_row_number + {int(start)} IN (SELECT pos FROM osms_wanted)").to_arrow_table()
        con.unregister("osms_wanted")
        if rows.num_rows:
            rows = rows.sort_by(POSITION)
            pos = rows.column(POSITION)
            parts.append(feed.conform(rows.drop_columns([POSITION]), path).append_column(POSITION, pos.cast(pa.int64())))
    if not parts:
        raise AssertionError(f"none of {len(wanted)} candidate rows was found again")  # pragma: no cover
    table = pa.concat_tables(parts)
    assert table.num_rows == len(wanted) and np.array_equal(table.column(POSITION).to_numpy(), wanted)
    return table


def _copies(rows: pa.Table, columns: list[str]) -> np.ndarray:
    """Positions of the rows that repeat an earlier row of ``rows`` in every column."""
    import numpy as np
    import pyarrow as pa

    first = rows.select([*columns, POSITION]).group_by(columns, use_threads=False).aggregate([(POSITION, "min")])
    firsts = first.column(f"{POSITION}_min").to_numpy()
    pos = rows.column(POSITION).to_numpy()
    return np.sort(pos[~np.isin(pos, firsts)]).astype(np.int64) if len(pos) else np.zeros(0, np.int64)


def _judge(feed: Feed, con: duckdb.DuckDBPyConnection, wanted: np.ndarray, expectations: list[dict[str, Any]],
           validate: Callable[[list[dict[str, Any]], pa.Table, np.ndarray], dict[str, Any]],
           found: TableWide) -> None:
    """Run the uniqueness ``expectations`` with GX over the rows at ``wanted``; record what broke them."""
    import numpy as np

    rows = _collect(feed, con, wanted)
    result = validate(expectations, rows.drop_columns([POSITION]), rows.column(POSITION).to_numpy())
    found.gx_runs.append(result)
    for res in result["results"]:
        rule = res["expectation_config"]["meta"]["rule"]
        exc = res.get("exception_info") or {}
        raised = [v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")]
        if exc.get("raised_exception") or raised:
            info = exc if exc.get("raised_exception") else raised[0]
            found.exceptions[rule] = str(info.get("exception_message"))[:300]
            continue
        index = (res.get("result") or {}).get("unexpected_index_list") or []
        found.unexpected[rule] = np.union1d(found.unexpected[rule], np.asarray(index, dtype=np.int64))
