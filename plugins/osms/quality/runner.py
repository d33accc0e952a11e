"""The one place Great Expectations runs: a suite's expectations over one pandas frame, and the merged outcome.

Every validation, of a category's feed and of the package, goes through
:func:`run_expectations` (one ephemeral GX context per process, a pandas
datasource with a whole-dataframe batch) and :class:`RuleResult`, which merges
one rule's results over the chunks it ran on and decides whether a breach
holds a category back. The results are raw GX results (with values): callers
keep the indices they need and store only :func:`osms.quality.scrub` copies.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MIN_ROWS_TO_HOLD", "RuleResult", "mostly_success", "rule_results", "run_expectations"]

# A rule past its threshold holds a category back only with at least this many
# failing rows (or half the feed): see RuleResult.holds_back.
MIN_ROWS_TO_HOLD = 10


def mostly_success(rows: int, unexpected: int, mostly: float) -> bool:
    """GX's ``mostly`` comparison: at least ``mostly`` of ``rows`` did not break the rule."""
    return rows == 0 or (float(rows) - float(unexpected)) / float(rows) >= mostly


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
        return self.exception is None and mostly_success(self.rows, self.unexpected_count, self.mostly)

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

    def add(self, result: dict[str, Any]) -> None:
        """Merge one GX expectation result (a JSON dict) into this rule's counts and indices."""
        self.chunks += 1
        exc = result.get("exception_info") or {}
        raised = [v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")]
        if exc.get("raised_exception") or raised:
            info = exc if exc.get("raised_exception") else raised[0]
            self.exception = str(info.get("exception_message"))[:300]
            self.success = False
            return
        body = result.get("result") or {}
        self.element_count += int(body.get("element_count", 0))
        self.unexpected_count += int(body.get("unexpected_count", 0))
        self.missing_count += int(body.get("missing_count", 0) or 0)
        self.unexpected_index.extend(body.get("unexpected_index_list") or [])
        self.success = self.success and bool(result["success"])

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


def rule_results(expectations: list[dict[str, Any]], rows: int) -> dict[str, RuleResult]:
    """An empty :class:`RuleResult` per expectation (by ``meta.rule``, which must be unique)."""
    rules = [e.get("meta", {}).get("rule") for e in expectations]
    if None in rules or len(set(rules)) != len(rules):
        raise ValueError("every expectation of a suite needs a unique meta.rule")
    return {
        e["meta"]["rule"]: RuleResult(rule=e["meta"]["rule"], type=e["type"], severity=e.get("severity", "critical"),
                                      mostly=float(e["kwargs"].get("mostly", 1.0)), rows=rows)
        for e in expectations
    }


@functools.lru_cache(maxsize=1)
def _batch_definition() -> Any:
    """One ephemeral GX context and whole-dataframe batch definition per process."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import osms.quality.expectations  # noqa: F401  registers the IIN expectations

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("osms_frames").add_dataframe_asset("osms_frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def warm_up() -> None:
    """Import GX and build this process's context now (a worker does it before its first task)."""
    _batch_definition()


@functools.lru_cache(maxsize=256)
def _validation_definition(suite_name: str, expectations_json: str) -> Any:
    """A GX ValidationDefinition of these expectations over the dataframe batch, made once per process."""
    import hashlib
    import json

    import great_expectations as gx

    batch_definition = _batch_definition()  # first: it registers the custom expectations
    context = batch_definition.data_asset.datasource.data_context
    name = f"{suite_name}-{hashlib.sha256(expectations_json.encode()).hexdigest()[:16]}"
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=[
        _config(e) for e in json.loads(expectations_json)]))
    return context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_definition, suite=suite))


def run_expectations(
    suite_name: str, expectations: list[dict[str, Any]], frame: pd.DataFrame, parameters: dict[str, Any]
) -> dict[str, Any]:
    """GX's result (``COMPLETE``, as a JSON dict) of ``expectations`` over ``frame``.

    The run is a ``ValidationDefinition.run`` over a whole-dataframe batch, the
    path of the GX provider's DataFrame operator. The ephemeral context stores each
    result in memory; it holds failing values, so it is dropped from the store at once.
    """
    import json

    definition = _validation_definition(suite_name, json.dumps(expectations, sort_keys=True))
    result = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters,
                            result_format={"result_format": "COMPLETE"})
    store = _batch_definition().data_asset.datasource.data_context.validation_results_store
    for key in store.list_keys():
        store.remove_key(key)
    return result.to_json_dict()


def _config(expectation: dict[str, Any]) -> Any:
    """An expectation of the suite JSON as a GX Expectation object."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return ExpectationConfiguration(
        type=expectation["type"], kwargs=expectation["kwargs"], meta=expectation.get("meta"),
        severity=expectation.get("severity", "critical"),
    ).to_domain_obj()
