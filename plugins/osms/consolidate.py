"""Consolidation: every used unit's validated rows into one row per (IIN, category), a range of IINs at a time.

The package holds one row per (IIN, category) in force on D, sorted by
(category, IIN). Everything that decides a row looks only at rows with the same
(IIN, category): the sources that reported the person, the previous delivered
package's row and the quarantined records behind it. So the work splits by
category and, within a category, by ranges of IINs cut from a count of rows per
IIN prefix (:func:`osms.iin.prefix_ranges`), each range at most the task's
partition size (:mod:`osms.budget`). DuckDB consolidates one range at a time
(spilling beyond its memory limit) and the range's rows, already in order, are
appended to records.parquet and changes.parquet. Memory follows the budget,
never the size of the country.

Rules, in the decree's words (unchanged by the split):

- When feeds disagree about a person, person fields take the value reported by
  the most source records (a missing value is not a vote; ties go to the
  smallest value), ``period_start`` the earliest, ``period_end`` NULL if any
  source has it open, else the latest. Conflicts are counted per field.
- A person in the previous delivered package whose record is quarantined on the
  date the unit's data comes from keeps the previous package's row: bad data from
  a body must not cost anyone coverage. A new person with only quarantined
  records is not added.
- changes.parquet compares person fields, period, decree row and funding with the
  previous delivered package; bodies, systems and sources are lineage.

Values reach SQL as parameters; only column names, which come from this module's
constants, are written into the statements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from osms.files import RowGroupWriter

__all__ = [
    "CHANGE_FIELDS",
    "CONFLICT_FIELDS",
    "PERSON_FIELDS",
    "CategorySources",
    "ConsolidationStats",
    "changes_schema",
    "consolidate",
    "open_duckdb",
    "records_schema",
]

log = logging.getLogger(__name__)

PERSON_FIELDS = ("last_name", "first_name", "patronymic", "birth_date", "sex")
CONFLICT_FIELDS = PERSON_FIELDS + ("period_start", "period_end")
# What a ``changed`` membership compares: the person, the period and the decree's
# facts. ``bodies``/``systems``/``sources`` are lineage: a second body reporting
# the same person is not a change of membership.
CHANGE_FIELDS = PERSON_FIELDS + ("period_start", "period_end", "decree_row", "funding")
_SOURCE_COLUMNS = (
    ("system", "VARCHAR"), ("record_id", "VARCHAR"), ("iin", "VARCHAR"), ("last_name", "VARCHAR"),
    ("first_name", "VARCHAR"), ("patronymic", "VARCHAR"), ("birth_date", "DATE"), ("sex", "VARCHAR"),
    ("period_start", "DATE"), ("period_end", "DATE"),
)


def records_schema() -> pa.Schema:
    """records.parquet: one row per (IIN, category)."""
    import pyarrow as pa

    s = pa.string()
    return pa.schema([
        ("iin", s), ("category", s), ("decree_row", pa.int32()), ("funding", s),
        ("last_name", s), ("first_name", s), ("patronymic", s), ("birth_date", pa.date32()), ("sex", s),
        ("period_start", pa.date32()), ("period_end", pa.date32()),
        ("bodies", pa.list_(s)), ("systems", pa.list_(s)), ("sources", pa.list_(s)),
    ])


def changes_schema() -> pa.Schema:
    """changes.parquet: what differs from the previous delivered package."""
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("change", s), ("iin", s), ("category", s), ("fields", pa.list_(s))])


@dataclass(frozen=True)
class CategorySources:
    """What one category of the package is made of: each used unit's validated and quarantine file."""

    category: str
    decree_row: int | None  # None: the category is not in force on D (only the previous package has it)
    funding: str | None
    units: tuple[tuple[str, Path, Path | None], ...] = ()  # (body, validated file, quarantine file or None)


