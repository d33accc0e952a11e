"""Consolidation: every used unit's validated rows into one row per (IIN, category), a range of IINs at a time.

The package holds one row per (IIN, category) in force on D, sorted by
(category, IIN). Everything that decides a row looks only at rows with the same
(IIN, category): the sources that reported the person, the previous delivered
package's row and the quarantined records behind it. So the work splits by
category and, within a category, by ranges of IINs cut from a count of rows per
IIN prefix (:func:`osms.core.iin.prefix_ranges`), each range at most the task's
partition size (:mod:`osms.core.budget`). DuckDB consolidates one range at a time
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.core.spill import iin_range_sql, spilling_duckdb

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pyarrow as pa

    from osms.core.files import BackgroundWriter, RowGroupWriter

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
    """What one category of the package is made of: each used feed's validated and quarantine file."""

    category: str
    decree_row: int | None  # None: the category is not in force on D (only the previous package has it)
    funding: str | None
    # (body, system, validated file, quarantine file or None) of the day each feed's data comes from
    units: tuple[tuple[str, str, Path, Path | None], ...] = ()


@dataclass
class ConsolidationStats:
    """Counts of the consolidation, for quality.json: no personal data."""

    rows: dict[str, int] = field(default_factory=dict)  # category -> rows in records.parquet
    conflicts: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> field -> rows
    kept: dict[str, int] = field(default_factory=dict)  # category -> rows kept from the previous package
    kept_by_body: dict[tuple[str, str], int] = field(default_factory=dict)  # (category, body) -> rows
    used_by_unit: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (body, system, category) -> rows
    changes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("added", "removed", "changed"), 0))
    ranges: int = 0

    def add(self, into: dict[Any, int], key: Any, n: int) -> None:
        """Add ``n`` to ``into[key]``."""
        into[key] = into.get(key, 0) + int(n or 0)


# The consolidation's DuckDB is the pipeline's one opener (joins, aggregates and sorts beyond the
# limit spill to a private folder), under the name the package build knows.
open_duckdb = spilling_duckdb


def consolidate(
    con: duckdb.DuckDBPyConnection,
    categories: Sequence[CategorySources],
    previous_records: Path | None,
    *,
    records: RowGroupWriter | BackgroundWriter,
    changes: RowGroupWriter | BackgroundWriter,
    partition_rows: int,
    check: Callable[[pa.Table], None] = lambda table: None,
) -> ConsolidationStats:
    """Write records and changes, category by category in code order, a range of IINs at a time.

    ``categories`` lists every category of the edition and every category of the
    previous package (whose rows are then all removed). ``check`` sees each range's
    records before they are written (the package suite's row rules).
    """
    from concurrent.futures import ThreadPoolExecutor

    from osms.core.iin import prefix_ranges

    stats = ConsolidationStats()
    prev = str(previous_records) if previous_records is not None else None
    ranges = []
    for cat in sorted(categories, key=lambda c: c.category):
        stats.conflicts.setdefault(cat.category, dict.fromkeys(CONFLICT_FIELDS, 0))
        counts = _prefix_counts(con, cat, prev)
        ranges += [(cat, lo, hi) for lo, hi in prefix_ranges(counts, partition_rows)] if counts else []
    stats.ranges = len(ranges)
    # The next range's records are read and sorted by DuckDB (its own connection, in a thread)
    # while this one is merged in numpy: two ranges in memory at most.
    reader = con.cursor()
    quarantined_for = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read range") as pool:
        upcoming = pool.submit(_read_range, reader, *ranges[0]) if ranges else None
        for i, (cat, lo, hi) in enumerate(ranges):
            assert upcoming is not None
            src = upcoming.result()
            upcoming = pool.submit(_read_range, reader, *ranges[i + 1]) if i + 1 < len(ranges) else None
            if quarantined_for != cat.category:
                _quarantined_sources(con, cat, prev is not None)
                quarantined_for = cat.category
            part = _consolidate_range(con, cat, prev, lo, hi, src, stats)
            del src
            check(part)
            changed = _changes(con, part, prev is not None)
            for kind, n in zip(*_value_counts(changed.column("change")), strict=True):
                stats.add(stats.changes, kind, n)
            stats.add(stats.rows, cat.category, part.num_rows)
            records.write(part)
            changes.write(changed)
            del part, changed
    reader.close()
    for table in ("osms_prev", "osms_kept", "osms_quarantined"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return stats


def _value_counts(column: pa.ChunkedArray) -> tuple[list[Any], list[int]]:
    import pyarrow.compute as pc

    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


# --------------------------------------------------------------------------- one range


def _prefix_counts(con: duckdb.DuckDBPyConnection, cat: CategorySources, prev: str | None) -> dict[str | None, int]:
    """Rows per IIN prefix of the category: its sources' and the previous package's."""
    selects, params = [], []
    for _, system, validated, _ in cat.units:
        selects.append("SELECT substr(CAST(iin AS VARCHAR), 1, 3) AS p FROM read_parquet(?) WHERE system = ?")
        params += [str(validated), system]
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
    for body, system, _, quarantine in cat.units if needed else ():
        if quarantine is not None and quarantine.is_file():
            selects.append("SELECT ? || '/' || CAST(system AS VARCHAR) || '/' || CAST(record_id AS VARCHAR) AS source"
                           " FROM read_parquet(?) WHERE system = ? AND record_id IS NOT NULL")
            params += [body, str(quarantine), system]
    sql = " UNION ALL ".join(selects) if selects else "SELECT NULL::VARCHAR AS source WHERE false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE osms_quarantined AS SELECT DISTINCT source FROM ({sql})", params)


