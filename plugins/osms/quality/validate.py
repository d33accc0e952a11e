"""The one helper every category goes through: run its GX suite over a body's
landing data for a date, split the rows into validated and quarantined, count
the warnings and decide whether the category is published or held back.

Great Expectations decides: every row-level rule is an expectation of
``expectations/<category>.json`` run with ``result_format: COMPLETE``, and a
row is quarantined with the rules whose ``unexpected_index_list`` holds it.
Nothing here restates a rule. The only row-level decision taken outside GX is
exact duplicates (a repeated identical row keeps one copy), which must happen
before GX so that the copy is not reported as a broken ``record_id_unique``.

pandas, pyarrow and GX are imported inside functions: DAG files import this
module at parse time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osms.files import write_bytes_atomic, write_parquet_atomic
from osms.quality.scrub import scrub_validation_result
from osms.quality.suites import load_suite_dict, suite_parameters
from osms.registry import default_registry

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from osms.registry import EditionCategory

__all__ = ["CategoryOutcome", "DUPLICATE_RULE", "RuleResult", "validate_category", "write_feedback"]

Verdict = Literal["published", "held_back"]
LINEAGE_COLUMNS = ("body", "system", "category", "as_of")
SORT_KEY = (("iin", "ascending"), ("record_id", "ascending"), ("system", "ascending"))
DUPLICATE_RULE = "duplicate_record"
# GX on pandas holds several boolean/index copies of a frame per expectation; a
# million rows keeps a chunk well under a gigabyte whatever the category.
DEFAULT_CHUNK_ROWS = 1_000_000
# Rules that compare rows with each other: they must see the whole feed, not a chunk.
_TABLE_WIDE_TYPES = frozenset({"expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique"})
# pandas datetime64[ns] spans 1677..2262; GX only compares dates vectorised in ns,
# so dates outside are clamped to the span's ends (they still break every date rule).
_NS_MIN, _NS_MAX = dt.date(1678, 1, 1), dt.date(2261, 12, 31)


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, counts and paths only: for status files and XCom."""
        out = dataclasses.asdict(self)
        out["as_of"] = self.as_of.isoformat()
        for key in ("validated_path", "quarantine_path", "report_path"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


# A rule past its threshold holds a category back only with at least this many
# failing rows (or half the feed): see RuleResult.holds_back.
MIN_ROWS_TO_HOLD = 10


@dataclass
class RuleResult:
    """One expectation's outcome, merged over the chunks it ran on."""

    rule: str
    type: str
    severity: str
    mostly: float
    element_count: int = 0
    unexpected_count: int = 0
    missing_count: int = 0
    success: bool = True  # GX's own verdict, every chunk's
    exception: str | None = None
    chunks: int = 0
    rows: int = 0  # rows of the (deduplicated) feed the rule ran over
    unexpected_index: list[Any] = dataclasses.field(default_factory=list, repr=False)

    @property
    def critical(self) -> bool:
        """Whether failing this rule quarantines a row (``warning``/``info`` only count)."""
        return self.severity == "critical"

    @property
    def unexpected_percent(self) -> float:
        """Share of the feed's rows that broke the rule, in per cent."""
        return 100.0 * self.unexpected_count / self.rows if self.rows else 0.0

    @property
    def within_threshold(self) -> bool:
        """Whether at most ``1 - mostly`` of the feed's rows broke the rule.

        GX's own ``success`` divides by the non-missing values the rule looked at:
        a few bad ``period_end`` among mostly open-ended periods, or the one WWII
        veteran of a day with a wrong birth date, would then read as 100 % failed
        and hold back a whole category. The verdict is about whether the extract
        is usable, so it divides by every row of the feed, with GX's comparison.
        """
        from great_expectations.expectations.expectation import _mostly_success

        if self.exception is not None:
            return False
        return self.rows == 0 or _mostly_success(self.rows, self.unexpected_count, self.mostly)

    @property
    def holds_back(self) -> bool:
        """Whether this rule's failures make the whole extract unusable.

        Past its threshold, yes, but only when the breach is systematic: a handful
        of bad rows in a small feed (one kandas record in 49 is 2 %) is a row
        problem, for quarantine, not a reason to hold back everyone else. So a
        breach needs at least MIN_ROWS_TO_HOLD failing rows, or half the feed.
        """
        if self.within_threshold:
            return False
        return self.unexpected_count >= MIN_ROWS_TO_HOLD or self.unexpected_count * 2 >= self.rows

    def counts(self) -> dict[str, Any]:
        """The rule's counts for the report: no values."""
        return {
            "rule": self.rule,
            "type": self.type,
            "severity": self.severity,
            "gx_success": self.success,
            "within_threshold": self.within_threshold,
            "mostly": self.mostly,
            "rows": self.rows,
            "element_count": self.element_count,
            "missing_count": self.missing_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": round(self.unexpected_percent, 4),
            "raised_exception": self.exception is not None,
        }


# --------------------------------------------------------------------------- the helper


def validate_category(
    *,
    body: str,
    category: str,
    as_of: dt.date,
    landing_paths: Sequence[Path],
    data_dir: Path,
    trailing_counts: Sequence[int] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    expectations_dir: Path | None = None,
) -> CategoryOutcome:
    """Validate a body's landing data for one category and date; write validated, quarantine and report files."""
    import numpy as np
    import pyarrow as pa

    edition = default_registry().edition_on(as_of)
    cat = edition.category(category)
    suite = load_suite_dict(category, expectations_dir)
    parameters = suite_parameters(suite, as_of, edition.code)

    table = _read_landing(landing_paths, cat, body=body, as_of=as_of)
    rows_in = table.num_rows
    keep, copies = _exact_duplicates(table, [c.name for c in cat.record_columns] + ["system"])
    kept = table.take(pa.array(keep, pa.int64()))

    gx_runs: list[dict[str, Any]] = []
    results = _run_suite(suite, kept, parameters, chunk_rows=chunk_rows, gx_runs=gx_runs)

    # Which rows broke which critical rules (positions in ``kept``).
    row_rules: dict[int, list[str]] = {}
    for r in sorted(results, key=lambda r: r.rule):
        if r.critical:
            for pos in r.unexpected_index:
                row_rules.setdefault(int(pos), []).append(r.rule)
    bad = np.array(sorted(row_rules), dtype=np.int64)
    good_mask = np.ones(kept.num_rows, dtype=bool)
    good_mask[bad] = False

    quarantined_by_rule: dict[str, int] = {}
    for rules in row_rules.values():
        for rule in rules:
            quarantined_by_rule[rule] = quarantined_by_rule.get(rule, 0) + 1
    if len(copies):
        quarantined_by_rule[DUPLICATE_RULE] = len(copies)
    # A warning counts where the row is published: a quarantined row's warning is moot.
    warnings_by_rule = {
        r.rule: int(good_mask[np.asarray(r.unexpected_index, dtype=np.int64)].sum()) if r.unexpected_index else 0
        for r in results
        if not r.critical
    }

    published = kept.filter(pa.array(good_mask))
    quarantined = pa.concat_tables(
        [
            _with_rules(kept.take(pa.array(bad)), [sorted(row_rules[int(p)]) for p in bad]),
            _with_rules(table.take(pa.array(copies, pa.int64())), [[DUPLICATE_RULE]] * len(copies)),
        ]
    )
    day = as_of.isoformat()
    validated_path = write_parquet_atomic(
        published.sort_by(list(SORT_KEY)), data_dir / "validated" / day / body / f"{category}.parquet"
    )
    quarantine_path = write_parquet_atomic(
        quarantined.sort_by(list(SORT_KEY)), data_dir / "quarantine" / day / body / f"{category}.parquet"
    )

    reason = _held_back_reason(results, rows_in, trailing_counts, suite.get("meta", {}).get("volume_minimum_share", 0.8))
    outcome = CategoryOutcome(
        body=body,
        category=category,
        as_of=as_of,
        verdict="held_back" if reason else "published",
        reason=reason,
        rows_in=rows_in,
        rows_published=published.num_rows,
        rows_quarantined=quarantined.num_rows,
        quarantined_by_rule=dict(sorted(quarantined_by_rule.items())),
        warnings_by_rule=dict(sorted(warnings_by_rule.items())),
        validated_path=validated_path,
        quarantine_path=quarantine_path,
    )
    assert outcome.rows_in == outcome.rows_published + outcome.rows_quarantined, "a row was lost"
    report_path = _write_report(outcome, results, gx_runs, suite, parameters, edition.code, data_dir)
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
    import pyarrow as pa

    return {
        "string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"), "int": pa.int64(), "bool": pa.bool_(),
    }[column_type]


