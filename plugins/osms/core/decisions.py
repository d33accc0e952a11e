"""QA's decisions on feeds held back: release their validated rows, or confirm the hold; recorded, never lost.

A feed (body, system, category) held back on D by a batch rule (a volume under the
trailing median, a rule broken beyond its threshold) is carried forward from its last
published day. QA may decide, from the Data quality page:

- **release**: the feed's validated rows of D count as published: the first package
  built after the decision takes them (D's own, if D's package was not built yet; a
  package once built is never changed, so a release made after D's package went out
  shapes D+1's: D+1 uses its own rows if D+1 is published, else D's released rows as
  the data carried forward). A release also resets the feed's volume baseline: later
  days' volume checks count only the days from the released one on, so a real, lasting
  drop is not held back day after day;
- **hold**: the hold stands (the feed stays carried forward), and the decision says so.

No decision is the same as a hold: the package never waits for one. Each decision names
who made it, when (UTC) and why, and the first package it shapes (``applies_from``),
fixed when it is made under that package's lock: a build of that day that starts later
sees it, one already running or done does not. Decisions are appended to
``decisions/D/<body>.json`` (:class:`~osms.core.documents.DecisionLog`, atomic, 0600 in
0700 folders: the reason is free text and the decider a person), and the package of a
day P reads, per feed and day, the last decision whose ``applies_from`` is P or earlier.
So decisions are inputs like the data: the same data and decisions give the same bytes,
and a later change of mind shapes only packages not built yet.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from osms.core import layout
from osms.core.documents import MANIFEST, Decision, DecisionAction, DecisionLog, DocumentError
from osms.core.files import locked, private_dir, write_bytes_atomic

__all__ = ["ACTIONS", "Decision", "DecisionRefused", "Decisions", "baseline_start", "check_reason", "read_log",
           "record"]

log = logging.getLogger(__name__)

ACTIONS: tuple[DecisionAction, ...] = ("release", "hold")
REASON_MAX = 500
# An IIN is 12 digits: a reason is shown on pages and in the package's quality.json, so it must not hold one
_IIN_LIKE = re.compile(r"\d{12}")
# The first package a decision may shape is searched this many days ahead at most (a stuck lock: refuse)
_MAX_AHEAD = 400


class DecisionRefused(ValueError):
    """A decision that cannot be recorded; the message says why, ``code`` which rule (the pages translate it)."""

    def __init__(self, message: str, code: str = "refused", **fields: object) -> None:
        super().__init__(message)
        self.code, self.fields = code, fields


def check_reason(text: str) -> str:
    """The reason folded to one line; :class:`DecisionRefused` when empty, too long or holding an IIN-like number."""
    folded = " ".join(str(text or "").split())
    if not folded:
        raise DecisionRefused("a decision needs a reason", "reason_empty")
    if len(folded) > REASON_MAX:
        raise DecisionRefused(f"the reason is {len(folded)} characters; at most {REASON_MAX}", "reason_long",
                              limit=REASON_MAX)
    if _IIN_LIKE.search(folded):
        raise DecisionRefused("the reason holds a 12-digit number (an IIN?): personal data never goes in a reason",
                              "reason_iin")
    return folded


def read_log(root: Path, day: dt.date, body: str) -> DecisionLog | None:
    """The body's decisions about D, or None when there are none; :class:`DocumentError` naming a damaged file."""
    path = layout.decisions(root, day, body)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        found = DecisionLog.parse(raw)
    except DocumentError as exc:
        raise DocumentError(f"{path}: {exc}") from None
    if (found.body, found.day) != (body, day):
        raise DocumentError(f"{path}: holds the decisions of {found.body} on {found.day}")
    return found


class Decisions:
    """Decisions read once per (day, body); a damaged file counts as none (the hold stands), with a warning."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._logs: dict[tuple[dt.date, str], DecisionLog | None] = {}

    def log_of(self, day: dt.date, body: str) -> DecisionLog | None:
        """The body's decision log of D (None: none, or unreadable)."""
        if (day, body) not in self._logs:
            try:
                self._logs[(day, body)] = read_log(self.root, day, body)
            except (DocumentError, OSError) as exc:
                log.warning("QA decisions unreadable, taken as none (the holds stand): %s", exc)
                self._logs[(day, body)] = None
        return self._logs[(day, body)]

    def of_feed(self, day: dt.date, feed: str) -> list[Decision]:
        """Every decision about the feed's verdict of D, in the order made."""
        found = self.log_of(day, feed.split(".", 1)[0])
        return [d for d in found.decisions if d.feed == feed] if found else []

    def effective(self, day: dt.date, feed: str, package_day: dt.date) -> Decision | None:
        """The decision about the feed's verdict of D that the package of ``package_day`` follows (None: none)."""
        shaping = [d for d in self.of_feed(day, feed) if d.applies_from <= package_day]
        return shaping[-1] if shaping else None

    def latest(self, day: dt.date, feed: str) -> Decision | None:
        """The last decision made about the feed's verdict of D."""
        made = self.of_feed(day, feed)
        return made[-1] if made else None


