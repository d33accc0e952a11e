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
import logging
from pathlib import Path

from osms.core import layout
from osms.core.documents import (
    FEED_VERDICTS,
    STATUS_SCHEMA,
    BodyStatus,
    CategoryStatus,
    DocumentError,
    FeedReport,
    FeedVerdict,
    StatusVerdict,
    Verdict,
)
from osms.core.files import write_bytes_atomic

__all__ = [
    "FEED_VERDICTS", "SCHEMA", "BodyStatus", "CategoryStatus", "FeedReport", "FeedVerdict", "StatusUnreadable",
    "StatusVerdict", "Verdict", "category_verdict", "read_status", "read_status_or_none", "trailing_counts",
    "write_status",
]

log = logging.getLogger(__name__)

SCHEMA = STATUS_SCHEMA


class StatusUnreadable(ValueError):
    """A status file exists but cannot be read as one; the message names the file and what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def category_verdict(feeds: list[FeedVerdict]) -> StatusVerdict:
    """A category's verdict in a body's status, from its feeds' verdicts (see :data:`StatusVerdict`)."""
    if feeds and all(v == "published" for v in feeds):
        return "published"
    if any(v == "published" for v in feeds):
        return "partial"
    return "held_back" if any(v == "held_back" for v in feeds) else "failed"


def write_status(root: Path, status: BodyStatus) -> Path:
    """Write a body's status for its date atomically; return the path."""
    return write_bytes_atomic(status.to_bytes(), layout.status(root, status.as_of, status.body))


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
        return BodyStatus.parse(raw)
    except DocumentError as exc:
        raise StatusUnreadable(path, str(exc)) from None


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
    A feed QA released on one of these days counts from that day on only: QA said its
    volume there is real, so it is the new baseline (:mod:`osms.core.decisions`).
    """
    from osms.core.decisions import baseline_start

    since = baseline_start(root, day, f"{body}.{system}.{category}", days) if system is not None else None
    counts = []
    for k in range(1, days + 1):
        if since is not None and day - dt.timedelta(days=k) < since:
            break
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
