"""What the Data quality and package pages show, read from the data partitions.

Everything here is counts, rule names, codes, dates and checksums: the status
files (``status/<D>/<body>.json``), the package's ``quality.json``, ``manifest.json``
and ``receipt.json``. No Parquet file of records is ever opened, so no IIN or
name can reach a page. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osms.core import layout
from osms.core.decisions import Decision, Decisions
from osms.core.documents import (
    MANIFEST,
    QUALITY,
    RECEIPT,
    ChainStart,
    DocumentError,
    Manifest,
    Problem,
    QualityDocument,
    Receipt,
)
from osms.core.i18n import DEFAULT, local_name
from osms.core.files import sha256_file
from osms.core.registry import Edition, NoEditionInForce, default_registry
from osms.core.status import BodyStatus, CategoryStatus, StatusUnreadable, read_status, read_status_or_none
from osms.core.run import Run

TREND_DAYS = 30
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadDay(ValueError):
    """A day that is not an ISO date (YYYY-MM-DD)."""


def parse_day(text: str) -> dt.date:
    """An ISO date from a URL, strictly (no times, no other forms)."""
    if not _DAY.fullmatch(text or ""):
        raise BadDay(f"day must be an ISO date YYYY-MM-DD, not {text[:20]!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadDay(f"{text} is not a calendar date") from None


def available_days(root: Path) -> list[dt.date]:
    """Dates with a status or a package, newest first."""
    return sorted({d for parent in (layout.status_root(root), layout.packages_root(root))
                   for d, _ in layout.dated_dirs(parent)}, reverse=True)


@dataclass(frozen=True)
class FeedRow:
    """One feed (a system of the body) of a category on D: its own verdict and counts, and QA's decisions."""

    system: str
    status: str  # published, released, held_back, failed, missing
    reason: str | None
    carried_forward_from: dt.date | None
    rows_in: int
    rows_published: int
    rows_quarantined: int
    system_name: str = ""
    decisions: tuple[Decision, ...] = ()  # every decision made about the feed's verdict of D, in order
    decision: Decision | None = None  # the one D's package follows
    decidable: bool = False  # held back on D: QA may release it or confirm the hold
    releasable: bool = False  # ... and its rows were validated, so there is something to release

    @property
    def latest(self) -> Decision | None:
        """The last decision made (it stands from its first package on)."""
        return self.decisions[-1] if self.decisions else None


@dataclass(frozen=True)
class UnitRow:
    """One body's part of a category on D: its verdict and what its status reported (None: nothing)."""

    body: str
    status: str  # published, partial, held_back, failed, missing (did not report)
    reason: str | None
    carried_forward_from: dt.date | None
    reported: CategoryStatus | None
    feeds: tuple[FeedRow, ...] = ()
    body_name: str = ""

    @property
    def rows_in(self) -> int:
        return self.reported.rows_in if self.reported else 0

    @property
    def rows_published(self) -> int:
        return self.reported.rows_published if self.reported else 0

    @property
    def rows_quarantined(self) -> int:
        return self.reported.rows_quarantined if self.reported else 0

    @property
    def quarantined_by_rule(self) -> dict[str, int]:
        return dict(sorted(self.reported.quarantined_by_rule.items())) if self.reported else {}

    @property
    def warnings_by_rule(self) -> dict[str, int]:
        """Rules that warned at least once."""
        return {k: v for k, v in sorted(self.reported.warnings_by_rule.items()) if v} if self.reported else {}


@dataclass(frozen=True)
class CategoryRow:
    """A category on D, summed over its bodies."""

    row: int
    code: str
    name: str
    provisional: bool
    status: str  # published, partial, carried_forward, missing
    units: tuple[UnitRow, ...]
    package_rows: int | None  # rows in the delivered package, when there is one

    @property
    def rows_in(self) -> int:
        return sum(u.rows_in for u in self.units)

    @property
    def rows_published(self) -> int:
        return sum(u.rows_published for u in self.units)

    @property
    def rows_quarantined(self) -> int:
        return sum(u.rows_quarantined for u in self.units)

    @property
    def quarantined_by_rule(self) -> dict[str, int]:
        return _sum_rules(u.quarantined_by_rule for u in self.units)

    @property
    def warnings_by_rule(self) -> dict[str, int]:
        return _sum_rules(u.warnings_by_rule for u in self.units)

    @property
    def warnings(self) -> int:
        return sum(self.warnings_by_rule.values())

    @property
    def carried_forward_from(self) -> dt.date | None:
        """The oldest date any of its bodies' data is carried forward from."""
        dates = [u.carried_forward_from for u in self.units if u.carried_forward_from]
        return min(dates) if dates else None