def _read_range(con: duckdb.DuckDBPyConnection, cat: CategorySources, lo: str | None, hi: str | None) -> pa.Table:
    """The source records of the category's units with IINs in [lo, hi), sorted by (iin, source)."""
    import pyarrow as pa

    where, range_params = iin_range_sql(lo, hi)
    cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in _SOURCE_COLUMNS)
    selects, params = [], []
    for body, system, validated, _ in cat.units:
        selects.append(f"SELECT ? AS body, {cols} FROM read_parquet(?) WHERE system = ? AND {where}")
        params += [body, str(validated), system, *range_params]
    if not selects:
        return pa.schema([("body", pa.string()), *[(c, pa.date32() if t == "DATE" else pa.string())
                                                   for c, t in _SOURCE_COLUMNS], ("source", pa.string())]).empty_table()
    # streamed out of DuckDB a batch at a time: its sort spills, and the result is held in Arrow only
    reader = con.sql(f"SELECT *, body || '/' || system || '/' || record_id AS source"
                     f" FROM ({' UNION ALL '.join(selects)}) ORDER BY iin, source",
                     params=params).to_arrow_reader(_BATCH_ROWS)
    return pa.Table.from_batches(list(reader), schema=reader.schema)


def _consolidate_range(con: duckdb.DuckDBPyConnection, cat: CategorySources, prev: str | None,
                       lo: str | None, hi: str | None, src: pa.Table, stats: ConsolidationStats) -> pa.Table:
    """The category's package rows with IINs in [lo, hi) from their sorted sources (``osms_prev``: the previous
    package's rows of the range)."""
    import pyarrow as pa

    where, range_params = iin_range_sql(lo, hi)
    import pyarrow.compute as pc

    feed_of = pc.binary_join_element_wise(src.column("body"), src.column("system"), "/")
    for key, n in zip(*_value_counts(feed_of), strict=True):
        body, system = key.split("/", 1)
        stats.add(stats.used_by_unit, (body, system, cat.category), n)
    merged, conflicts = merge_sources(src)
    del src
    for f, n in conflicts.items():
        stats.add(stats.conflicts[cat.category], f, n)

    # Per-record protection: a previous row whose source record is quarantined now stays,
    # unless the person is present anyway.
    if prev is not None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE osms_prev AS SELECT * FROM read_parquet(?)"
                    f" WHERE category = ? AND {where}", [prev, cat.category, *range_params])
        con.register("osms_merged", merged.select(["iin"]))
        con.execute("""
            CREATE OR REPLACE TEMP TABLE osms_kept AS
            SELECT DISTINCT p.iin, split_part(q.source, '/', 1) AS body
            FROM (SELECT iin, unnest(sources) AS source FROM osms_prev) p
            JOIN osms_quarantined q ON p.source = q.source
            WHERE NOT EXISTS (SELECT 1 FROM osms_merged m WHERE m.iin = p.iin)
        """)
        con.unregister("osms_merged")
        kept = con.sql(f"""
            SELECT p.iin, {", ".join("p." + f for f in PERSON_FIELDS)}, p.period_start, p.period_end,
              p.bodies, p.systems, p.sources
            FROM osms_prev p SEMI JOIN (SELECT DISTINCT iin FROM osms_kept) k ON p.iin = k.iin
        """).to_arrow_table()
        for body, n in con.execute("SELECT body, count(*) FROM osms_kept GROUP BY body").fetchall():
            stats.add(stats.kept_by_body, (cat.category, body), n)
        stats.add(stats.kept, cat.category, kept.num_rows)
        if kept.num_rows:
            merged = pa.concat_tables([merged, kept.cast(merged.schema)]).sort_by("iin")
    schema = records_schema()
    if cat.decree_row is None:  # not in force on D (only the previous package has it): no row goes in
        return schema.empty_table()
    n = merged.num_rows
    constants = {"category": pa.repeat(pa.scalar(cat.category), n),
                 "decree_row": pa.repeat(pa.scalar(cat.decree_row, pa.int32()), n),
                 "funding": pa.repeat(pa.scalar(cat.funding), n)}
    return pa.table({f.name: constants[f.name] if f.name in constants else merged.column(f.name) for f in schema},
                    schema=schema)


