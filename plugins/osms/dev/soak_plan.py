"""``make soak``'s chaos plan: the fault catalogue, a seeded draw of faults over the days, each fault's effect.

The plan is written before anything runs (``soak-plan.json``); the audit (:mod:`osms.dev.soak_audit`) compares
what the days left behind with the effects named here. Pure: the same seed, start, days and faults give the
same plan.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

PACKAGE_DAG = "osms_daily_package"
# The fault catalogue: what each does and the effect it must have (see expected_effects).
CATALOGUE: dict[str, str] = {
    "source_down": "a source system answers 503 to every request for day D (back the next day)",
    "schema_change": "a source system renames a required column (period_start) for day D only",
    "volume_drop": "a source system withholds 90 % of day D's records; QA releases the held-back feeds the next"
                   " morning (the next package follows the release)",
    "receiver_down": "the State Corporation answers 503 to D's first uploads; the delivery retries and succeeds",
    "scheduler_kill": "the scheduler and its task processes are SIGKILLed while D's agency tasks run, then restarted",
}
# Faults that change what D's package holds (the others must leave it byte-identical to a clean run).
DATA_FAULTS = ("source_down", "schema_change", "volume_drop")
# Systems one body reads (one feed each in the 2022 edition): a fault's effect stays one body's.
SINGLE_FEED_SYSTEMS = ("disability_db", "egov_portal", "judicial_is", "labour_market", "legal_statistics",
                       "migration_police", "penal_db", "pregnancy_register", "students_abroad", "tsa_db")
# Feeds large enough at scale 0.001 that losing 90 % is seen by the volume rule.
VOLUME_SYSTEMS = ("disability_db", "pregnancy_register", "penal_db")
VOLUME_DROP = 0.9
VOLUME_HISTORY = 3  # days of history the volume rule needs before it judges (quality.validate)
RENAMED_COLUMN = ("period_start", "start_of_period")
RECEIVER_FAILURES = 3  # uploads answered 503 before the receiver is back
DEFAULT_START = dt.date(2025, 6, 1)


def _edition_feeds(day: dt.date) -> list[tuple[str, str, str]]:
    """(category, body, system) of every feed in force on D."""
    from osms.core.registry import default_registry

    return sorted((f.category, f.body, f.system) for f in default_registry().edition_on(day).feeds)


def expected_effects(kind: str, day: dt.date, system: str | None) -> dict[str, Any]:
    """What a fault of ``kind`` on D must do: feed verdicts on D, QA decisions for D+1, notices (kind, dag)."""
    feeds = [(c, b, s) for c, b, s in _edition_feeds(day) if s == system]
    bodies = sorted({b for _, b, _ in feeds})
    effect: dict[str, Any] = {"feeds": {}, "released_next_day": [], "notices": [], "identical": kind not in DATA_FAULTS,
                              "next_day_may_differ": []}
    if kind == "source_down":
        # the extract gives up after its retries: the feed failed, the body's run failed
        effect["feeds"] = {f"{c}/{b}/{s}": "failed" for c, b, s in feeds}
        effect["notices"] = sorted([["feeds_not_published", f"agency_{b}"] for b in bodies]
                                   + [["agency_run_failed", f"agency_{b}"] for b in bodies])
    elif kind in ("schema_change", "volume_drop"):
        # a schema change is held back (kind schema_change) by the extract, a drop by the volume rule
        effect["feeds"] = {f"{c}/{b}/{s}": "held_back" for c, b, s in feeds}
        effect["notices"] = sorted([["feeds_not_published", f"agency_{b}"] for b in bodies]
                                   + [["qa_decision_waiting", PACKAGE_DAG]])
        if kind == "volume_drop":
            effect["released_next_day"] = [f"{b}.{s}.{c}" for c, b, s in feeds]
    if kind in DATA_FAULTS:
        # D+1 keeps D's rows of a record it quarantines (per-record protection): where D lacked the feed's rows,
        # D+1 may differ from the clean run in these categories, and only in them
        effect["next_day_may_differ"] = sorted({c for c, _, _ in feeds})
    return effect


def make_plan(seed: int, start: dt.date, days: int, *, kinds: Sequence[str] = tuple(CATALOGUE),
              fixed: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """The seeded chaos plan: the same seed, start, days and faults give the same plan.

    ``fixed`` names the faults instead of drawing them: (kind, day number from 1); the systems are still drawn.
    """
    unknown = sorted(set(kinds) - set(CATALOGUE) | {k for k, _ in fixed} - set(CATALOGUE))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; the catalogue: {', '.join(CATALOGUE)}")
    rng = random.Random(seed)
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    wanted: list[list[str]] = [[] for _ in dates]
    if fixed:
        for kind, number in fixed:
            if not 1 <= number <= days:
                raise ValueError(f"{kind}:{number}: the day number must be within 1..{days}")
            wanted[number - 1].append(kind)
    else:
        for i in range(days):
            possible = [k for k in kinds if _fits(k, i, days)]
            wanted[i] = rng.sample(possible, k=min(len(possible), rng.choice((0, 1, 1, 2, 3))))
    faults: list[dict[str, Any]] = []
    for i, day in enumerate(dates):
        taken: set[str] = set()
        for kind in sorted(wanted[i]):
            if not _fits(kind, i, days):
                raise ValueError(f"{kind} cannot be on day {i + 1} of {days}"
                                 f" (volume_drop needs {VOLUME_HISTORY} days before it and one after)")
            system = None
            if kind in DATA_FAULTS:
                pool = [s for s in (VOLUME_SYSTEMS if kind == "volume_drop" else SINGLE_FEED_SYSTEMS)
                        if s not in taken]
                system = rng.choice(pool)
                taken.add(system)
            faults.append({"day": day.isoformat(), "kind": kind, "system": system, "what": CATALOGUE[kind],
                           "expect": expected_effects(kind, day, system)})
    return {"seed": seed, "start": start.isoformat(), "days": [d.isoformat() for d in dates], "faults": faults}


def _fits(kind: str, index: int, days: int) -> bool:
    """Whether ``kind`` can be on day ``index`` (0-based): a volume drop needs history before and a morning after."""
    return kind != "volume_drop" or (index >= VOLUME_HISTORY and index + 1 < days)


def parse_faults(text: str) -> tuple[list[str], list[tuple[str, int]]]:
    """``FAULTS``: kinds to draw from (``a,b``) or faults fixed to days (``schema_change:1,scheduler_kill:2``)."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    fixed = [(k, int(n)) for k, _, n in (x.partition(":") for x in items) if n]
    kinds = [x for x in items if ":" not in x]
    if fixed and kinds:
        raise ValueError("FAULTS is either kinds to draw from or kind:day pairs, not both")
    return kinds or list(CATALOGUE), fixed


def mock_day_faults(plan: dict[str, Any]) -> dict[dt.date, dict[str, Any]]:
    """The mocks' faults keyed to their day (mocks.config.MockConfig.day_faults)."""
    from mocks.faults import SystemFaults

    out: dict[dt.date, dict[str, Any]] = {}
    for f in plan["faults"]:
        settings = {"source_down": {"down": True}, "schema_change": {"rename_columns": dict([RENAMED_COLUMN])},
                    "volume_drop": {"volume_drop": VOLUME_DROP}}.get(f["kind"])
        if settings is not None:
            out.setdefault(dt.date.fromisoformat(f["day"]), {})[f["system"]] = SystemFaults.from_mapping(settings)
    return out
