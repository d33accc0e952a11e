"""The consolidated daily package: one signed set of files per logical date D with
every person whose OSMS contributions the state pays under Decree No. 660.

``packages/<D>/`` holds ``records.parquet`` (one row per (IIN, category) with the
person's fields, period, decree row, funding and lineage), ``changes.parquet``
(what differs from the previous *delivered* package), ``quality.json`` (counts
and verdicts, no personal data), ``manifest.json`` (canonical JSON: files,
hashes, chain link) and ``manifest.sig`` (Ed25519 over the manifest's bytes).
Delivery adds ``receipt.json`` later; it is never part of the manifest.

Rules, in the decree's words:

- A (body, category) **unit** that is not ``published`` on D is carried forward
  from its last published date, so a missing or failed body never makes its
  persons look removed.
- When feeds disagree about a person, person fields take the value reported by
  the most source records (a missing value is not a vote; ties go to the
  smallest value), ``period_start`` the earliest, ``period_end`` NULL if any
  source has it open, else the latest. Conflicts are counted per field.
- A person in the previous delivered package whose record is quarantined on the
  date the unit's data comes from keeps the previous package's row: bad data from
  a body must not cost anyone coverage. A new person with only quarantined
  records is not added.

Consolidation (:mod:`osms.package.consolidate`) runs in DuckDB one category and one range
of IINs at a time, within the task's memory budget, appending each range to the
files in order: the national package (about 12 million rows) and a larger one
are built in bounded memory. Nothing in a package depends on the wall clock: the
same D and inputs give the same bytes.
DuckDB, pyarrow, GX and cryptography are imported inside functions: the package
DAG imports this module at parse time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osms.core import layout
from osms.core.documents import (
    CHANGES,
    MANIFEST,
    PACKAGE_FILES,
    PACKAGE_SCHEMA,
    QUALITY,
    QUALITY_SCHEMA,
    RECEIPT,
    RECORDS,
    SIGNATURE,
    DocumentError,
    Manifest,
    Problem,
    QualityDocument,
    canonical_json,
)
from osms.package.consolidate import (
    CONFLICT_FIELDS,
    CategorySources,
    ConsolidationStats,
    changes_schema,
    records_schema,
)
from osms.core.decisions import Decision, Decisions
from osms.core.files import fsync_dir, private_dir, sha256_file, write_bytes_atomic
from osms.core.registry import default_registry
from osms.core.status import StatusUnreadable, read_status

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from osms.core.registry import Edition

__all__ = [
    "PACKAGE_SCHEMA",
    "PackageError",
    "PackageGateError",
    "PackageResult",
    "build_package",
    "canonical_json",
    "run_package_suite",
    "verify_package",
]

log = logging.getLogger(__name__)

PRODUCER = "osms-pipeline"
# Fixed row groups make the bytes independent of how DuckDB batches its output;
# half a million rows keeps a row group of records.parquet near 60 MB in memory.
ROW_GROUP_ROWS = 500_000
# The package suite's row-level rules run on chunks of this many rows; None: the
# task budget's (GX on pandas holds several copies of a frame per expectation).
GATE_CHUNK_ROWS: int | None = None

# a feed's verdict on D; "released": held back, and QA's release of D shapes this package
UnitStatus = Literal["published", "released", "held_back", "failed", "missing"]
USED_AS_PUBLISHED = ("published", "released")
CategoryVerdict = Literal["published", "carried_forward", "partial", "missing"]


class PackageError(RuntimeError):
    """A package cannot be built or would change a delivered one; the message says why."""


class PackageGateError(PackageError):
    """The package suite failed: no package is written."""


@dataclass(frozen=True)
class PackageResult:
    """A built package: where it is, its id, its manifest hash, rows and per-category counts."""

    day: dt.date
    path: Path
    package_id: str
    manifest_sha256: str
    rows: int
    categories: dict[str, dict[str, Any]]


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


# --------------------------------------------------------------------------- small public helpers


def package_id(day: dt.date) -> str:
    """The package id of a logical date: ``OSMS-<YYYY-MM-DD>``."""
    return f"OSMS-{day.isoformat()}"


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


def plan_units(data_dir: Path, day: dt.date, edition: Edition, *, earliest: dt.date | None = None) -> list[Unit]:
    """Every feed of the edition with its verdict on D and the date its data comes from.

    QA's decisions count as the package of D follows them (:mod:`osms.core.decisions`): a feed
    held back on D and released counts as published (``released``), and a day QA released
    counts as published when the data to carry forward is looked for.
    """
    earliest = earliest or min(e.effective_from for e in default_registry().editions)
    earlier_days = sorted((d for d, _ in layout.dated_dirs(data_dir / "status") if earliest <= d < day), reverse=True)
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
    for path in sorted((data_dir / "decisions").glob("*/*.json")) if (data_dir / "decisions").is_dir() else ():
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


# --------------------------------------------------------------------------- build


def build_package(
    *, day: dt.date, data_dir: Path, signing_key_pem: bytes, producer_version: str, memory_limit: str | None = None,
    receiver: Any = None, may_start: bool = True, started_by: str = "the first package built",
) -> PackageResult:
    """Build, check, sign and place ``packages/<D>/``, chained on D-1's delivered package; never change a delivered one.

    ``receiver`` (an :class:`osms.package.chain.Receiver`) lets the chain recover a lost receipt
    or have a lost D-1 rebuilt; without it only local receipts count. ``may_start`` and ``started_by``: whether
    this build may write the chain's start when none is written (see :func:`osms.package.chain.link`). ``memory_limit``
    overrides DuckDB's share of the task's memory budget (:mod:`osms.core.budget`). One build
    of a date at a time: a second waits for the first (a lock beside the packages).
    """
    from osms.package.chain import ChainBroken, link

    data_dir = Path(data_dir)
    key = _private_key(signing_key_pem)
    with _build_lock(data_dir, day):
        _remove_leftovers(data_dir, day)
        chain = link(data_dir, day, receiver, may_start=may_start, started_by=started_by)
        if chain.rebuild is not None:
            rebuilt = build_package(day=chain.rebuild, data_dir=data_dir, signing_key_pem=signing_key_pem,
                                    producer_version=producer_version, memory_limit=memory_limit, receiver=receiver)
            if rebuilt.manifest_sha256 != chain.expected_sha256:
                raise ChainBroken(
                    f"{chain.rebuild} was delivered with manifest sha256 {chain.expected_sha256}, but rebuilding it"
                    f" here gives {rebuilt.manifest_sha256}: its inputs changed since; restore its package folder"
                    f" from a backup to chain {day} on it")
            chain = link(data_dir, day, receiver)  # the receipt is recovered now that the package is back
        log.info("package %s %s", day, chain.how)
        return _build(day, data_dir, key, producer_version, memory_limit, chain.previous)


def _build(day: dt.date, data_dir: Path, key: Any, producer_version: str, memory_limit: str | None,
           previous: Path | None) -> PackageResult:
    from osms.core.budget import task_budget
    from osms.package.consolidate import consolidate, open_duckdb
    from osms.core.files import BackgroundWriter, RowGroupWriter

    registry = default_registry()
    edition = registry.edition_on(day)
    budget = task_budget()
    final = layout.package_dir(data_dir, day)
    pid = os.getpid()
    work = final.parent / f".{day.isoformat()}.tmp-{pid}"
    spill = data_dir / "tmp" / f"package-{day.isoformat()}-{pid}"
    for d in (work, spill):
        shutil.rmtree(d, ignore_errors=True)
        private_dir(d)  # 0700: the package folder is this one renamed, its files 0600
    try:
        earliest = min(e.effective_from for e in registry.editions)
        units = plan_units(data_dir, day, edition, earliest=earliest)
        with _step("consolidate"), open_duckdb(spill, memory_limit or budget.duckdb_limit) as con:
            categories = _category_sources(con, data_dir, units, edition, previous)
            # each file compressed in a thread of its own, while the next range is consolidated
            records = BackgroundWriter(RowGroupWriter(work / RECORDS, records_schema(), row_group_rows=ROW_GROUP_ROWS,
                                                      compression_level=3))
            changes = BackgroundWriter(RowGroupWriter(work / CHANGES, changes_schema(), row_group_rows=ROW_GROUP_ROWS,
                                                      compression_level=3))
            try:
                stats = consolidate(con, categories, previous / RECORDS if previous else None, records=records,
                                    changes=changes, partition_rows=budget.package_partition_rows)
            finally:
                records.close()
                changes.close()
            log.info("package: %d rows in %d ranges of IINs", records.rows, stats.ranges)
        quality = _quality_doc(day, edition, units, stats, previous, shaping_decisions(data_dir, day, units))
        write_bytes_atomic(quality.to_bytes(), work / QUALITY)
        with _step("package suite"):
            run_package_suite(
                work / RECORDS, expected_rows=quality.totals.rows, categories=[c.code for c in edition.categories]
            )
        manifest = _manifest_doc(day, edition, work, quality, previous, producer_version)
        manifest_bytes = manifest.to_bytes()
        write_bytes_atomic(manifest_bytes, work / MANIFEST)
        write_bytes_atomic(key.sign(manifest_bytes), work / SIGNATURE)
        _place(work, final)
        return PackageResult(
            day=day, path=final, package_id=manifest.package_id, manifest_sha256=sha256_file(final / MANIFEST),
            rows=quality.totals.rows,
            categories={k: v.model_dump(mode="json") for k, v in quality.categories.items()},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)


@contextmanager
def _build_lock(data_dir: Path, day: dt.date) -> Iterator[None]:
    """One build (or delivery) of a date at a time: an exclusive lock on ``locks/package-<D>.lock``."""
    import fcntl

    path = layout.package_lock(Path(data_dir), day)
    private_dir(path.parent)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


package_lock = _build_lock  # the delivery takes the same lock


def _remove_leftovers(data_dir: Path, day: dt.date) -> None:
    """What a killed build of D left: work folders and spill folders (under the lock, no build of D is running)."""
    parent = layout.package_dir(data_dir, day).parent
    for pattern, root in ((f".{day.isoformat()}.tmp-*", parent), (f".{day.isoformat()}.old-*", parent),
                          (f"package-{day.isoformat()}-*", data_dir / "tmp")):
        for path in root.glob(pattern) if root.is_dir() else ():
            log.warning("removing %s, left by an earlier build of %s that did not finish", path, day)
            shutil.rmtree(path, ignore_errors=True)


def _category_sources(con: duckdb.DuckDBPyConnection, data_dir: Path, units: list[Unit], edition: Edition,
                      previous: Path | None) -> list[CategorySources]:
    """Every category of the edition with its feeds' files (of the day each comes from), and any other category
    of the previous package."""
    codes = {c.code for c in edition.categories}
    out = []
    for cat in edition.categories:
        used = tuple(
            (u.body, u.system, layout.validated(data_dir, u.source_day, u.body, u.category),
             layout.quarantine(data_dir, u.source_day, u.body, u.category))
            for u in sorted(units, key=lambda u: (u.body, u.system)) if u.category == cat.code and u.source_day
        )
        out.append(CategorySources(category=cat.code, decree_row=cat.row, funding=cat.funding, units=used))
    if previous is not None:
        old = con.execute("SELECT DISTINCT category FROM read_parquet(?)", [str(previous / RECORDS)]).fetchall()
        out += [CategorySources(category=c, decree_row=None, funding=None) for (c,) in old if c not in codes]
    return out


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Log how long a step of the build took (no data, only the step's name)."""
    t0 = time.perf_counter()
    yield
    log.info("package: %s took %.1f s", name, time.perf_counter() - t0)