def merge_sources(src: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """One row per IIN from source records sorted by (iin, source), by the conflict rule; and conflicts per field.

    A person reported once is taken as reported. For a person reported more often,
    each person field takes the value all its records agree on; where they disagree
    on the birth date or the sex, the value the IIN's digits encode wins, if a record
    gives it; otherwise the value the most records give (a missing value is not a vote;
    ties go to the smallest);
    ``period_start`` is the earliest, ``period_end`` empty if any record leaves it
    open, else the latest; bodies, systems and sources are the sorted distinct
    values. Vectorised over the groups with numpy: only the groups whose records
    disagree on a field are voted on one by one. Records without an IIN stay
    one row each.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = src.num_rows
    out_schema = pa.schema([("iin", pa.string()), *[(f, pa.date32() if f == "birth_date" else pa.string())
                                                    for f in PERSON_FIELDS],
                            ("period_start", pa.date32()), ("period_end", pa.date32()),
                            ("bodies", pa.list_(pa.string())), ("systems", pa.list_(pa.string())),
                            ("sources", pa.list_(pa.string()))])
    conflicts = dict.fromkeys(CONFLICT_FIELDS, 0)
    if n == 0:
        return out_schema.empty_table(), conflicts
    src = src.combine_chunks()
    iin = src.column("iin").chunk(0) if src.column("iin").num_chunks else pa.array([], pa.string())
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = ~pc.fill_null(pc.equal(iin.slice(1), iin.slice(0, n - 1)), False).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n))
    columns: dict[str, Any] = {"iin": iin.take(pa.array(starts))}

    for f in PERSON_FIELDS:
        prefer = _iin_says(columns["iin"], f) if f in ("birth_date", "sex") else None
        values, conflicted = _field(src.column(f).chunk(0), starts, counts, prefer)
        columns[f] = values
        conflicts[f] = int(conflicted)
    start_days = _days(src.column("period_start").chunk(0))
    end_days = _days(src.column("period_end").chunk(0))
    lo_s, hi_s, has_s, _ = _min_max(start_days, starts)
    columns["period_start"] = _dates(lo_s, ~has_s)
    conflicts["period_start"] = int((has_s & (lo_s != hi_s)).sum())
    lo_e, hi_e, has_e, open_e = _min_max(end_days, starts)
    columns["period_end"] = _dates(hi_e, open_e | ~has_e)
    conflicts["period_end"] = int(((open_e & has_e) | (has_e & (lo_e != hi_e))).sum())

    single = counts == 1
    # sources are in order within a person (the sort); so are bodies, as each source begins with its body
    columns["bodies"] = _distinct_lists(src.column("body").chunk(0), new, single, starts)
    columns["systems"] = _distinct_lists(src.column("system").chunk(0), new, single, starts, ordered=False)
    columns["sources"] = _distinct_lists(src.column("source").chunk(0), new, single, starts)
    return pa.table(columns, schema=out_schema), conflicts


_BIG = 2**62  # a missing value: larger than any dictionary code or day number
_BATCH_ROWS = 100_000


def _days(dates: pa.Array) -> np.ndarray:
    """Days since the epoch, -1 where missing (never a real date here: the sentinel is checked by validity)."""
    import numpy as np
    import pyarrow as pa

    days = dates.cast(pa.int32()).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(days), _BIG, days).astype(np.int64) if days.dtype.kind == "f" \
        else days.astype(np.int64)


def _min_max(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group: (min, max) of the present values, whether any is present, whether any is missing."""
    import numpy as np

    missing = values == _BIG
    lo = np.minimum.reduceat(values, starts)
    hi = np.maximum.reduceat(np.where(missing, -_BIG, values), starts)
    return lo, hi, hi != -_BIG, np.logical_or.reduceat(missing, starts)


def _dates(days: np.ndarray, null: np.ndarray) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    return pa.array(np.where(null, 0, days).astype(np.int32), pa.int32(), mask=null).cast(pa.date32())


def _iin_says(iins: pa.Array, field_name: str) -> Callable[[np.ndarray], list[Any]]:
    """For groups (by index), the value of ``field_name`` their IIN encodes (a date or "M"/"F"; None if none)."""
    def says(groups: np.ndarray) -> list[Any]:
        import numpy as np
        import pyarrow as pa

        from osms.core import iin

        result = iin.check(iins.take(pa.array(groups, pa.int64())))
        if field_name == "birth_date":
            births = result.birth_date
            return [None if np.isnat(b) else b.astype("datetime64[D]").astype(np.int64).item() for b in births]
        return [s or None for s in result.sex.tolist()]

    return says


def _field(values: pa.Array, starts: np.ndarray, counts: np.ndarray,
           prefer: Callable[[np.ndarray], list[Any]] | None = None) -> tuple[pa.Array, int]:
    """One person field per group (agreed value, else the IIN's, else the vote); and how many groups disagreed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_date32(values.type):
        keys, dictionary = _days(values), None
    else:
        encoded = pc.dictionary_encode(values)
        dictionary = encoded.dictionary
        keys = encoded.indices.cast(pa.int64()).fill_null(_BIG).to_numpy(zero_copy_only=False)
    lo, hi, has, _ = _min_max(keys, starts)
    chosen = np.where(has, lo, _BIG)
    disagree = np.flatnonzero(has & (lo != hi))
    wanted: list[Any] = [None] * len(disagree)
    if prefer is not None and len(disagree):
        said = prefer(disagree)
        if dictionary is None:
            wanted = said
        else:
            code = {v: i for i, v in enumerate(dictionary.to_pylist())}
            wanted = [code.get(v) for v in said]
    for g, iin_value in zip(disagree.tolist(), wanted, strict=True):  # rare: a person's records disagree
        part = keys[starts[g]:starts[g] + counts[g]]
        part = part[part != _BIG]
        if iin_value is not None and (part == iin_value).any():  # the value the IIN encodes wins
            chosen[g] = iin_value
            continue
        kinds, times = np.unique(part, return_counts=True)
        best = kinds[times == times.max()]
        if len(best) > 1:  # a tie: the smallest value wins
            best = [min(best.tolist(), key=lambda k: dictionary[k].as_py() if dictionary is not None else k)]
        chosen[g] = best[0]
    missing = chosen == _BIG
    if dictionary is None:
        return _dates(chosen, missing), len(disagree)
    if len(dictionary) == 0:  # no record gives a value
        return pa.nulls(len(chosen), dictionary.type), len(disagree)
    picked = dictionary.take(pa.array(np.where(missing, 0, chosen), pa.int64()))
    return pc.if_else(pa.array(missing), pa.nulls(len(chosen), dictionary.type), picked), len(disagree)


def _distinct_lists(values: pa.Array, new: np.ndarray, single: np.ndarray, starts: np.ndarray, *,
                    ordered: bool = True) -> pa.Array:
    """Per group (rows from a ``new`` row on), its sorted distinct present values.

    ``ordered``: the values are already sorted within each group, so a value is kept
    where it differs from the one before it. A lone record's list is exactly its value,
    also when missing (what DuckDB's ``[x]`` gives; ``list_distinct`` drops missing values).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(values)
    if not ordered:  # sort each group's values: by group, then by the value's rank among all values
        encoded = pc.dictionary_encode(values)
        names = encoded.dictionary
        rank = np.empty(len(names), dtype=np.int64)
        rank[np.asarray(pc.sort_indices(names))] = np.arange(len(names))
        codes = encoded.indices.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        key = np.cumsum(new) * (len(names) + 1) + np.where(codes >= 0, rank[np.maximum(codes, 0)], len(names))
        order = np.argsort(key, kind="stable")
        values = values.take(pa.array(order))
    present = values.is_valid().to_numpy(zero_copy_only=False)
    keep = present & new
    if n > 1:
        keep[1:] |= present[1:] & pc.fill_null(pc.not_equal(values.slice(1), values.slice(0, n - 1)), True).to_numpy(
            zero_copy_only=False)
    keep[starts[single]] = True  # a lone record: [its value], missing or not
    group = np.cumsum(new) - 1
    lengths = np.bincount(group[keep], minlength=len(starts))
    offsets = np.zeros(len(starts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.filter(pa.array(keep)))


def _changes(con: duckdb.DuckDBPyConnection, records: pa.Table, has_previous: bool) -> pa.Table:
    """What the range's records change against the previous package's rows (``osms_prev``), in IIN order."""
    con.register("osms_records", records)
    prev = "osms_prev" if has_previous else "(SELECT * FROM osms_records WHERE false)"
    differs = ", ".join(f"CASE WHEN r.{f} IS DISTINCT FROM p.{f} THEN '{f}' END" for f in CHANGE_FIELDS)
    try:
        return con.sql(f"""
            SELECT * FROM (
              SELECT
                CASE WHEN p.iin IS NULL THEN 'added' WHEN r.iin IS NULL THEN 'removed' ELSE 'changed' END AS change,
                coalesce(r.iin, p.iin) AS iin,
                coalesce(r.category, p.category) AS category,
                CASE WHEN r.iin IS NOT NULL AND p.iin IS NOT NULL
                  THEN list_filter([{differs}], lambda x: x IS NOT NULL) END AS fields
              FROM osms_records r FULL OUTER JOIN {prev} p ON r.iin = p.iin
            ) WHERE change <> 'changed' OR len(fields) > 0
            ORDER BY iin
        """).to_arrow_table()
    finally:
        con.unregister("osms_records")