def _read_landing(paths: Sequence[Path], cat: EditionCategory, *, body: str, as_of: dt.date) -> pa.Table:
    """Every landing file of the category, in the record contract's columns plus lineage.

    A column a file lacks is added empty, so its ``required:`` rule reports it
    rather than the run failing; lineage a file lacks comes from the call and the
    landing path (``landing/D/<body>/<system>/<category>.parquet``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [pa.field(c.name, _arrow_type(c.type)) for c in cat.record_columns]
    fields += [pa.field("body", pa.string()), pa.field("system", pa.string()),
               pa.field("category", pa.string()), pa.field("as_of", pa.date32())]
    schema = pa.schema(fields)
    parts = []
    for path in paths:
        t = pq.read_table(path)
        lineage = {"body": body, "system": Path(path).parent.name, "category": cat.code, "as_of": as_of}
        cols = []
        for f in schema:
            if f.name in t.column_names:
                col = t.column(f.name)
                cols.append(col if col.type == f.type else col.cast(f.type))
            elif f.name in lineage:
                cols.append(pa.array([lineage[f.name]] * t.num_rows, f.type))
            else:
                cols.append(pa.nulls(t.num_rows, f.type))
        parts.append(pa.Table.from_arrays(cols, schema=schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts).combine_chunks()


def _exact_duplicates(table: pa.Table, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions of rows to keep, positions of repeated identical copies): the first copy is kept."""
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keyed = table.select(columns).append_column("_pos", pa.array(np.arange(n, dtype=np.int64)))
    firsts = keyed.group_by(columns, use_threads=False).aggregate([("_pos", "min")]).column("_pos_min")
    first = np.zeros(n, dtype=bool)
    first[firsts.to_numpy()] = True
    return np.flatnonzero(first), np.flatnonzero(~first)


