"""Which data make D's package: every feed of the edition with its verdict on D and the day its data come from.

A (body, category) **unit** that is not ``published`` on D is carried forward from its last
published date, so a missing or failed body never makes its persons look removed. QA's
decisions (:mod:`osms.core.decisions`) count as the package of D follows them: a feed held
back and released counts as published (``released``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.core import layout
from osms.core.decisions import Decision, Decisions
from osms.core.documents import PackageCategoryStatus, PackageFeedStatus
from osms.core.status import StatusUnreadable, read_status

if TYPE_CHECKING:
    from osms.core.registry import Edition

__all__ = ["USED_AS_PUBLISHED", "CategoryVerdict", "Unit", "UnitStatus", "plan_units", "shaping_decisions",
           "units_verdict"]

log = logging.getLogger(__name__)

# a feed's verdict on D; "released": held back, and QA's release of D shapes this package
UnitStatus = PackageFeedStatus  # a unit's status is its feed's in quality.json
USED_AS_PUBLISHED = ("published", "released")
CategoryVerdict = PackageCategoryStatus


@dataclass(frozen=True)
class Unit:
    """One feed (body, system, category) of the edition and the data it contributes to D's package."""

    body: str
    system: str
    category: str
    status: UnitStatus  # the feed's verdict on D ("missing": its body did not report, or not for this feed)
    reason: str | None
    counts: dict[str, Any] = field(default_factory=dict)  # the feed's rows_in, rows_published, ... on D
    source_day: dt.date | None = None  # D when published, L when carried forward, None: nothing to use
    # the body's verdict on the whole category on D (published, partial, held_back, failed; "missing") and its counts
    body_status: str = "missing"
    body_reason: str | None = None
    body_counts: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None  # QA's decision on the feed's verdict of D that this package follows
    source_decision: Decision | None = None  # the release that made the day carried forward from count

    @property
    def carried_forward_from(self) -> dt.date | None:
        """The date whose validated data stands in for D, when the feed is carried forward."""
        return self.source_day if self.status not in USED_AS_PUBLISHED else None


# --------------------------------------------------------------------------- units and carry forward


class _Statuses:
    """Bodies' statuses by day, read once; a damaged file is a body that did not report, named."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._cache: dict[tuple[dt.date, str], tuple[Any, str | None]] = {}

    def get(self, day: dt.date, body: str) -> tuple[Any, str | None]:
        """(the status or None, why there is none when its file is unreadable)."""
        if (day, body) not in self._cache:
            try:
                self._cache[(day, body)] = (read_status(self.data_dir, day, body), None)
            except StatusUnreadable as exc:
                log.warning("status of %s for %s is unreadable: %s", body, day, exc)
                self._cache[(day, body)] = (None, f"its status file is unreadable: {exc.path.name}: {exc.problem}")
        return self._cache[(day, body)]


def plan_units(data_dir: Path, day: dt.date, edition: Edition, *, earliest: dt.date) -> list[Unit]:
    """Every feed of the edition with its verdict on D and the date its data comes from.

    QA's decisions count as the package of D follows them (:mod:`osms.core.decisions`): a feed
    held back on D and released counts as published (``released``), and a day QA released
    counts as published when the data to carry forward is looked for.
    """
    statuses_root = layout.Paths(data_dir).status_root()
    earlier_days = sorted((d for d, _ in layout.dated_dirs(statuses_root) if earliest <= d < day), reverse=True)
    statuses = _Statuses(data_dir)
    decisions = Decisions(data_dir)
    units = []
    for f in sorted(edition.feeds, key=lambda f: (f.body, f.category, f.system)):
        status, unreadable = statuses.get(day, f.body)
        verdict, reason, counts = _verdict(status, f.category, f.system)
        if unreadable:
            reason = unreadable
        decision = decisions.effective(day, f.id, day) if verdict == "held_back" else None
        if decision is not None and decision.action == "release":
            verdict = "released"
        if verdict in USED_AS_PUBLISHED and not layout.validated(data_dir, day, f.body, f.category).is_file():
            verdict, reason = "failed", f"{verdict}, but its validated file is missing"
        source = day if verdict in USED_AS_PUBLISHED else None
        source_decision = None
        if source is None:
            for d in earlier_days:
                v, _, _ = _verdict(statuses.get(d, f.body)[0], f.category, f.system)
                released = decisions.effective(d, f.id, day) if v == "held_back" else None
                if released is not None and released.action != "release":
                    released = None
                if (v == "published" or released) and layout.validated(data_dir, d, f.body, f.category).is_file():
                    source, source_decision = d, released
                    break
        body_status, body_reason, body_counts = _body_verdict(status, f.category)
        units.append(Unit(body=f.body, system=f.system, category=f.category, status=verdict, reason=reason,
                          counts=counts, source_day=source, body_status=body_status,
                          body_reason=unreadable or body_reason, body_counts=body_counts, decision=decision,
                          source_decision=source_decision))
    return units


def shaping_decisions(data_dir: Path, day: dt.date, units: list[Unit]) -> list[Decision]:
    """The QA decisions that shaped D's package: on D's verdicts, releases of the days carried forward from,
    and every decision whose first package is D's; in the order of day, feed and time made."""
    decisions = Decisions(data_dir)
    found = {(d.day, d.feed, d.at): d for u in units for d in (u.decision, u.source_decision) if d is not None}
    for path in layout.Paths(data_dir).all_decisions():
        try:
            decided = dt.date.fromisoformat(path.parent.name)
        except ValueError:
            continue
        if decided > day:
            continue
        log_ = decisions.log_of(decided, path.stem)
        for d in log_.decisions if log_ else ():
            if d.applies_from == day:
                found[(d.day, d.feed, d.at)] = d
    return [found[k] for k in sorted(found)]


def _body_verdict(status: Any, category: str) -> tuple[str, str | None, dict[str, Any]]:
    """The body's verdict on a whole category, why, and its counts."""
    if status is None:
        return "missing", "the body did not report for this date", {}
    try:
        c = status.category(category)
    except KeyError:
        return "missing", "the body's status names no such category", {}
    counts = {"rows_in": c.rows_in, "rows_published": c.rows_published, "rows_quarantined": c.rows_quarantined,
              "quarantined_by_rule": dict(sorted(c.quarantined_by_rule.items()))}
    return c.status, c.reason, counts


def units_verdict(units: list[Unit]) -> CategoryVerdict:
    """A category's verdict from its feeds: published, partial, carried_forward or missing (a release publishes)."""
    published = [u for u in units if u.status in USED_AS_PUBLISHED]
    if len(published) == len(units):
        return "published"
    if not any(u.source_day is not None for u in units):
        return "missing"  # nothing published today and nothing ever before
    return "partial" if published else "carried_forward"


def _verdict(status: Any, category: str, system: str) -> tuple[UnitStatus, str | None, dict[str, Any]]:
    """A feed's verdict, why, and its counts, from its body's status for a day."""
    if status is None:
        return "missing", "the body did not report for this date", {}
    try:
        c = status.category(category)
    except KeyError:
        return "missing", "the body's status names no such category", {}
    if c.feeds and system not in c.feeds:
        return "missing", "the body's status names no such feed", {}
    info = c.feeds.get(system) or {}
    counts = {k: info.get(k, 0) for k in ("rows_in", "rows_published", "rows_quarantined")}
    counts["quarantined_by_rule"] = dict(sorted((info.get("quarantined_by_rule") or {}).items()))
    verdict = c.feed_status(system)
    return verdict, c.feed_reason(system) if verdict != "published" else None, counts