def _place(work: Path, final: Path) -> None:
    """Move the finished package into place; a delivered one must come out byte-identical."""
    if (final / RECEIPT).is_file():
        differing = [n for n in (*PACKAGE_FILES, MANIFEST) if _read(final / n) != _read(work / n)]
        if differing:
            raise PackageError(
                f"{final} was delivered (it has {RECEIPT}) and a delivered package never changes, but rebuilding"
                f" it gives different {', '.join(differing)}: the inputs for {final.name} changed after delivery"
            )
        return  # identical: the delivered package stands, the rebuild is discarded
    if final.exists():
        # A directory cannot be renamed over a non-empty one: move the old aside first.
        aside = final.parent / f".{final.name}.old-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
        os.replace(work, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(work, final)
    fsync_dir(final.parent)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PackageError(f"the signing key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError(f"the signing key must be Ed25519, not {type(key).__name__}")
    return key


# --------------------------------------------------------------------------- quality.json and manifest


NOTES = (
    "records.parquet holds the common person fields only; category-specific columns stay in the validated"
    " files of the bodies.",
    "Conflict rule: a person field takes the value reported by the most source records (a missing value is"
    " not a vote; ties go to the smallest value); period_start is the earliest; period_end is empty if any"
    " source leaves it open, else the latest. conflicts counts the (iin, category) rows whose sources disagreed.",
    "A unit (body, category) not published on the date is carried forward from its last published date; a"
    " unit never published contributes nothing.",
    "records_carried_forward: rows of the previous delivered package kept because their source record is"
    " quarantined (per-record protection); a new person whose only record is quarantined is not added.",
    "changes compares person fields, period, decree row and funding; bodies, systems and sources are lineage.",
    "sources lists body/system/record_id of every record behind a row: lineage, not personal data.",
)


def _quality_doc(
    day: dt.date, edition: Edition, units: list[Unit], stats: ConsolidationStats, previous: Path | None,
    decisions: Sequence[Decision] = (),
) -> QualityDocument:
    """quality.json: per category, body and feed, counts and verdicts only."""
    categories: dict[str, Any] = {}
    for cat in sorted(c.code for c in edition.categories):
        cat_units = [u for u in units if u.category == cat]
        bodies = {}
        for body in sorted({u.body for u in cat_units}):
            mine = [u for u in cat_units if u.body == body]
            first = mine[0]
            c = first.body_counts
            carried = sorted(u.carried_forward_from for u in mine if u.carried_forward_from)
            never = [u.system for u in mine if u.source_day is None]
            reason = first.body_reason if first.body_status != "published" else None
            if never:
                note = "never published: contributes nothing" if len(never) == len(mine) else \
                    f"{', '.join(never)} never published: contributes nothing"
                reason = "; ".join(filter(None, [reason, note]))
            bodies[body] = {
                "status": first.body_status,
                "reason": reason,
                "rows_in": c.get("rows_in", 0),
                "rows_published": c.get("rows_published", 0),
                "rows_quarantined": c.get("rows_quarantined", 0),
                "quarantined_by_rule": c.get("quarantined_by_rule", {}),
                "carried_forward_from": carried[0].isoformat() if carried else None,
                "rows_used": sum(stats.used_by_unit.get((u.body, u.system, cat), 0) for u in mine),
                "records_carried_forward": stats.kept_by_body.get((cat, body), 0),
                "feeds": {
                    u.system: {
                        "status": u.status,
                        "reason": u.reason if u.source_day is not None else
                        "; ".join(filter(None, [u.reason, "never published: contributes nothing"])),
                        "carried_forward_from": u.carried_forward_from.isoformat() if u.carried_forward_from
                        else None,
                        "rows_in": u.counts.get("rows_in", 0),
                        "rows_published": u.counts.get("rows_published", 0),
                        "rows_quarantined": u.counts.get("rows_quarantined", 0),
                        "rows_used": stats.used_by_unit.get((u.body, u.system, cat), 0),
                        "decision": u.decision.as_dict() if u.decision else None,
                    }
                    for u in mine
                },
            }
        categories[cat] = {
            "status": category_verdict(cat_units),
            "rows": stats.rows.get(cat, 0),
            "decree_row": edition.category(cat).row,
            "records_carried_forward": stats.kept.get(cat, 0),
            "conflicts": stats.conflicts.get(cat, dict.fromkeys(CONFLICT_FIELDS, 0)),
            "bodies": bodies,
        }
    statuses = [c["status"] for c in categories.values()]
    totals = {
        "rows": sum(c["rows"] for c in categories.values()),
        "categories": {s: statuses.count(s) for s in ("published", "partial", "carried_forward", "missing")},
        "rows_quarantined": sum(b["rows_quarantined"] for c in categories.values() for b in c["bodies"].values()),
        "records_carried_forward": sum(c["records_carried_forward"] for c in categories.values()),
        "conflicts": {f: sum(c["conflicts"][f] for c in categories.values()) for f in CONFLICT_FIELDS},
    }
    return QualityDocument.parse({
        "schema": QUALITY_SCHEMA,
        "package_id": package_id(day),
        "logical_date": day.isoformat(),
        "edition": {"code": edition.code, "provisional": edition.provisional},
        "categories": categories,
        "totals": totals,
        "changes": {"against": previous.name if previous else None, **stats.changes},
        "notes": list(NOTES),
        "decisions": [d.as_dict() for d in decisions],
    })


def category_verdict(units: list[Unit]) -> CategoryVerdict:
    """A category's verdict from its feeds: published, partial, carried_forward or missing (a release publishes)."""
    published = [u for u in units if u.status in USED_AS_PUBLISHED]
    if len(published) == len(units):
        return "published"
    if not any(u.source_day is not None for u in units):
        return "missing"  # nothing published today and nothing ever before
    return "partial" if published else "carried_forward"


def _manifest_doc(
    day: dt.date, edition: Edition, work: Path, quality: QualityDocument, previous: Path | None, version: str
) -> Manifest:
    import pyarrow.parquet as pq

    files = []
    for name in PACKAGE_FILES:
        path = work / name
        rows = pq.ParquetFile(path).metadata.num_rows if name.endswith(".parquet") else None
        files.append({"name": name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": rows})
    return Manifest.parse({
        "schema": PACKAGE_SCHEMA,
        "package_id": package_id(day),
        "logical_date": day.isoformat(),
        "edition": {
            "code": edition.code,
            "provisional": edition.provisional,
            "decree": {"number": edition.decree.number, "date": edition.decree.date.isoformat(),
                       "title": edition.decree.title},
        },
        "previous_manifest_sha256": sha256_file(previous / MANIFEST) if previous else None,
        "files": files,
        "categories": {k: {"status": v.status, "rows": v.rows} for k, v in quality.categories.items()},
        "producer": {"name": PRODUCER, "version": version},
    })


# --------------------------------------------------------------------------- the package suite (GX)


def run_package_suite(records_path: Path, *, expected_rows: int, categories: Sequence[str]) -> None:
    """Run ``expectations/package.json`` over records.parquet; :class:`PackageGateError` naming the failed rules.

    Table-level rules see the whole file (its ``category`` column only); row-level
    rules run on chunks of the file cut where (category, iin) changes. The file is
    sorted by (category, iin), which is checked here, so a duplicate key always
    falls inside one chunk and the per-chunk uniqueness is uniqueness of the file.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from osms.core.budget import task_budget
    from osms.quality.frames import columns_used, to_frame
    from osms.quality.runner import rule_results, run_expectations
    from osms.quality.suites import load_suite_dict

    chunk_rows = GATE_CHUNK_ROWS or task_budget().gate_chunk_rows
    suite = load_suite_dict("package")
    parameters = {"expected_rows": int(expected_rows), "edition_categories": sorted(categories)}
    table_rules = [e for e in suite["expectations"] if e.get("meta", {}).get("scope") == "table"]
    row_rules = [e for e in suite["expectations"] if e not in table_rules]
    failures: dict[str, dict[str, Any]] = {}

    def run(expectations: list[dict[str, Any]], table: pa.Table) -> None:
        if not expectations:
            return
        results = rule_results(expectations, table.num_rows)
        for res in run_expectations(suite["name"], expectations, to_frame(table, columns_used(expectations) or
                                                                          table.column_names), parameters)["results"]:
            results[res["expectation_config"]["meta"]["rule"]].add(res)
        for r in results.values():
            if r.success and r.exception is None:
                continue
            f = failures.setdefault(r.rule, {"unexpected": 0, "exception": None})
            f["unexpected"] += r.unexpected_count
            f["exception"] = f["exception"] or r.exception

    pf = pq.ParquetFile(records_path)
    run(table_rules, pq.read_table(records_path, columns=["category"]))

    unsorted = 0
    carry: pa.Table | None = None
    last_key: tuple[str, str] | None = None
    batches = pf.iter_batches(batch_size=chunk_rows, columns=["iin", "category"])
    for batch in [*batches, None]:
        if batch is not None:
            incoming = pa.Table.from_batches([batch])
            chunk = incoming if carry is None else pa.concat_tables([carry, incoming])
            if chunk.num_rows < chunk_rows:
                carry = chunk
                continue
            cut = _key_boundary(chunk, chunk_rows)
            if cut >= chunk.num_rows:  # the last key may go on in the next batch
                carry = chunk
                continue
            chunk, carry = chunk.slice(0, cut), chunk.slice(cut)
        else:
            chunk, carry = carry, None
            if chunk is None or chunk.num_rows == 0:
                break
        chunk = chunk.combine_chunks()
        cat, iin = chunk.column("category"), chunk.column("iin")
        if chunk.num_rows > 1:
            a_cat, b_cat = cat.slice(0, chunk.num_rows - 1), cat.slice(1)
            a_iin, b_iin = iin.slice(0, chunk.num_rows - 1), iin.slice(1)
            ordered = pc.or_(pc.less(a_cat, b_cat), pc.and_(pc.equal(a_cat, b_cat), pc.less_equal(a_iin, b_iin)))
            unsorted += chunk.num_rows - 1 - pc.sum(pc.fill_null(ordered, False).cast(pa.int64())).as_py()
        first = (cat[0].as_py(), iin[0].as_py())
        if last_key is not None and first < last_key:
            unsorted += 1
        last_key = (cat[-1].as_py(), iin[-1].as_py())
        run(row_rules, chunk)

    problems = [
        # GX's exception text can quote a cell value (an IIN): it stays out of the message
        f"{rule}: {f['unexpected']:,} rows failed" if f["exception"] is None else f"{rule}: could not be evaluated"
        for rule, f in sorted(failures.items())
    ]
    if unsorted:
        problems.append(f"records.parquet is not sorted by (category, iin) at {unsorted:,} places")
    if problems:
        raise PackageGateError(
            f"the package suite failed for {records_path.parent.name}, no package is written: " + "; ".join(problems)
        )


def _key_boundary(chunk: pa.Table, at: int) -> int:
    """The first position at or after ``at`` where (category, iin) differs from the row before."""
    cat, iin = chunk.column("category"), chunk.column("iin")
    cut = at
    while cut < chunk.num_rows and cat[cut] == cat[cut - 1] and iin[cut] == iin[cut - 1]:
        cut += 1
    return cut


# --------------------------------------------------------------------------- verification


def verify_package(package_dir: Path, public_key_pem: bytes | None, *,
                   previous_manifest: Path | None = None) -> list[Problem]:
    """Every problem with a package, one :class:`~osms.core.documents.Problem` each (a sentence naming the file,
    with its kind); [] when all is well.

    Without a public key (``None``) the signature is not checked; everything else is.
    """
    package_dir = Path(package_dir)
    manifest_path = package_dir / MANIFEST
    if not manifest_path.is_file():
        return [Problem("manifest", MANIFEST, f"missing from {package_dir}")]
    manifest_bytes = manifest_path.read_bytes()
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        return [Problem("manifest", MANIFEST, f"not valid JSON ({exc})")]
    problems: list[Problem] = []
    if not isinstance(manifest, dict) or manifest.get("schema") != PACKAGE_SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else None
        return [Problem("manifest", MANIFEST, f"schema is {got!r}, not {PACKAGE_SCHEMA!r}")]
    try:
        Manifest.parse(manifest)
    except DocumentError as exc:
        problems.append(Problem("manifest", MANIFEST, f"does not fit the manifest's contract ({exc})"))
    if canonical_json(manifest) != manifest_bytes:
        problems.append(Problem("manifest", MANIFEST, "not in canonical JSON form"))

    problems += _verify_files(package_dir, manifest)
    if public_key_pem is not None:
        problems += _verify_signature(package_dir, manifest_bytes, public_key_pem)
    problems += _verify_chain(package_dir, manifest, previous_manifest)
    return problems


def _verify_files(package_dir: Path, manifest: dict[str, Any]) -> list[Problem]:
    import pyarrow.parquet as pq

    problems = []
    listed = {f.get("name") for f in manifest.get("files", [])}
    for name in PACKAGE_FILES:
        if name not in listed:
            problems.append(Problem("file", name, f"not listed in {MANIFEST}"))
    for entry in manifest.get("files", []):
        name = entry.get("name", "?")
        path = package_dir / name
        if Path(name).name != name or name in (MANIFEST, SIGNATURE, RECEIPT):
            problems.append(Problem("file", name, "not a file a manifest may list"))
            continue
        if not path.is_file():
            problems.append(Problem("file", name, f"listed in {MANIFEST} but missing"))
            continue
        if path.stat().st_size != entry.get("bytes"):
            size = path.stat().st_size
            problems.append(Problem("file", name,
                                    f"size {size} bytes differs from the manifest ({entry.get('bytes')})"))
        if sha256_file(path) != entry.get("sha256"):
            problems.append(Problem("file", name, "SHA-256 differs from the manifest"))
        elif name.endswith(".parquet"):
            rows = pq.ParquetFile(path).metadata.num_rows
            if rows != entry.get("rows"):
                problems.append(Problem("file", name, f"{rows} rows, the manifest says {entry.get('rows')}"))
    return problems


def _verify_signature(package_dir: Path, manifest_bytes: bytes, public_key_pem: bytes) -> list[Problem]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig_path = package_dir / SIGNATURE
    if not sig_path.is_file():
        return [Problem("signature", SIGNATURE, "missing")]
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        return [Problem("key", "public key", f"not a PEM public key ({exc})")]
    if not isinstance(key, Ed25519PublicKey):
        return [Problem("key", "public key", f"must be Ed25519, not {type(key).__name__}")]
    signature = sig_path.read_bytes()
    if len(signature) != 64:
        return [Problem("signature", SIGNATURE, f"{len(signature)} bytes, an Ed25519 signature is 64")]
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        return [Problem("signature", SIGNATURE, f"the signature does not match {MANIFEST}")]
    return []


def _verify_chain(package_dir: Path, manifest: dict[str, Any], previous_manifest: Path | None) -> list[Problem]:
    claimed = manifest.get("previous_manifest_sha256")
    if previous_manifest is not None:
        previous_manifest = Path(previous_manifest)
        shown = _short_path(previous_manifest)
        if not previous_manifest.is_file():
            return [_chain(f"{shown} does not exist")]
        actual = sha256_file(previous_manifest)
        if claimed is None:
            return [_chain(f"previous_manifest_sha256 is null, but {shown} was given as the previous package")]
        if claimed != actual:
            return [_chain(f"previous_manifest_sha256 {claimed} does not match {shown} (its SHA-256 is {actual})")]
        return []
    # Without an explicit previous manifest: look among the package's siblings.
    try:
        day = dt.date.fromisoformat(str(manifest.get("logical_date")))
    except ValueError:
        return [Problem("manifest", MANIFEST, f"logical_date {manifest.get('logical_date')!r} is not a date")]
    earlier = sorted(
        ((d, p) for d, p in layout.dated_dirs(package_dir.resolve().parent) if d < day and (p / MANIFEST).is_file()),
        reverse=True,
    )
    if claimed is None:
        delivered = [p for _, p in earlier if (p / RECEIPT).is_file()]
        if delivered:
            return [_chain(f"previous_manifest_sha256 is null, but {_short_path(delivered[0] / MANIFEST)}"
                           " was delivered before")]
        return []
    if not earlier:
        return []  # a package on its own (copied out): the link cannot be checked here
    for _, p in earlier:
        if sha256_file(p / MANIFEST) == claimed:
            return []
    return [_chain(f"previous_manifest_sha256 {claimed} does not match {_short_path(earlier[0][1] / MANIFEST)}"
                   " nor any earlier manifest beside this package")]


def _chain(message: str) -> Problem:
    return Problem("chain", "chain", message)


def _short_path(path: Path) -> str:
    """``packages/<D>/manifest.json`` style: the last three parts of a path."""
    return "/".join(Path(path).parts[-3:])
