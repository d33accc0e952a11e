"""The one helper every category goes through: run its GX suite over a body's
landing data for a date, split the rows into validated and quarantined, count
the warnings and decide whether the category is published or held back.

Great Expectations decides: every row-level rule is an expectation of
``expectations/<category>.json`` run with ``result_format: COMPLETE``, and a
row is quarantined with the rules whose ``unexpected_index_list`` holds it.
Nothing here restates a rule. The only row-level decision taken outside GX is
exact duplicates (a repeated identical row keeps one copy), which must happen
before GX so that the copy is not reported as a broken ``record_id_unique``.

Memory is bounded by the task's budget (:mod:`osms.core.budget`), not by the feed:

- exact duplicates and the uniqueness rules, which compare rows with each other,
  are found by a hash pass over the whole feed in DuckDB (spilling beyond its
  limit) and GX runs over the candidates only (:mod:`osms.quality.uniqueness`);
- the feed is then read one range of IINs at a time (about a million rows at
  2 GiB, ranges cut from the hash pass's histogram of IIN prefixes), each range
  validated by one GX run of the row rules, split, sorted and appended, so the
  validated and quarantine files come out sorted by (IIN, record id, system)
  without a sort of the whole feed;
- a feed that fits in one chunk is read once and every rule runs in its GX run.

GX gets its frames through :mod:`osms.quality.frames`, typed so that its pandas
metrics stay vectorised. The day's Data Docs are rendered once per day, after
every body has reported (``osms.quality.docs.render_day``), not by each task.

pandas, pyarrow and GX are imported inside functions: DAG files import this
module at parse time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osms.core import layout
from osms.core.budget import task_budget
from osms.core.files import write_bytes_atomic
from osms.quality.runner import MIN_ROWS_TO_HOLD, RuleResult, mostly_success, rule_results, run_expectations
from osms.quality.scrub import scrub_validation_result
from osms.quality.suites import load_suite_dict, resolve_parameters, suite_parameters
from osms.core.registry import default_registry

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pyarrow as pa

    from osms.core.registry import EditionCategory

__all__ = ["CategoryOutcome", "DUPLICATE_RULE", "MIN_ROWS_TO_HOLD", "RuleResult", "validate_category",
           "write_feedback"]

log = logging.getLogger(__name__)

Verdict = Literal["published", "partial", "held_back"]
LINEAGE_COLUMNS = ("body", "system", "category", "as_of")
SORT_KEY = (("iin", "ascending"), ("record_id", "ascending"), ("system", "ascending"))
DUPLICATE_RULE = "duplicate_record"
# Rows per row group of the validated and quarantine files: the package reads ranges of
# IINs from them, and Parquet's row-group statistics let it skip the rest.
OUTPUT_ROW_GROUP_ROWS = 100_000
_POS = "_osms_position"


@dataclass(frozen=True)
class CategoryOutcome:
    """What validating one (body, category) for a date gave: counts, paths, verdict."""

    body: str
    category: str
    as_of: dt.date
    verdict: Verdict
    reason: str | None
    rows_in: int
    rows_published: int
    rows_quarantined: int
    quarantined_by_rule: dict[str, int]
    warnings_by_rule: dict[str, int]
    validated_path: Path | None
    quarantine_path: Path | None
    report_path: Path | None = None
    # system -> {"status", "reason", "rows_in", "rows_published", "rows_quarantined", "quarantined_by_rule",
    #            "warnings_by_rule"}: every verdict is a feed's
    feeds: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, counts and paths only: for status files and XCom."""
        out = dataclasses.asdict(self)
        out["as_of"] = self.as_of.isoformat()
        for key in ("validated_path", "quarantine_path", "report_path"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


# --------------------------------------------------------------------------- the helper


def validate_category(
    *,
    body: str,
    category: str,
    as_of: dt.date,
    landing_paths: Sequence[Path],
    data_dir: Path,
    trailing_counts: Sequence[int] | Mapping[str, Sequence[int]] = (),
    chunk_rows: int | None = None,
    expectations_dir: Path | None = None,
) -> CategoryOutcome:
    """Validate a body's landing data for one category and date; write validated, quarantine and report files.

    ``landing_paths`` are the feeds whose extract succeeded, one file each
    (``landing/D/<body>/<system>/<category>.parquet``). Every verdict is a feed's: a feed
    is held back when a rule is broken beyond its threshold in that feed, or its volume
    fell under its trailing median (``trailing_counts``: per system, the feed's rows on
    earlier days; a plain list is the category's, checked against all its rows).
    """
    import numpy as np
    import pyarrow as pa

    from osms.core.files import parquet_writer_atomic
    from osms.core.iin import prefix_ranges
    from osms.quality.frames import columns_used, to_frame
    from osms.quality.uniqueness import find_table_wide, is_table_wide

    budget = task_budget()
    chunk_rows = int(chunk_rows or budget.validation_chunk_rows)
    edition = default_registry().edition_on(as_of)
    cat = edition.category(category)
    suite = load_suite_dict(category, expectations_dir)
    parameters = suite_parameters(suite, as_of, edition.code)
    expectations: list[dict[str, Any]] = suite["expectations"]
    feed = _Landing(landing_paths, cat, body=body, as_of=as_of)
    rows_in = feed.rows
    record_columns = [c.name for c in cat.record_columns]

    def gx(part: list[dict[str, Any]], table: pa.Table, positions: np.ndarray) -> dict[str, Any]:
        """GX's result of ``part`` over ``table``, its unexpected indices turned into feed positions."""
        result = run_expectations(suite["name"], part, to_frame(table, columns_used(part)), parameters)
        for res in result["results"]:
            body = res.get("result") or {}
            if body.get("unexpected_index_list"):
                body["unexpected_index_list"] = positions[np.asarray(body["unexpected_index_list"], np.int64)].tolist()
        return result

    # what a killed validation of this (body, category, D) left: temporary files, its work folder
    from osms.core.files import remove_temporaries

    for leftover in (layout.validated(data_dir, as_of, body, category), layout.quarantine(data_dir, as_of, body,
                                                                                          category)):
        remove_temporaries(leftover)
    for old in (data_dir / "tmp").glob(f"validate-{as_of.isoformat()}-{body}-{category}-*"):
        shutil.rmtree(old, ignore_errors=True)

    gx_runs: list[dict[str, Any]] = []
    one_chunk = rows_in <= chunk_rows
    table_wide = [e for e in expectations if is_table_wide(e)]
    row_rules = expectations if one_chunk else [e for e in expectations if not is_table_wide(e)]
    work = data_dir / "tmp" / f"validate-{as_of.isoformat()}-{body}-{category}-{os.getpid()}"
    timer = _Timer()
    try:
        with _duckdb(work, budget.duckdb_limit) as con:
            whole: pa.Table | None = None
            if one_chunk:
                whole = feed.read(con)
                copies = _exact_copies(whole, [*record_columns, "system"])
                wide = None
                ranges: list[tuple[str | None, str | None]] = [(None, None)]
            else:
                with timer("duplicates and uniqueness"):
                    wide = find_table_wide(feed, record_columns=record_columns, expectations=table_wide,
                                           chunk_rows=chunk_rows, con=con, validate=gx)
                copies = wide.copies
                gx_runs += [scrub_validation_result({"rows": "candidates", **run}) for run in wide.gx_runs]
                ranges = prefix_ranges(wide.prefix_counts, chunk_rows)

            kept_rows = rows_in - len(copies)
            results = rule_results(expectations, kept_rows)
            if wide is not None:
                for e in table_wide:
                    r = results[e["meta"]["rule"]]
                    r.chunks, r.element_count, r.missing_count = 1, kept_rows, wide.missing.get(r.rule, 0)
                    r.unexpected_count = len(wide.unexpected.get(r.rule, ()))
                    r.exception = wide.exceptions.get(r.rule)
                    r.success = r.exception is None and mostly_success(kept_rows - r.missing_count,
                                                                       r.unexpected_count, r.mostly)
            critical = sorted(r.rule for r in results.values() if r.critical)
            warning_rules = sorted(r.rule for r in results.values() if not r.critical)
            # every count also per feed (by file): verdicts are per feed
            tally = _FeedTally(feed, critical, warning_rules, copies)
            if wide is not None:
                for rule, where in wide.unexpected.items():
                    tally.broken(rule, where)

            schema = feed.schema
            q_schema = schema.append(pa.field("rules", pa.list_(pa.string())))
            with parquet_writer_atomic(layout.validated(data_dir, as_of, body, category), schema,
                                       row_group_rows=OUTPUT_ROW_GROUP_ROWS) as validated, \
                    parquet_writer_atomic(layout.quarantine(data_dir, as_of, body, category), q_schema,
                                          row_group_rows=OUTPUT_ROW_GROUP_ROWS) as quarantine:
                # One range of IINs at a time, in order: each range is validated, sorted and written
                # whole, so the files come out sorted without a sort of the whole feed.
                for lo, hi in ranges:
                    with timer("read"):
                        chunk, positions = (whole, np.arange(rows_in, dtype=np.int64)) if whole is not None \
                            else feed.read_range(con, lo, hi)
                    whole = None
                    copy = _member(positions, copies)
                    kept, kept_pos = chunk.filter(pa.array(~copy)), positions[~copy]
                    with timer("gx"):
                        run = gx(row_rules, kept, kept_pos) if kept.num_rows else {"results": []}
                    if kept.num_rows:
                        gx_runs.append(scrub_validation_result({"rows": [lo, hi], **run}))
                    broken: dict[str, np.ndarray] = {}
                    for res in run["results"]:
                        r = results[res["expectation_config"]["meta"]["rule"]]
                        r.add(res)
                        broken[r.rule] = np.sort(np.asarray(r.unexpected_index, dtype=np.int64))
                        r.unexpected_index = []  # this range's rows are settled below: nothing accumulates
                        tally.broken(r.rule, broken[r.rule])
                    if wide is not None:
                        for rule, where in wide.unexpected.items():
                            broken[rule] = where[_member(where, kept_pos)]
                    bad = np.zeros(kept.num_rows, dtype=bool)
                    rules_of: dict[int, list[str]] = {}
                    for rule in critical:
                        local = np.searchsorted(kept_pos, broken.get(rule, np.zeros(0, np.int64)))
                        bad[local] = True
                        tally.quarantined(rule, kept_pos[local])
                        for i in local.tolist():
                            rules_of.setdefault(i, []).append(rule)
                    for rule in warning_rules:  # a warning counts where the row is published
                        local = np.searchsorted(kept_pos, broken.get(rule, np.zeros(0, np.int64)))
                        tally.warned(rule, kept_pos[local][~bad[local]])
                    tally.published(kept_pos[~bad])
                    tally.rejected(kept_pos[bad])
                    with timer("sort and write"):
                        validated.write(kept.filter(pa.array(~bad)).sort_by(list(SORT_KEY)))
                        bad_at = np.flatnonzero(bad)
                        quarantined = [_with_rules(kept.take(pa.array(bad_at)), [rules_of[i] for i in bad_at.tolist()])]
                        if copy.any():
                            quarantined.append(_with_rules(chunk.filter(pa.array(copy)),
                                                           [[DUPLICATE_RULE]] * int(copy.sum())))
                        quarantine.write(pa.concat_tables(quarantined).sort_by(list(SORT_KEY)))
                    del chunk, kept, run
                    pa.default_memory_pool().release_unused()  # a range's buffers go back before the next
        log.info("%s/%s, %s rows in %d range(s): %s", body, category, f"{rows_in:,}", len(ranges), timer)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rule_list = list(results.values())
    share = suite.get("meta", {}).get("volume_minimum_share", 0.8)
    feeds = tally.feeds(results, trailing_counts, share)
    verdicts = [f["status"] for f in feeds.values()]
    verdict: Verdict = "published" if all(v == "published" for v in verdicts) else (
        "partial" if any(v == "published" for v in verdicts) else "held_back")
    if not verdicts:
        verdict = "held_back"
    reasons = [f"{system}: {f['reason']}" if len(feeds) > 1 else f["reason"]
               for system, f in feeds.items() if f["reason"]]
    if not isinstance(trailing_counts, Mapping):
        # the category's own history (a single list): the whole category is held back on a volume drop
        volume = _volume_reason(rows_in, [int(c) for c in trailing_counts], share)
        if volume:
            verdict = "held_back"
            reasons.append(volume)
            for f in feeds.values():
                f["status"], f["reason"] = "held_back", "; ".join(filter(None, [f["reason"], volume]))
    outcome = CategoryOutcome(
        body=body,
        category=category,
        as_of=as_of,
        verdict=verdict,
        reason="; ".join(reasons) or None,
        rows_in=rows_in,
        rows_published=validated.rows,
        rows_quarantined=quarantine.rows,
        quarantined_by_rule=tally.total_quarantined(),
        warnings_by_rule=tally.total_warnings(),
        validated_path=layout.validated(data_dir, as_of, body, category),
        quarantine_path=layout.quarantine(data_dir, as_of, body, category),
        feeds=feeds,
    )
    assert outcome.rows_in == outcome.rows_published + outcome.rows_quarantined, "a row was lost"
    report_path = _write_report(outcome, rule_list, gx_runs, suite, parameters, edition.code, data_dir)
    return dataclasses.replace(outcome, report_path=report_path)


def write_feedback(body: str, as_of: dt.date, data_dir: Path) -> Path:
    """Write ``feedback/<D>/<body>.csv``: one line per quarantined row of the body (record_id, system, category, rules).

    No IIN and no name: the file goes back to the body so that its sources can
    fix their records, identified by their own ids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    day = as_of.isoformat()
    columns = ["record_id", "system", "category", "rules"]
    parts = []
    for path in sorted((data_dir / "quarantine" / day / body).glob("*.parquet")):
        t = pq.read_table(path, columns=columns)
        rules = t.column("rules")
        if pa.types.is_list(rules.type) or pa.types.is_large_list(rules.type):
            rules = pc.binary_join(rules, ";")
        parts.append(t.set_column(3, "rules", rules.cast(pa.string())))
    schema = pa.schema([(c, pa.string()) for c in columns])
    feedback = pa.concat_tables(parts) if parts else schema.empty_table()
    feedback = feedback.select(columns).sort_by([("category", "ascending"), ("system", "ascending"), ("record_id", "ascending")])
    buf = io.BytesIO()
    pcsv.write_csv(feedback, buf)
    return write_bytes_atomic(buf.getvalue(), data_dir / "feedback" / day / f"{body}.csv")


# --------------------------------------------------------------------------- reading


def _arrow_type(column_type: str) -> pa.DataType:
    """The type a landing column is read as (wider than the landing file's: what GX compares)."""
    import pyarrow as pa

    return {
        "string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"), "int": pa.int64(), "bool": pa.bool_(),
    }[column_type]


class _Landing:
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
        """(rows whose IIN is in [lo, hi), their positions), in position order; missing IINs belong to the last range."""
        import numpy as np
        import pyarrow as pa

        parts, positions = [], []
        for path, start, present, _ in self._files:
            where, params = [], []
            if "iin" in present:
                if lo is not None:
                    where.append("iin >= ?")
                    params.append(lo)
                if hi is not None:
                    where.append("iin < ?")
                    params.append(hi)
                if where and hi is None:
                    where = [f"({' AND '.join(where)} OR iin IS NULL)"]
            elif hi is not None:
                continue  # no IIN at all: every row is missing one, so it belongs to the last range
            sql = (f"SELECT * EXCLUDE (file_row_number), file_row_number AS {_POS}"
                   f" FROM read_parquet(?, file_row_number = true)" + (f" WHERE {' AND '.join(where)}" if where else ""))
            rows = con.sql(sql, params=[str(path), *params]).to_arrow_table()
            rows = rows.sort_by(_POS)
            positions.append(rows.column(_POS).to_numpy().astype(np.int64) + start)
            parts.append(self.conform(rows.drop_columns([_POS]), path))
        if not parts:
            return self.schema.empty_table(), np.zeros(0, np.int64)
        return pa.concat_tables(parts).combine_chunks(), np.concatenate(positions)


def _member(positions: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which ``positions`` are in ``sorted_set`` (both sorted int64)."""
    import numpy as np

    if not len(sorted_set):
        return np.zeros(len(positions), dtype=bool)
    at = np.searchsorted(sorted_set, positions)
    at[at == len(sorted_set)] = 0
    return sorted_set[at] == positions


def _exact_copies(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Positions of the rows that repeat an earlier row in every column (the first copy is kept)."""
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    if n == 0:
        return np.zeros(0, np.int64)
    keyed = table.select(columns).append_column("_pos", pa.array(np.arange(n, dtype=np.int64)))
    firsts = keyed.group_by(columns, use_threads=False).aggregate([("_pos", "min")]).column("_pos_min")
    first = np.zeros(n, dtype=bool)
    first[firsts.to_numpy()] = True
    return np.flatnonzero(~first).astype(np.int64)


def _with_rules(table: pa.Table, rules: list[list[str]]) -> pa.Table:
    import pyarrow as pa

    return table.append_column("rules", pa.array(rules, pa.list_(pa.string())))


class _Timer:
    """Seconds spent per step of the chunk loop, for one log line (no data, only step names)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t0

    def each(self, items: Iterator[Any], step: str) -> Iterator[Any]:
        """The items of ``items``, the time spent producing them counted under ``step``."""
        while True:
            with self(step):
                item = next(items, None)
            if item is None:
                return
            yield item

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Log how long a step took (its name only)."""
    t0 = time.perf_counter()
    yield
    log.info("%s took %.1f s", name, time.perf_counter() - t0)


@contextmanager
def _duckdb(work: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB for the hash pass, spilling to ``work`` beyond the task's share (0700, files 0600)."""
    from osms.core.files import private_dir
    from osms.core.spill import spilling_duckdb

    private_dir(work)
    with spilling_duckdb(work / "duckdb", memory_limit) as con:
        yield con


# --------------------------------------------------------------------------- verdict and report


def _held_back_reason(
    results: list[RuleResult], rows_in: int, trailing_counts: Sequence[int], minimum_share: float
) -> str | None:
    """Why a feed is held back (None: it is not): a rule broken systematically, or its volume fell."""
    reasons = []
    for r in sorted(results, key=lambda r: r.rule):
        if not r.critical or (r.exception is None and not r.holds_back):
            continue
        if r.exception is not None:
            reasons.append(f"{r.rule}: could not be evaluated (see the GX report)")
        else:
            reasons.append(
                f"{r.rule}: {r.unexpected_percent:.1f} % of rows failed (threshold {100 * (1 - r.mostly):g} %)"
            )
    volume = _volume_reason(rows_in, [int(c) for c in trailing_counts], minimum_share)
    if volume:
        reasons.append(volume)
    return "; ".join(reasons) or None


def _volume_reason(rows_in: int, counts: list[int], minimum_share: float) -> str | None:
    """A volume under ``minimum_share`` of the trailing median (three days of history at least), in words."""
    if rows_in == 0 and any(counts):
        return f"no rows, although the previous days had up to {max(counts):,}"
    if len(counts) >= 3:
        median = statistics.median(counts)
        if median > 0 and rows_in < minimum_share * median:
            return (f"volume {100 * rows_in / median:.0f} % of trailing median {median:,.0f}"
                    f" (minimum {100 * minimum_share:.0f} %)")
    return None


class _FeedTally:
    """Counts of one validation kept per feed (each landing file is one feed), by row position."""

    def __init__(self, feed: _Landing, critical: list[str], warnings: list[str], copies: np.ndarray) -> None:
        import numpy as np

        files = feed.files()
        self.systems = [lineage["system"] for _, _, _, lineage in files]
        self.starts = np.array([start for _, start, _, _ in files], dtype=np.int64)
        self.rows_in = np.diff(np.append(self.starts, feed.rows)) if files else np.zeros(0, np.int64)
        n = len(files)
        self.critical, self.warning_rules = critical, warnings
        self.copies = self._count(copies)
        self.unexpected = {r: np.zeros(n, np.int64) for r in [*critical, *warnings]}
        self.quarantined_by_rule = {r: np.zeros(n, np.int64) for r in critical}
        self.warnings_by_rule = {r: np.zeros(n, np.int64) for r in warnings}
        self.published_rows = np.zeros(n, np.int64)
        self.rejected_rows = np.zeros(n, np.int64)

    def _count(self, positions: np.ndarray) -> np.ndarray:
        import numpy as np

        if not len(self.starts):
            return np.zeros(0, np.int64)
        which = np.searchsorted(self.starts, np.asarray(positions, dtype=np.int64), side="right") - 1
        return np.bincount(which, minlength=len(self.starts)).astype(np.int64)

    def broken(self, rule: str, positions: np.ndarray) -> None:
        """Rows (of any feed) that broke ``rule``."""
        if rule in self.unexpected:
            self.unexpected[rule] += self._count(positions)

    def quarantined(self, rule: str, positions: np.ndarray) -> None:
        """Rows quarantined for ``rule``."""
        self.quarantined_by_rule[rule] += self._count(positions)

    def warned(self, rule: str, positions: np.ndarray) -> None:
        """Published rows that broke warning ``rule``."""
        self.warnings_by_rule[rule] += self._count(positions)

    def published(self, positions: np.ndarray) -> None:
        """Rows written to the validated file."""
        self.published_rows += self._count(positions)

    def rejected(self, positions: np.ndarray) -> None:
        """Rows quarantined for a rule (copies aside)."""
        self.rejected_rows += self._count(positions)

    def total_quarantined(self) -> dict[str, int]:
        """Quarantined rows per rule over every feed (``duplicate_record`` for exact copies), non-zero only."""
        out = {r: int(v.sum()) for r, v in self.quarantined_by_rule.items()}
        out[DUPLICATE_RULE] = int(self.copies.sum())
        return {k: v for k, v in sorted(out.items()) if v}

    def total_warnings(self) -> dict[str, int]:
        """Published rows per warning rule, over every feed."""
        return {r: int(v.sum()) for r, v in sorted(self.warnings_by_rule.items())}

    def feeds(self, results: dict[str, RuleResult], trailing: Sequence[int] | Mapping[str, Sequence[int]],
              share: float) -> dict[str, dict[str, Any]]:
        """Each feed's counts and verdict: its rules' breaches judged on its own rows, its volume on its history."""
        out = {}
        for i, system in enumerate(self.systems):
            kept = int(self.rows_in[i] - self.copies[i])
            feed_results = [
                RuleResult(rule=r.rule, type=r.type, severity=r.severity, mostly=r.mostly, rows=kept,
                           unexpected_count=int(self.unexpected[r.rule][i]) if r.rule in self.unexpected else 0,
                           exception=r.exception)
                for r in results.values()
            ]
            history = trailing.get(system, ()) if isinstance(trailing, Mapping) else ()
            reason = _held_back_reason(feed_results, int(self.rows_in[i]), history, share)
            quarantined = {r: int(v[i]) for r, v in self.quarantined_by_rule.items() if v[i]}
            if self.copies[i]:
                quarantined[DUPLICATE_RULE] = int(self.copies[i])
            out[system] = {
                "status": "held_back" if reason else "published",
                "reason": reason,
                "rows_in": int(self.rows_in[i]),
                "rows_published": int(self.published_rows[i]),
                "rows_quarantined": int(self.rejected_rows[i] + self.copies[i]),
                "quarantined_by_rule": dict(sorted(quarantined.items())),
                "warnings_by_rule": {r: int(v[i]) for r, v in sorted(self.warnings_by_rule.items())},
            }
        return out


def _write_report(
    outcome: CategoryOutcome,
    results: list[RuleResult],
    gx_runs: list[dict[str, Any]],
    suite: dict[str, Any],
    parameters: dict[str, Any],
    edition: str,
    data_dir: Path,
) -> Path:
    """Store the run's GX results as counts and percentages only (Data Docs are rendered from them once a day)."""
    report = scrub_validation_result(
        {
            "schema": "osms.quality.gx/1",
            "suite": suite["name"],
            "edition": edition,
            "parameters": parameters,
            "expectations": [
                {"type": e["type"], "kwargs": resolve_parameters(e["kwargs"], parameters), "meta": e.get("meta", {}),
                 "severity": e.get("severity", "critical")}
                for e in suite["expectations"]
            ],
            "outcome": {k: v for k, v in outcome.as_dict().items() if not k.endswith("_path")},
            "results": [r.counts() for r in sorted(results, key=lambda r: r.rule)],
            "gx_runs": gx_runs,
        }
    )
    path = data_dir / "reports" / "gx" / outcome.as_of.isoformat() / outcome.body / f"{outcome.category}.json"
    write_bytes_atomic((json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), path)
    return path
