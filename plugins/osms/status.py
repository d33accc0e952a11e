"""A body's status for a date: per category published, held_back (with the reason) or failed.

The agency DAG always ends by writing it, whatever happened; the package DAG reads
nothing else. It holds counts and verdicts only, never personal data, and no wall
clock time, so a rerun for the same date and inputs writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from osms import layout
from osms.files import write_bytes_atomic

SCHEMA = "osms.status/1"
Verdict = Literal["published", "held_back", "failed"]


@dataclass(frozen=True)
class CategoryStatus:
    """The verdict on one category of one body for a date, with its counts."""

    category: str
    status: Verdict
    reason: str | None = None
    rows_in: int = 0
    rows_published: int = 0
    rows_quarantined: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    warnings_by_rule: dict[str, int] = field(default_factory=dict)
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)  # system -> extract counts or error

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
            "feeds": {k: self.feeds[k] for k in sorted(self.feeds)},
        }


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
    """A body's status for a date, or None if it has not reported."""
    path = layout.status(root, day, body)
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an osms status document (schema {doc.get('schema')!r})")
    cats = tuple(
        CategoryStatus(category=code, **{k: v for k, v in c.items()}) for code, c in doc["categories"].items()
    )
    return BodyStatus(body=doc["body"], as_of=dt.date.fromisoformat(doc["as_of"]), edition=doc["edition"],
                      categories=cats)


def trailing_counts(root: Path, day: dt.date, body: str, category: str, days: int = 7) -> list[int]:
    """rows_in of a (body, category) on the previous days that reported it, most recent first."""
    counts = []
    for k in range(1, days + 1):
        st = read_status(root, day - dt.timedelta(days=k), body)
        if st is None:
            continue
        try:
            c = st.category(category)
        except KeyError:
            continue
        if c.status != "failed":
            counts.append(c.rows_in)
    return counts