def baseline_start(root: Path, day: dt.date, feed: str, days: int) -> dt.date | None:
    """The latest of the ``days`` days before D that QA released for the feed (its volume baseline starts there)."""
    decisions = Decisions(root)
    for k in range(1, days + 1):
        earlier = day - dt.timedelta(days=k)
        last = decisions.latest(earlier, feed)
        if last is not None and last.action == "release":
            return earlier
    return None


def record(root: Path, *, day: dt.date, body: str, system: str, category: str, action: str, reason: str,
           by: str, at: dt.datetime) -> Decision:
    """Append QA's decision about a feed held back on D; return it with the first package it shapes.

    Refused (:class:`DecisionRefused`, saying why) unless the body's status of D holds the
    feed back; a release also needs the feed's rows to have been validated (a schema change
    never reached validation). Writers of one body's decisions of D take turns; the package
    a decision first shapes is locked while it is written, so a build of that day either
    sees the decision or had already begun (then the next day's package is the first).
    """
    from osms.core.status import StatusUnreadable, read_status

    if action not in ACTIONS:
        raise DecisionRefused(f"a decision is {' or '.join(ACTIONS)}, not {action!r}", "action")
    reason = check_reason(reason)
    who = " ".join(str(by or "").split())
    if not who:
        raise DecisionRefused("a decision names who made it", "who")
    feed = f"{body}.{system}.{category}"
    root = Path(root)
    try:
        status = read_status(root, day, body)
    except StatusUnreadable as exc:
        raise DecisionRefused(f"the status of {body} on {day} is unreadable ({exc.problem})") from None
    if status is None:
        raise DecisionRefused(f"{body} has not reported for {day}: nothing is held back", "not_held_back",
                              feed=feed, day=day)
    try:
        reported = status.category(category)
    except KeyError:
        raise DecisionRefused(f"{body} reported no category {category} for {day}", "not_held_back", feed=feed,
                              day=day) from None
    verdict = reported.feed_status(system) if system in reported.feeds else None
    if verdict != "held_back":
        raise DecisionRefused(f"{feed} is not held back on {day} (its verdict: {verdict or 'none'}):"
                              " only a held-back feed is QA's to decide", "not_held_back", feed=feed, day=day)
    validated = (reported.feeds[system].get("kind") != "schema_change"
                 and layout.validated(root, day, body, category).is_file())
    if action == "release" and not validated:
        raise DecisionRefused(f"{feed} on {day}: no validated rows to release (the feed's data did not reach"
                              " validation; its body must send it again)", "not_releasable", feed=feed, day=day)
    lock = layout.Paths(root).decisions_lock(day, body)
    private_dir(lock.parent)
    with locked(lock):
        existing = read_log(root, day, body) or DecisionLog(body=body, day=day)
        with _first_unbuilt_package(root, day) as applies_from:
            decision = Decision(feed=feed, day=day, action=action, reason=reason, by=who, at=at,
                                applies_from=applies_from)
            updated = DecisionLog(body=body, day=day, decisions=(*existing.decisions, decision))
            path = layout.decisions(root, day, body)
            private_dir(path.parent)
            write_bytes_atomic(updated.to_bytes(), path, mode=0o600)
    log.info("QA decision recorded: %s on %s: %s, shapes packages from %s", feed, day, action, applies_from)
    return decision


@contextmanager
def _first_unbuilt_package(root: Path, day: dt.date) -> Iterator[dt.date]:
    """The first day from D on whose package is not built and not being built, its lock held while in use."""
    for k in range(_MAX_AHEAD):
        candidate = day + dt.timedelta(days=k)
        lock = layout.package_lock(root, candidate)
        private_dir(lock.parent)
        with locked(lock, wait=False) as held:
            if not held:
                continue  # that package is being built or delivered now: it cannot take the decision
            if (layout.package_dir(root, candidate) / MANIFEST).is_file():
                continue  # built: it never changes
            yield candidate
            return
    raise DecisionRefused(f"no package from {day} on for {_MAX_AHEAD} days is free to take the decision")
