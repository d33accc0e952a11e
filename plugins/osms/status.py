"""A body's status for a date: per category and per feed, published, held_back (with the reason) or failed.

The agency DAG always ends by writing it, whatever happened; the package DAG reads
nothing else. Verdicts are per feed (body, system, category): a feed that fails or
changes its schema is held back or failed on its own, and the category's other
feeds are validated and published. A category's status sums its feeds up:
``published`` (every feed), ``partial`` (some), ``held_back`` or ``failed`` (none).
It holds counts and verdicts only, never personal data, and no wall clock time, so
a rerun for the same date and inputs writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from osms import layout
from osms.files import write_bytes_atomic

log = logging.getLogger(__name__)

SCHEMA = "osms.status/1"
FeedVerdict = Literal["published", "held_back", "failed"]
Verdict = Literal["published", "partial", "held_back", "failed"]
FEED_VERDICTS = ("published", "held_back", "failed")


class StatusUnreadable(ValueError):
    """A status file exists but cannot be read as one; the message names the file and what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def category_verdict(feeds: list[str]) -> Verdict:
    """A category's verdict from its feeds' verdicts."""
    if feeds and all(v == "published" for v in feeds):
        return "published"
    if any(v == "published" for v in feeds):
        return "partial"
    return "held_back" if any(v == "held_back" for v in feeds) else "failed"


@dataclass(frozen=True)
class CategoryStatus:
    """The verdict on one category of one body for a date, with its counts and its feeds' verdicts."""

    category: str
    status: Verdict
    reason: str | None = None
    rows_in: int = 0
    rows_published: int = 0
    rows_quarantined: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    warnings_by_rule: dict[str, int] = field(default_factory=dict)
    # system -> {"status", "reason", "rows_in", "rows_published", "rows_quarantined", "quarantined_by_rule",
    #            "warnings_by_rule", and the extract's "rows"/"pages"/"retries" or its "error"/"kind"}
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, keys sorted for stable bytes."""
        return {
            "status": self.status,
            "reason": self.reason,
            "rows_in": self.rows_in,
            "rows_published": self.rows_published,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_rule": dict(sorted(self.quarantined_by_rule.items())),
            "warnings_by_rule": dict(sorted(self.warnings_by_rule.items())),
            "feeds": {k: {f: self.feeds[k][f] for f in sorted(self.feeds[k])} for k in sorted(self.feeds)},
        }

    def feed_status(self, system: str) -> FeedVerdict:
        """One feed's verdict; a status written before verdicts were per feed gives its category's to every feed."""
        info = self.feeds.get(system) or {}
        verdict = info.get("status")
        if verdict in FEED_VERDICTS:
            return verdict  # type: ignore[return-value]
        if "error" in info:
            return "held_back" if info.get("kind") == "schema_change" else "failed"
        return "failed" if self.status == "partial" else self.status  # type: ignore[return-value]

    def feed_rows_in(self, system: str) -> int | None:
        """Rows the feed brought in (None where the status does not say, per feed)."""
        value = (self.feeds.get(system) or {}).get("rows_in")
        return int(value) if isinstance(value, int) else None

    def feed_reason(self, system: str) -> str | None:
        """Why the feed was not published (or None)."""
        info = self.feeds.get(system) or {}
        return info.get("reason") or info.get("error") or (self.reason if self.feed_status(system) != "published"
                                                           else None)


@dataclass(frozen=True)
class BodyStatus:
    """Everything a body reports for a date."""

    body: str
    as_of: dt.date
    edition: str
    categories: tuple[CategoryStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        """The status document."""
        return {
            "schema": SCHEMA,
            "body": self.body,
            "as_of": self.as_of.isoformat(),
            "edition": self.edition,
            "categories": {c.category: c.to_dict() for c in sorted(self.categories, key=lambda c: c.category)},
        }

    def category(self, code: str) -> CategoryStatus:
        """The status of one category."""
        for c in self.categories:
            if c.category == code:
                return c
        raise KeyError(f"body {self.body} reported no category {code!r} for {self.as_of}")


def write_status(root: Path, status: BodyStatus) -> Path:
    """Write a body's status for its date atomically; return the path."""
    text = json.dumps(status.to_dict(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    return write_bytes_atomic(text.encode(), layout.status(root, status.as_of, status.body))


def read_status(root: Path, day: dt.date, body: str) -> BodyStatus | None:
    """A body's status for a date; None if it has not reported, :class:`StatusUnreadable` if the file is damaged."""
    path = layout.status(root, day, body)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusUnreadable(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        what = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise StatusUnreadable(path, f"not valid JSON ({what.lower()}; {len(raw)} bytes: cut short or damaged)"
                               ) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise StatusUnreadable(path, f"not an osms status document (schema {got!r})")
    try:
        cats = tuple(CategoryStatus(category=code, **dict(c)) for code, c in doc["categories"].items())
        return BodyStatus(body=doc["body"], as_of=dt.date.fromisoformat(doc["as_of"]), edition=doc["edition"],
                          categories=cats)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StatusUnreadable(path, f"a field is missing or of the wrong type ({type(exc).__name__})") from None


def read_status_or_none(root: Path, day: dt.date, body: str) -> BodyStatus | None:
    """Like :func:`read_status`, but a damaged file reads as no status, with a warning naming it."""
    try:
        return read_status(root, day, body)
    except StatusUnreadable as exc:
        log.warning("status of %s for %s is unreadable, taken as not reported: %s", body, day, exc)
        return None


def trailing_counts(root: Path, day: dt.date, body: str, category: str, system: str | None = None,
                    days: int = 7) -> list[int]:
    """rows_in of a (body, category), or of one feed of it, on the previous days that reported it, most recent first.

    A day whose status is unreadable is skipped with a warning; for a feed, a day whose
    status does not count rows per feed (written before verdicts were per feed) is skipped.
    """
    counts = []
    for k in range(1, days + 1):
        st = read_status_or_none(root, day - dt.timedelta(days=k), body)
        if st is None:
            continue
        try:
            c = st.category(category)
        except KeyError:
            continue
        if system is None:
            if c.status != "failed":
                counts.append(c.rows_in)
            continue
        if system in c.feeds and c.feed_status(system) != "failed":
            rows = c.feed_rows_in(system)
            if rows is not None:
                counts.append(rows)
    return counts