def _sum_rules(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for rule, n in part.items():
            total[rule] = total.get(rule, 0) + int(n)
    return dict(sorted(total.items()))


@dataclass(frozen=True)
class DayReport:
    """The Data quality page of one date."""

    day: dt.date
    edition: Edition | None
    edition_error: str | None
    categories: tuple[CategoryRow, ...]
    bodies_reported: tuple[str, ...]
    bodies_missing: tuple[str, ...]
    has_package: bool
    has_docs: bool

    @property
    def totals(self) -> dict[str, int]:
        return {
            "rows_in": sum(c.rows_in for c in self.categories),
            "rows_published": sum(c.rows_published for c in self.categories),
            "rows_quarantined": sum(c.rows_quarantined for c in self.categories),
            "warnings": sum(c.warnings for c in self.categories),
        }

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.categories:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the page (``/osms/api/quality/<D>``)."""
        return {
            "day": self.day.isoformat(),
            "edition": self.edition.code if self.edition else None,
            "edition_error": self.edition_error,
            "bodies_reported": list(self.bodies_reported),
            "bodies_missing": list(self.bodies_missing),
            "has_package": self.has_package,
            "has_data_docs": self.has_docs,
            "totals": self.totals,
            "categories": {
                c.code: {
                    "row": c.row, "status": c.status, "rows_in": c.rows_in, "rows_published": c.rows_published,
                    "rows_quarantined": c.rows_quarantined, "quarantined_by_rule": c.quarantined_by_rule,
                    "warnings_by_rule": c.warnings_by_rule, "package_rows": c.package_rows,
                    "carried_forward_from": _iso(c.carried_forward_from),
                    "bodies": {u.body: {
                        "status": u.status, "reason": u.reason, "rows_in": u.rows_in,
                        "rows_published": u.rows_published, "rows_quarantined": u.rows_quarantined,
                        "quarantined_by_rule": u.quarantined_by_rule, "warnings_by_rule": u.warnings_by_rule,
                        "carried_forward_from": _iso(u.carried_forward_from),
                        "feeds": {f.system: {
                            "status": f.status, "reason": f.reason, "carried_forward_from": _iso(f.carried_forward_from),
                            "rows_in": f.rows_in, "rows_published": f.rows_published,
                            "rows_quarantined": f.rows_quarantined, "decidable": f.decidable,
                            "decision": f.decision.as_dict() if f.decision else None,
                            "decisions": [d.as_dict() for d in f.decisions],
                        } for f in u.feeds},
                    } for u in c.units},
                } for c in self.categories
            },
        }


def _iso(d: dt.date | None) -> str | None:
    return d.isoformat() if d else None


def docs_dir(root: Path, day: dt.date) -> Path:
    """The GX Data Docs site of a date (see ``osms.quality.docs``)."""
    return layout.Paths(root).data_docs(day)


def day_report(root: Path, day: dt.date, language: str = DEFAULT) -> DayReport:
    """Per category and body: verdict, counts, rules, carried-forward dates and QA's decisions on D.

    Names of categories, bodies and systems are the registry's in ``language``.
    """
    from osms.package.plan import plan_units, units_verdict

    has_package = (layout.package_dir(root, day) / MANIFEST).is_file()
    # the docs page renders them when a report is newer: reports are enough
    has_docs = layout.Paths(root).data_docs_index(day).is_file() or bool(layout.Paths(root).gx_reports(day))
    try:
        run = Run.of(day, data_dir=root)
    except NoEditionInForce as exc:
        return DayReport(day, None, str(exc), (), (), (), has_package, has_docs)
    edition = run.edition
    statuses: dict[str, BodyStatus | None] = {}
    unreadable: dict[str, str] = {}
    for b in edition.bodies:
        try:
            statuses[b.code] = read_status(root, day, b.code)
        except StatusUnreadable as exc:
            statuses[b.code], unreadable[b.code] = None, f"its status file is unreadable: {exc.problem}"
    units = plan_units(root, day, edition, earliest=run.earliest)
    decisions = Decisions(root)
    quality = _read(layout.package_dir(root, day) / QUALITY, QualityDocument) if has_package else None
    rows = []
    for ec in edition.categories:
        cat_units = [u for u in units if u.category == ec.code]
        unit_rows = []
        for body in sorted({u.body for u in cat_units}):
            mine = [u for u in cat_units if u.body == body]
            carried = sorted(u.carried_forward_from for u in mine if u.carried_forward_from)
            first = mine[0]
            reported = _reported(statuses.get(body), ec.code)
            unit_rows.append(UnitRow(
                body=body, status=first.body_status,
                reason=unreadable.get(body) or (first.body_reason if first.body_status != "published" else None),
                carried_forward_from=carried[0] if carried else None,
                reported=reported,
                feeds=tuple(_feed_row(root, day, edition, u, reported, decisions, language) for u in mine),
                body_name=local_name(edition.body(body), language),
            ))
        q_cat = quality.categories.get(ec.code) if quality is not None else None
        rows.append(CategoryRow(
            row=ec.row, code=ec.code, name=local_name(ec.category, language), provisional=ec.provisional,
            status=units_verdict(cat_units), units=tuple(unit_rows),
            package_rows=q_cat.rows if q_cat is not None else None,
        ))
    return DayReport(
        day=day, edition=edition, edition_error=None, categories=tuple(rows),
        bodies_reported=tuple(sorted(b for b, s in statuses.items() if s is not None)),
        bodies_missing=tuple(sorted(b for b, s in statuses.items() if s is None)),
        has_package=has_package, has_docs=has_docs,
    )


def _feed_row(root: Path, day: dt.date, edition: Edition, unit: Any, reported: CategoryStatus | None,
              decisions: Decisions, language: str) -> FeedRow:
    """A feed's row: its verdict and counts on D, and what QA decided or may decide about it."""
    feed_id = f"{unit.body}.{unit.system}.{unit.category}"
    decidable = unit.status in ("held_back", "released")
    info = (reported.feeds.get(unit.system) or {}) if reported is not None else {}
    releasable = decidable and info.get("kind") != "schema_change" and layout.validated(
        root, day, unit.body, unit.category).is_file()
    return FeedRow(system=unit.system, status=unit.status, reason=unit.reason,
                   carried_forward_from=unit.carried_forward_from,
                   rows_in=int(unit.counts.get("rows_in", 0)),
                   rows_published=int(unit.counts.get("rows_published", 0)),
                   rows_quarantined=int(unit.counts.get("rows_quarantined", 0)),
                   system_name=local_name(edition.system(unit.system), language),
                   decisions=tuple(decisions.of_feed(day, feed_id)), decision=unit.decision,
                   decidable=decidable, releasable=releasable)


def _reported(status: BodyStatus | None, category: str) -> CategoryStatus | None:
    if status is None:
        return None
    try:
        return status.category(category)
    except KeyError:
        return None


@dataclass(frozen=True)
class TrendPoint:
    day: dt.date
    rows_in: int | None  # None: no body reported the category that day
    rows_quarantined: int | None

    @property
    def quarantine_rate(self) -> float | None:
        if self.rows_in is None:
            return None
        return (self.rows_quarantined or 0) / self.rows_in if self.rows_in else 0.0


@dataclass(frozen=True)
class Trend:
    """Rows in and quarantine rate of each category over the days up to D."""

    days: tuple[dt.date, ...]
    series: dict[str, tuple[TrendPoint, ...]] = field(default_factory=dict)


def trends(root: Path, day: dt.date, days: int = TREND_DAYS) -> Trend:
    """Per category, the sums over its bodies of rows in and quarantined on each of ``days`` dates to D."""
    span = tuple(day - dt.timedelta(days=k) for k in range(days - 1, -1, -1))
    registry = default_registry()
    sums: dict[str, dict[dt.date, list[int]]] = {}
    for d in span:
        try:
            edition = registry.edition_on(d)
        except NoEditionInForce:
            continue
        for body in edition.bodies:
            st = read_status_or_none(root, d, body.code)
            if st is None:
                continue
            for c in st.categories:
                if c.status == "failed" and not c.rows_in:
                    continue  # nothing arrived: a gap, not a zero
                acc = sums.setdefault(c.category, {}).setdefault(d, [0, 0])
                acc[0] += c.rows_in
                acc[1] += c.rows_quarantined
    try:
        codes = [c.code for c in registry.edition_on(day).categories]
    except NoEditionInForce:
        codes = []
    codes += sorted(set(sums) - set(codes))
    series = {
        code: tuple(TrendPoint(d, *(sums.get(code, {}).get(d) or (None, None))) for d in span) for code in codes
    }
    return Trend(days=span, series=series)


# --------------------------------------------------------------------------- the package view


@dataclass(frozen=True)
class PackageView:
    """A package's manifest, the checks of its files, signature and chain link, and its receipt."""

    day: dt.date
    exists: bool
    manifest: Manifest | None  # None: none, or one that does not read as a manifest (``problems`` says why)
    manifest_sha256: str | None
    problems: tuple[Problem, ...]
    files: tuple[dict[str, Any], ...]  # manifest entries with "ok" (checksum and size) added
    signature_ok: bool | None  # None: no public key to check with
    chain: dict[str, Any]
    receipt: Receipt | None  # None: not delivered (or a receipt.json that does not read as one)
    public_key: str | None
    chain_start: ChainStart | None = None  # the delivery chain's start (None: not yet)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the page (``/osms/api/package/<D>``)."""
        start = self.chain_start
        return {
            "day": self.day.isoformat(), "exists": self.exists,
            "manifest": self.manifest.model_dump(mode="json", by_alias=True) if self.manifest is not None else None,
            "manifest_sha256": self.manifest_sha256, "problems": [str(p) for p in self.problems],
            "files": list(self.files), "signature_ok": self.signature_ok, "chain": self.chain,
            "receipt": self.receipt.as_dict() if self.receipt is not None else None,
            "chain_start": {"start": start.start.isoformat(), "set_by": start.set_by, "set_at": start.set_at}
            if start is not None else None,
        }


def package_view(root: Path, day: dt.date, public_key: Path | None) -> PackageView:
    """Read and check the package of D (nothing is checked against the receiver)."""
    from osms.package.build import verify_package

    pdir = layout.package_dir(root, day)
    manifest_path = pdir / MANIFEST
    start = _read(layout.chain_start(root), ChainStart)
    receipt = _read(pdir / RECEIPT, Receipt)
    if not manifest_path.is_file():
        return PackageView(day, False, None, None, (), (), None, {}, receipt, None, start)
    manifest = _read(manifest_path, Manifest)
    key = public_key.read_bytes() if public_key is not None and public_key.is_file() else None
    problems = tuple(verify_package(pdir, key))
    signature_ok = None if key is None else not any(p.kind in ("signature", "key") for p in problems)
    files = []
    for entry in manifest.files if manifest is not None else ():
        bad = [str(p) for p in problems if p.kind == "file" and p.file == entry.name]
        files.append({**entry.model_dump(mode="json"), "ok": not bad, "problems": bad})
    previous = manifest.previous_manifest_sha256 if manifest is not None else None
    broken = [str(p) for p in problems if p.kind == "chain"]
    chain = {
        "previous_manifest_sha256": previous,
        "previous_day": _previous_day(root, day, previous),
        "ok": not broken,
        "problems": broken,
    }
    return PackageView(
        day=day, exists=True, manifest=manifest, manifest_sha256=sha256_file(manifest_path), problems=problems,
        files=tuple(files), signature_ok=signature_ok, chain=chain, receipt=receipt,
        public_key=public_key.name if public_key is not None and public_key.is_file() else None, chain_start=start,
    )


def _previous_day(root: Path, day: dt.date, sha: str | None) -> str | None:
    """The date of the package the chain link names: the day before's, when its hash matches."""
    from osms.package.chain import manifest_sha256

    previous = layout.package_dir(root, day - dt.timedelta(days=1))
    if not sha or manifest_sha256(previous) != sha:
        return None  # verify_package names the broken link
    return previous.name


def _read(path: Path, model: Any) -> Any:
    """A document through its model; None when it is absent or does not read as one (a page shows what it can)."""
    try:
        return model.parse(path.read_bytes())
    except (OSError, DocumentError):
        return None