def _with_rules(table: pa.Table, rules: list[list[str]]) -> pa.Table:
    import pyarrow as pa

    return table.append_column("rules", pa.array(rules, pa.list_(pa.string())))


# --------------------------------------------------------------------------- running GX


@functools.lru_cache(maxsize=1)
def _batch_definition() -> Any:
    """One ephemeral GX context and whole-dataframe batch definition per process."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import osms.quality.expectations  # noqa: F401  registers the IIN expectations

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("osms_landing").add_dataframe_asset("category_records")
    return asset.add_batch_definition_whole_dataframe("whole_feed")


def _columns_used(expectations: list[dict[str, Any]]) -> list[str]:
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


def _to_frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    """The columns GX needs, typed so that GX's pandas metrics take their vectorised paths."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = {}
    for name in columns:
        col = table.column(name)
        if pa.types.is_date32(col.type):
            lo, hi = pa.scalar(_NS_MIN, pa.date32()), pa.scalar(_NS_MAX, pa.date32())
            col = pc.if_else(pc.less(col, lo), lo, pc.if_else(pc.greater(col, hi), hi, col)).cast(pa.timestamp("ns"))
        elif pa.types.is_integer(col.type):
            col = col.cast(pa.float64())  # GX's vectorised between needs numpy int64/float64; nulls become NaN
        arrays[name] = col
    return pa.table(arrays).to_pandas()