@dataclass
class ConsolidationStats:
    """Counts of the consolidation, for quality.json: no personal data."""

    rows: dict[str, int] = field(default_factory=dict)  # category -> rows in records.parquet
    conflicts: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> field -> rows
    kept: dict[str, int] = field(default_factory=dict)  # category -> rows kept from the previous package
    kept_by_body: dict[tuple[str, str], int] = field(default_factory=dict)  # (category, body) -> rows
    used_by_unit: dict[tuple[str, str], int] = field(default_factory=dict)  # (body, category) -> source rows
    changes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("added", "removed", "changed"), 0))
    ranges: int = 0

    def add(self, into: dict[Any, int], key: Any, n: int) -> None:
        """Add ``n`` to ``into[key]``."""
        into[key] = into.get(key, 0) + int(n or 0)


@contextmanager
def open_duckdb(spill: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB whose joins, aggregates and sorts beyond ``memory_limit`` spill to ``spill``."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET temp_directory = ?", [str(spill)])
        con.execute("SET preserve_insertion_order = false")  # order comes from ORDER BY only
        yield con
    finally:
        con.close()


def consolidate(
    con: duckdb.DuckDBPyConnection,
    categories: Sequence[CategorySources],
    previous_records: Path | None,
    *,
    records: RowGroupWriter,
    changes: RowGroupWriter,
    partition_rows: int,
    check: Callable[[pa.Table], None] = lambda table: None,
) -> ConsolidationStats:
    """Write records and changes, category by category in code order, a range of IINs at a time.

    ``categories`` lists every category of the edition and every category of the
    previous package (whose rows are then all removed). ``check`` sees each range's
    records before they are written (the package suite's row rules).
    """
    from osms.iin import prefix_ranges

    stats = ConsolidationStats()
    prev = str(previous_records) if previous_records is not None else None
    for cat in sorted(categories, key=lambda c: c.category):
        stats.conflicts.setdefault(cat.category, dict.fromkeys(CONFLICT_FIELDS, 0))
        counts = _prefix_counts(con, cat, prev)
        if not counts:
            continue
        _quarantined_sources(con, cat, prev is not None)
        for lo, hi in prefix_ranges(counts, partition_rows):
            stats.ranges += 1
            _consolidate_range(con, cat, prev, lo, hi, stats)
            part = con.sql("SELECT * FROM osms_records ORDER BY iin").to_arrow_table()
            check(part)
            records.write(part)
            stats.add(stats.rows, cat.category, part.num_rows)
            changed = _changes(con, prev is not None)
            changes.write(changed)
            for kind, n in con.execute("SELECT change, count(*) FROM osms_changes GROUP BY change").fetchall():
                stats.add(stats.changes, kind, n)
            del part, changed
    for table in ("osms_src", "osms_multi", "osms_contested", "osms_merged", "osms_kept", "osms_records",
                  "osms_prev", "osms_changes", "osms_quarantined"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return stats


# --------------------------------------------------------------------------- one range


def _range_condition(lo: str | None, hi: str | None) -> tuple[str, list[str]]:
    """SQL over ``iin`` for [lo, hi) (the last range also holds missing IINs), and its parameters."""
    parts, params = [], []
    if lo is not None:
        parts.append("iin >= ?")
        params.append(lo)
    if hi is not None:
        parts.append("iin < ?")
        params.append(hi)
    if not parts:
        return "true", []
    cond = " AND ".join(parts)
    return (f"({cond} OR iin IS NULL)" if hi is None else cond), params


def _prefix_counts(con: duckdb.DuckDBPyConnection, cat: CategorySources, prev: str | None) -> dict[str | None, int]:
    """Rows per IIN prefix of the category: its sources' and the previous package's."""
    selects, params = [], []
    for _, validated, _ in cat.units:
        selects.append("SELECT substr(CAST(iin AS VARCHAR), 1, 3) AS p FROM read_parquet(?)")
        params.append(str(validated))
    if prev is not None:
        selects.append("SELECT substr(iin, 1, 3) AS p FROM read_parquet(?) WHERE category = ?")
        params += [prev, cat.category]
    if not selects:
        return {}
    rows = con.execute(f"SELECT p, count(*) FROM ({' UNION ALL '.join(selects)}) GROUP BY p", params).fetchall()
    return {p: int(n) for p, n in rows}


def _quarantined_sources(con: duckdb.DuckDBPyConnection, cat: CategorySources, needed: bool) -> None:
    """``osms_quarantined``: body/system/record_id of the category's quarantined records, on their units' dates."""
    selects, params = [], []
    for body, _, quarantine in cat.units if needed else ():
        if quarantine is not None and quarantine.is_file():
            selects.append("SELECT ? || '/' || CAST(system AS VARCHAR) || '/' || CAST(record_id AS VARCHAR) AS source"
                           " FROM read_parquet(?) WHERE system IS NOT NULL AND record_id IS NOT NULL")
            params += [body, str(quarantine)]
    sql = " UNION ALL ".join(selects) if selects else "SELECT NULL::VARCHAR AS source WHERE false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE osms_quarantined AS SELECT DISTINCT source FROM ({sql})", params)


