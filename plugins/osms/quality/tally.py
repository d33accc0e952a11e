"""The counts of one validation kept per feed (each landing file is one feed), and each feed's verdict.

Every verdict is a feed's: a feed is held back when a critical rule is broken beyond its threshold
in that feed's own rows, or its volume fell under its trailing median.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from osms.quality.runner import RuleResult

if TYPE_CHECKING:
    import numpy as np

    from osms.quality.landing import Landing

__all__ = ["DUPLICATE_RULE", "FeedTally", "held_back_reason", "volume_reason"]

DUPLICATE_RULE = "duplicate_record"


def held_back_reason(
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
    volume = volume_reason(rows_in, [int(c) for c in trailing_counts], minimum_share)
    if volume:
        reasons.append(volume)
    return "; ".join(reasons) or None


def volume_reason(rows_in: int, counts: list[int], minimum_share: float) -> str | None:
    """A volume under ``minimum_share`` of the trailing median (three days of history at least), in words."""
    if rows_in == 0 and any(counts):
        return f"no rows, although the previous days had up to {max(counts):,}"
    if len(counts) >= 3:
        median = statistics.median(counts)
        if median > 0 and rows_in < minimum_share * median:
            return (f"volume {100 * rows_in / median:.0f} % of trailing median {median:,.0f}"
                    f" (minimum {100 * minimum_share:.0f} %)")
    return None


class FeedTally:
    """Counts of one validation kept per feed (each landing file is one feed), by row position."""

    def __init__(self, feed: Landing, critical: list[str], warnings: list[str], copies: np.ndarray) -> None:
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
            reason = held_back_reason(feed_results, int(self.rows_in[i]), history, share)
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
