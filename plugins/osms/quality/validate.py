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
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osms.core import layout
from osms.core.files import write_bytes_atomic
from osms.quality.landing import Landing
from osms.quality.runner import MIN_ROWS_TO_HOLD, RuleResult, mostly_success, rule_results, run_expectations
from osms.quality.scrub import scrub_validation_result
from osms.quality.suites import load_suite_dict, resolve_parameters, suite_parameters
from osms.quality.tally import DUPLICATE_RULE, FeedTally, volume_reason

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pyarrow as pa

    from osms.core.files import RowGroupWriter
    from osms.core.run import Run
    from osms.quality.uniqueness import TableWide

__all__ = ["CategoryOutcome", "DUPLICATE_RULE", "MIN_ROWS_TO_HOLD", "RuleResult", "validate_category",
           "write_feedback"]

log = logging.getLogger(__name__)

Verdict = Literal["published", "partial", "held_back"]
LINEAGE_COLUMNS = ("body", "system", "category", "as_of")
SORT_KEY = (("iin", "ascending"), ("record_id", "ascending"), ("system", "ascending"))
# Rows per row group of the validated and quarantine files: the package reads ranges of
# IINs from them, and Parquet's row-group statistics let it skip the rest.
OUTPUT_ROW_GROUP_ROWS = 100_000
# A range of IINs: [lo, hi), None for open; (None, None) is the whole feed.
Range = tuple[str | None, str | None]


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
    run: Run,
    *,
    body: str,
    category: str,
    landing_paths: Sequence[Path],
    trailing_counts: Sequence[int] | Mapping[str, Sequence[int]] = (),
    chunk_rows: int | None = None,
    expectations_dir: Path | None = None,
) -> CategoryOutcome:
    """Validate a body's landing data for one category on ``run``'s day; write validated, quarantine and report files.

    ``landing_paths`` are the feeds whose extract succeeded, one file each
    (``landing/D/<body>/<system>/<category>.parquet``). Every verdict is a feed's: a feed
    is held back when a rule is broken beyond its threshold in that feed, or its volume
    fell under its trailing median (``trailing_counts``: per system, the feed's rows on
    earlier days; a plain list is the category's, checked against all its rows).
    """
    budget, data_dir, as_of = run.budget, run.root, run.day
    validation = _Validation(run, body=body, category=category, landing_paths=landing_paths,
                             chunk_rows=int(chunk_rows or budget.validation_chunk_rows),
                             expectations_dir=expectations_dir or run.expectations_dir)
    _remove_leftovers(data_dir, as_of, body, category)
    work = run.paths.scratch("validate", as_of, body, category, pid=os.getpid())
    try:
        from osms.core.spill import spilling_duckdb

        with spilling_duckdb(work / layout.SCRATCH_DUCKDB, budget.duckdb_limit) as con:
            ranges = validation.find_copies(con)
            validation.write_ranges(con, ranges)
        log.info("%s/%s, %s rows in %d range(s): %s", body, category, f"{validation.rows_in:,}", len(ranges),
                 validation.timer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return validation.outcome(trailing_counts)


def _remove_leftovers(data_dir: Path, as_of: dt.date, body: str, category: str) -> None:
    """What a killed validation of this (body, category, D) left: temporary files, its work folder."""
    from osms.core.files import remove_temporaries

    for leftover in (layout.validated(data_dir, as_of, body, category), layout.quarantine(data_dir, as_of, body,
                                                                                          category)):
        remove_temporaries(leftover)
    for old in layout.Paths(data_dir).scratches("validate", as_of, body, category):
        shutil.rmtree(old, ignore_errors=True)


class _Validation:
    """One validation of a (body, category, D), step by step: its suite and feed, and what each step found."""

    def __init__(self, run: Run, *, body: str, category: str, landing_paths: Sequence[Path], chunk_rows: int,
                 expectations_dir: Path) -> None:
        from osms.quality.uniqueness import is_table_wide

        edition, as_of = run.edition, run.day
        cat = edition.category(category)
        self.body, self.category, self.as_of, self.data_dir = body, category, as_of, run.root
        self.edition_code, self.chunk_rows = edition.code, chunk_rows
        self.suite = load_suite_dict(category, expectations_dir)
        self.parameters = suite_parameters(self.suite, as_of, edition.code)
        self.expectations: list[dict[str, Any]] = self.suite["expectations"]
        self.feed = Landing(landing_paths, cat, body=body, as_of=as_of)
        self.rows_in = self.feed.rows
        self.record_columns = [c.name for c in cat.record_columns]
        self.one_chunk = self.rows_in <= chunk_rows
        self.table_wide = [e for e in self.expectations if is_table_wide(e)]
        self.row_rules = self.expectations if self.one_chunk else [e for e in self.expectations
                                                                    if not is_table_wide(e)]
        self.gx_runs: list[dict[str, Any]] = []
        self.timer = _Timer()
        self.whole: pa.Table | None = None  # a feed of one chunk, read once
        self.wide: TableWide | None = None  # the table-wide rules' findings, over a feed of many chunks
        self.rows_published = self.rows_quarantined = 0
        # set by find_copies: the exact copies' positions, the rules' results, the per-feed tally
        self.copies: np.ndarray
        self.results: dict[str, RuleResult]
        self.critical: list[str]
        self.warning_rules: list[str]
        self.tally: FeedTally

    def gx(self, part: list[dict[str, Any]], table: pa.Table, positions: np.ndarray) -> dict[str, Any]:
        """GX's result of ``part`` over ``table``, its unexpected indices turned into feed positions."""
        import numpy as np

        from osms.quality.frames import columns_used, to_frame

        result = run_expectations(self.suite["name"], part, to_frame(table, columns_used(part)), self.parameters)
        for res in result["results"]:
            body = res.get("result") or {}
            if body.get("unexpected_index_list"):
                body["unexpected_index_list"] = positions[np.asarray(body["unexpected_index_list"], np.int64)].tolist()
        return result

    def find_copies(self, con: duckdb.DuckDBPyConnection) -> list[Range]:
        """Exact copies and the table-wide rules (a hash pass over a feed of many chunks); the ranges to read."""
        from osms.core.iin import prefix_ranges
        from osms.quality.uniqueness import find_table_wide

        ranges: list[Range]
        if self.one_chunk:
            self.whole = self.feed.read(con)
            self.copies = _exact_copies(self.whole, [*self.record_columns, "system"])
            ranges = [(None, None)]
        else:
            with self.timer("duplicates and uniqueness"):
                self.wide = find_table_wide(self.feed, record_columns=self.record_columns,
                                            expectations=self.table_wide, chunk_rows=self.chunk_rows, con=con,
                                            validate=self.gx)
            self.copies = self.wide.copies
            self.gx_runs += [scrub_validation_result({"rows": "candidates", **run}) for run in self.wide.gx_runs]
            ranges = prefix_ranges(self.wide.prefix_counts, self.chunk_rows)
        self._tally_rules()
        return ranges

    def _tally_rules(self) -> None:
        """The rules' results (the table-wide ones already judged), and the per-feed tally they are counted in."""
        kept_rows = self.rows_in - len(self.copies)
        self.results = rule_results(self.expectations, kept_rows)
        wide = self.wide
        if wide is not None:
            for e in self.table_wide:
                r = self.results[e["meta"]["rule"]]
                r.chunks, r.element_count, r.missing_count = 1, kept_rows, wide.missing.get(r.rule, 0)
                r.unexpected_count = len(wide.unexpected.get(r.rule, ()))
                r.exception = wide.exceptions.get(r.rule)
                r.success = r.exception is None and mostly_success(kept_rows - r.missing_count,
                                                                   r.unexpected_count, r.mostly)
        self.critical = sorted(r.rule for r in self.results.values() if r.critical)
        self.warning_rules = sorted(r.rule for r in self.results.values() if not r.critical)
        # every count also per feed (by file): verdicts are per feed
        self.tally = FeedTally(self.feed, self.critical, self.warning_rules, self.copies)
        if wide is not None:
            for rule, where in wide.unexpected.items():
                self.tally.broken(rule, where)

    def write_ranges(self, con: duckdb.DuckDBPyConnection, ranges: list[Range]) -> None:
        """Validate, split, sort and write each range of IINs in order, into the validated and quarantine files."""
        import pyarrow as pa

        from osms.core.files import parquet_writer_atomic

        d, body, category = self.data_dir, self.body, self.category
        schema = self.feed.schema
        q_schema = schema.append(pa.field("rules", pa.list_(pa.string())))
        with parquet_writer_atomic(layout.validated(d, self.as_of, body, category), schema,
                                   row_group_rows=OUTPUT_ROW_GROUP_ROWS) as validated, \
                parquet_writer_atomic(layout.quarantine(d, self.as_of, body, category), q_schema,
                                      row_group_rows=OUTPUT_ROW_GROUP_ROWS) as quarantine:
            # One range of IINs at a time, in order: each range is validated, sorted and written
            # whole, so the files come out sorted without a sort of the whole feed.
            for lo, hi in ranges:
                self._validate_range(con, lo, hi, validated, quarantine)
                pa.default_memory_pool().release_unused()  # a range's buffers go back before the next
        self.rows_published, self.rows_quarantined = validated.rows, quarantine.rows

    def _validate_range(self, con: duckdb.DuckDBPyConnection, lo: str | None, hi: str | None,
                        validated: RowGroupWriter, quarantine: RowGroupWriter) -> None:
        """One range: its exact copies set aside, the row rules run by GX, its rows split and written."""
        import numpy as np
        import pyarrow as pa

        with self.timer("read"):
            chunk, positions = (self.whole, np.arange(self.rows_in, dtype=np.int64)) if self.whole is not None \
                else self.feed.read_range(con, lo, hi)
        self.whole = None
        copy = _member(positions, self.copies)
        kept, kept_pos = chunk.filter(pa.array(~copy)), positions[~copy]
        with self.timer("gx"):
            run = self.gx(self.row_rules, kept, kept_pos) if kept.num_rows else {"results": []}
        if kept.num_rows:
            self.gx_runs.append(scrub_validation_result({"rows": [lo, hi], **run}))
        bad, rules_of = self._split(self._broken(run, kept_pos), kept_pos)
        with self.timer("sort and write"):
            validated.write(kept.filter(pa.array(~bad)).sort_by(list(SORT_KEY)))
            bad_at = np.flatnonzero(bad)
            quarantined = [_with_rules(kept.take(pa.array(bad_at)), [rules_of[i] for i in bad_at.tolist()])]
            if copy.any():
                quarantined.append(_with_rules(chunk.filter(pa.array(copy)), [[DUPLICATE_RULE]] * int(copy.sum())))
            quarantine.write(pa.concat_tables(quarantined).sort_by(list(SORT_KEY)))

    def _broken(self, run: dict[str, Any], kept_pos: np.ndarray) -> dict[str, np.ndarray]:
        """The positions of the range's rows that broke each rule: GX's row rules, then the table-wide ones."""
        import numpy as np

        broken: dict[str, np.ndarray] = {}
        for res in run["results"]:
            r = self.results[res["expectation_config"]["meta"]["rule"]]
            r.add(res)
            broken[r.rule] = np.sort(np.asarray(r.unexpected_index, dtype=np.int64))
            r.unexpected_index = []  # this range's rows are settled below: nothing accumulates
            self.tally.broken(r.rule, broken[r.rule])
        if self.wide is not None:
            for rule, where in self.wide.unexpected.items():
                broken[rule] = where[_member(where, kept_pos)]
        return broken

    def _split(self, broken: dict[str, np.ndarray], kept_pos: np.ndarray) -> tuple[np.ndarray, dict[int, list[str]]]:
        """Which kept rows are quarantined (a critical rule broken) and for which rules; counted per feed."""
        import numpy as np

        bad = np.zeros(len(kept_pos), dtype=bool)
        rules_of: dict[int, list[str]] = {}
        for rule in self.critical:
            local = np.searchsorted(kept_pos, broken.get(rule, np.zeros(0, np.int64)))
            bad[local] = True
            self.tally.quarantined(rule, kept_pos[local])
            for i in local.tolist():
                rules_of.setdefault(i, []).append(rule)
        for rule in self.warning_rules:  # a warning counts where the row is published
            local = np.searchsorted(kept_pos, broken.get(rule, np.zeros(0, np.int64)))
            self.tally.warned(rule, kept_pos[local][~bad[local]])
        self.tally.published(kept_pos[~bad])
        self.tally.rejected(kept_pos[bad])
        return bad, rules_of

    def outcome(self, trailing_counts: Sequence[int] | Mapping[str, Sequence[int]]) -> CategoryOutcome:
        """The verdicts (each feed's, and the category's from them), the outcome and its GX report."""
        share = self.suite.get("meta", {}).get("volume_minimum_share", 0.8)
        feeds = self.tally.feeds(self.results, trailing_counts, share)
        verdict, reasons = _category_verdict(feeds)
        if not isinstance(trailing_counts, Mapping):
            # the category's own history (a single list): the whole category is held back on a volume drop
            volume = volume_reason(self.rows_in, [int(c) for c in trailing_counts], share)
            if volume:
                verdict = "held_back"
                reasons.append(volume)
                for f in feeds.values():
                    f["status"], f["reason"] = "held_back", "; ".join(filter(None, [f["reason"], volume]))
        d = self.data_dir
        outcome = CategoryOutcome(
            body=self.body, category=self.category, as_of=self.as_of, verdict=verdict,
            reason="; ".join(reasons) or None, rows_in=self.rows_in, rows_published=self.rows_published,
            rows_quarantined=self.rows_quarantined, quarantined_by_rule=self.tally.total_quarantined(),
            warnings_by_rule=self.tally.total_warnings(),
            validated_path=layout.validated(d, self.as_of, self.body, self.category),
            quarantine_path=layout.quarantine(d, self.as_of, self.body, self.category),
            feeds=feeds,
        )
        assert outcome.rows_in == outcome.rows_published + outcome.rows_quarantined, "a row was lost"
        report_path = _write_report(outcome, list(self.results.values()), self.gx_runs, self.suite, self.parameters,
                                    self.edition_code, d)
        return dataclasses.replace(outcome, report_path=report_path)


def _category_verdict(feeds: dict[str, dict[str, Any]]) -> tuple[Verdict, list[str]]:
    """The category's verdict from its feeds' (published, partial or held back) and their reasons."""
    verdicts = [f["status"] for f in feeds.values()]
    verdict: Verdict = "published" if all(v == "published" for v in verdicts) else (
        "partial" if any(v == "published" for v in verdicts) else "held_back")
    if not verdicts:
        verdict = "held_back"
    reasons = [f"{system}: {f['reason']}" if len(feeds) > 1 else f["reason"]
               for system, f in feeds.items() if f["reason"]]
    return verdict, reasons



def write_feedback(body: str, as_of: dt.date, data_dir: Path) -> Path:
    """Write ``feedback/<D>/<body>.csv``: one line per quarantined row of the body (record_id, system, category, rules).

    No IIN and no name: the file goes back to the body so that its sources can
    fix their records, identified by their own ids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    columns = ["record_id", "system", "category", "rules"]
    parts = []
    for path in layout.Paths(data_dir).quarantine_files(as_of, body):
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
    return write_bytes_atomic(buf.getvalue(), layout.Paths(data_dir).feedback(as_of, body))


# --------------------------------------------------------------------------- small pieces


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



# --------------------------------------------------------------------------- the report


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
    path = layout.Paths(data_dir).gx_report(outcome.as_of, outcome.body, outcome.category)
    write_bytes_atomic((json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), path)
    return path