def _run_suite(
    suite: dict[str, Any], table: pa.Table, parameters: dict[str, Any], *, chunk_rows: int, gx_runs: list[dict[str, Any]]
) -> list[RuleResult]:
    """Run the suite over ``table`` with GX; table-wide rules over the whole table, the rest chunk by chunk.

    Each GX run's result is appended to ``gx_runs`` already scrubbed of values.
    """
    expectations = suite["expectations"]
    rules = [e.get("meta", {}).get("rule") for e in expectations]
    if None in rules or len(set(rules)) != len(rules):
        raise ValueError(f"suite {suite['name']!r}: every expectation needs a unique meta.rule")
    results = {
        e["meta"]["rule"]: RuleResult(
            rule=e["meta"]["rule"], type=e["type"], severity=e.get("severity", "critical"),
            mostly=float(e["kwargs"].get("mostly", 1.0)), rows=table.num_rows,
        )
        for e in expectations
    }
    n = table.num_rows
    whole = [e for e in expectations if e["type"] in _TABLE_WIDE_TYPES or n <= chunk_rows]
    chunked = [e for e in expectations if e not in whole]
    runs: list[tuple[list[dict[str, Any]], int, int]] = []
    if whole:
        runs.append((whole, 0, n))
    if chunked:
        runs.extend((chunked, start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows))
    for part, start, stop in runs:
        frame = _to_frame(table.slice(start, stop - start), _columns_used(part))
        frame.index = range(start, stop)  # unexpected_index_list then holds positions in ``table``
        run = _validate_frame(suite, part, frame, parameters)
        gx_runs.append(scrub_validation_result({"rows": [start, stop], **run}))
        for res in run["results"]:
            r = results[res["expectation_config"]["meta"]["rule"]]
            r.chunks += 1
            exc = res.get("exception_info") or {}
            raised = [v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")]
            if exc.get("raised_exception") or raised:
                info = exc if exc.get("raised_exception") else raised[0]
                r.exception = str(info.get("exception_message"))[:300]
                r.success = False
                continue
            body = res.get("result", {})
            r.element_count += int(body.get("element_count", 0))
            r.unexpected_count += int(body.get("unexpected_count", 0))
            r.missing_count += int(body.get("missing_count", 0) or 0)
            r.unexpected_index.extend(body.get("unexpected_index_list") or [])
            r.success = r.success and bool(res["success"])
    return list(results.values())


def _validate_frame(
    suite: dict[str, Any], expectations: list[dict[str, Any]], frame: pd.DataFrame, parameters: dict[str, Any]
) -> dict[str, Any]:
    import great_expectations as gx

    batch_definition = _batch_definition()
    gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=[_config(e) for e in expectations])
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        gx_suite, expectation_parameters=parameters, result_format={"result_format": "COMPLETE"}
    )
    return result.to_json_dict()


def _config(expectation: dict[str, Any]) -> Any:
    """An expectation of the suite JSON as a GX Expectation object."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return ExpectationConfiguration(
        type=expectation["type"], kwargs=expectation["kwargs"], meta=expectation.get("meta"),
        severity=expectation.get("severity", "critical"),
    ).to_domain_obj()


# --------------------------------------------------------------------------- verdict and report


def _held_back_reason(
    results: list[RuleResult], rows_in: int, trailing_counts: Sequence[int], minimum_share: float
) -> str | None:
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
    counts = [int(c) for c in trailing_counts]
    if rows_in == 0 and any(counts):
        reasons.append(f"no rows, although the previous days had up to {max(counts):,}")
    elif len(counts) >= 3:
        median = statistics.median(counts)
        if median > 0 and rows_in < minimum_share * median:
            reasons.append(
                f"volume {100 * rows_in / median:.0f} % of trailing median {median:,.0f}"
                f" (minimum {100 * minimum_share:.0f} %)"
            )
    return "; ".join(reasons) or None


def _write_report(
    outcome: CategoryOutcome,
    results: list[RuleResult],
    gx_runs: list[dict[str, Any]],
    suite: dict[str, Any],
    parameters: dict[str, Any],
    edition: str,
    data_dir: Path,
) -> Path:
    """Store the run's GX results as counts and percentages only, and render the day's page."""
    report = scrub_validation_result(
        {
            "schema": "osms.quality.gx/1",
            "suite": suite["name"],
            "edition": edition,
            "parameters": parameters,
            "outcome": {k: v for k, v in outcome.as_dict().items() if not k.endswith("_path")},
            "results": [r.counts() for r in sorted(results, key=lambda r: r.rule)],
            "gx_runs": gx_runs,
        }
    )
    day = outcome.as_of.isoformat()
    path = data_dir / "reports" / "gx" / day / outcome.body / f"{outcome.category}.json"
    write_bytes_atomic((json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), path)
    from osms.quality.docs import render_day

    render_day(data_dir, outcome.as_of)
    return path