def _consolidate_range(con: duckdb.DuckDBPyConnection, cat: CategorySources, prev: str | None,
                       lo: str | None, hi: str | None, stats: ConsolidationStats) -> None:
    """``osms_records`` (and ``osms_prev``): the category's consolidated rows with IINs in [lo, hi)."""
    where, range_params = _range_condition(lo, hi)
    cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in _SOURCE_COLUMNS)
    selects, params = [], []
    for body, validated, _ in cat.units:
        selects.append(f"SELECT ? AS body, {cols} FROM read_parquet(?) WHERE {where}")
        params += [body, str(validated), *range_params]
    empty = "SELECT NULL::VARCHAR AS body, " + ", ".join(f"NULL::{t} AS {c}" for c, t in _SOURCE_COLUMNS) + " WHERE false"
    con.execute("CREATE OR REPLACE TEMP TABLE osms_src AS " + (" UNION ALL ".join(selects) or empty), params)
    for body, n in con.execute("SELECT body, count(*) FROM osms_src GROUP BY body").fetchall():
        stats.add(stats.used_by_unit, (body, cat.category), n)

    # Most persons are reported by one record: they are taken as they are. Only the IINs
    # reported more than once are aggregated, and a field's min equals its max when the
    # feeds agree: only disagreeing groups are voted on.
    con.execute("CREATE OR REPLACE TEMP TABLE osms_multi AS SELECT iin FROM osms_src GROUP BY iin HAVING count(*) > 1")
    con.execute("CREATE OR REPLACE TEMP TABLE osms_contested AS SELECT * FROM osms_src SEMI JOIN osms_multi USING (iin)")
    person = ",\n".join(f"min({f}) AS {f}, min({f}) IS DISTINCT FROM max({f}) AS c_{f}" for f in PERSON_FIELDS)
    no_conflict = ", ".join(f"false AS c_{f}" for f in CONFLICT_FIELDS)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE osms_merged AS
        SELECT iin, {", ".join(PERSON_FIELDS)}, period_start, period_end,
          [body] AS bodies, [system] AS systems, [body || '/' || system || '/' || record_id] AS sources,
          false AS kept_from_previous, {no_conflict}
        FROM osms_src ANTI JOIN osms_multi USING (iin)
        UNION ALL BY NAME
        SELECT iin,
          {person},
          min(period_start) AS period_start,
          min(period_start) IS DISTINCT FROM max(period_start) AS c_period_start,
          CASE WHEN bool_or(period_end IS NULL) THEN NULL ELSE max(period_end) END AS period_end,
          (bool_or(period_end IS NULL) AND bool_or(period_end IS NOT NULL))
            OR min(period_end) IS DISTINCT FROM max(period_end) AS c_period_end,
          list_sort(list_distinct(list(body))) AS bodies,
          list_sort(list_distinct(list(system))) AS systems,
          list_sort(list_distinct(list(body || '/' || system || '/' || record_id))) AS sources,
          false AS kept_from_previous
        FROM osms_contested GROUP BY iin
    """)
    for f in PERSON_FIELDS:
        if not con.execute(f"SELECT coalesce(bool_or(c_{f}), false) FROM osms_merged").fetchall()[0][0]:
            continue
        # the most reported value; ties go to the smallest (a missing value is not a vote)
        con.execute(f"""
            UPDATE osms_merged SET {f} = w.v FROM (
              SELECT iin, first(v ORDER BY n DESC, v ASC) AS v FROM (
                SELECT s.iin, s.{f} AS v, count(*) AS n
                FROM osms_contested s SEMI JOIN (SELECT iin FROM osms_merged WHERE c_{f}) c ON s.iin = c.iin
                WHERE s.{f} IS NOT NULL GROUP BY ALL
              ) GROUP BY iin
            ) w
            WHERE osms_merged.iin = w.iin
        """)

    # Per-record protection: a previous row whose source record is quarantined now stays,
    # unless the person is present anyway.
    if prev is not None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE osms_prev AS SELECT * FROM read_parquet(?)"
                    f" WHERE category = ? AND {where}", [prev, cat.category, *range_params])
        con.execute("""
            CREATE OR REPLACE TEMP TABLE osms_kept AS
            SELECT DISTINCT p.iin, split_part(q.source, '/', 1) AS body
            FROM (SELECT iin, unnest(sources) AS source FROM osms_prev) p
            JOIN osms_quarantined q ON p.source = q.source
            WHERE NOT EXISTS (SELECT 1 FROM osms_merged m WHERE m.iin = p.iin)
        """)
        flags = ", ".join(f"false AS c_{f}" for f in CONFLICT_FIELDS)
        con.execute(f"""
            INSERT INTO osms_merged BY NAME
            SELECT p.iin, {", ".join("p." + f for f in PERSON_FIELDS)},
              p.period_start, p.period_end, p.bodies, p.systems, p.sources, true AS kept_from_previous, {flags}
            FROM osms_prev p SEMI JOIN (SELECT DISTINCT iin FROM osms_kept) k ON p.iin = k.iin
        """)
        for body, n in con.execute("SELECT body, count(*) FROM osms_kept GROUP BY body").fetchall():
            stats.add(stats.kept_by_body, (cat.category, body), n)

    sums = ", ".join(f"sum(c_{f}::INTEGER)" for f in CONFLICT_FIELDS)
    kept, *conflicts = con.execute(f"SELECT sum(kept_from_previous::INTEGER), {sums} FROM osms_merged").fetchall()[0]
    stats.add(stats.kept, cat.category, kept)
    for f, n in zip(CONFLICT_FIELDS, conflicts, strict=True):
        stats.add(stats.conflicts[cat.category], f, n)
    # A category not in force on D (only the previous package has it) puts no row in the package.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE osms_records AS
        SELECT m.iin, ?::VARCHAR AS category, ?::INTEGER AS decree_row, ?::VARCHAR AS funding,
          {", ".join("m." + f for f in PERSON_FIELDS)}, m.period_start, m.period_end,
          m.bodies, m.systems, m.sources
        FROM osms_merged m WHERE ?
    """, [cat.category, cat.decree_row, cat.funding, cat.decree_row is not None])


def _changes(con: duckdb.DuckDBPyConnection, has_previous: bool) -> pa.Table:
    """``osms_changes`` for the range: the records against the previous package's rows; returned in IIN order."""
    prev = "osms_prev" if has_previous else "(SELECT * FROM osms_records WHERE false)"
    differs = ", ".join(f"CASE WHEN r.{f} IS DISTINCT FROM p.{f} THEN '{f}' END" for f in CHANGE_FIELDS)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE osms_changes AS
        SELECT * FROM (
          SELECT
            CASE WHEN p.iin IS NULL THEN 'added' WHEN r.iin IS NULL THEN 'removed' ELSE 'changed' END AS change,
            coalesce(r.iin, p.iin) AS iin,
            coalesce(r.category, p.category) AS category,
            CASE WHEN r.iin IS NOT NULL AND p.iin IS NOT NULL
              THEN list_filter([{differs}], lambda x: x IS NOT NULL) END AS fields
          FROM osms_records r FULL OUTER JOIN {prev} p ON r.iin = p.iin
        ) WHERE change <> 'changed' OR len(fields) > 0
    """)
    return con.sql("SELECT * FROM osms_changes ORDER BY iin").to_arrow_table()
