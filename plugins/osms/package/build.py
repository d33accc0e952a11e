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
  persons look removed (:mod:`osms.package.plan`).
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

This module builds and writes the files (quality.json, the manifest, the signature) and places
the package; which data go in is :mod:`osms.package.plan`, the gate :mod:`osms.package.gate`,
verification :mod:`osms.package.verify`. Their public names are importable from here too.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.core import layout
from osms.core.decisions import Decision
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
    Manifest,
    QualityDocument,
    canonical_json,
)
from osms.core.files import fsync_dir, locked, private_dir, sha256_file, write_bytes_atomic
from osms.package.consolidate import (
    CONFLICT_FIELDS,
    CategorySources,
    ConsolidationStats,
    changes_schema,
    records_schema,
)
from osms.package.errors import PackageError, PackageGateError
from osms.package.gate import run_package_suite
from osms.package.plan import Unit, plan_units, shaping_decisions, units_verdict
from osms.package.verify import verify_package

if TYPE_CHECKING:
    import duckdb

    from osms.core.registry import Edition
    from osms.core.run import Run

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

@dataclass(frozen=True)
class PackageResult:
    """A built package: where it is, its id, its manifest hash, rows and per-category counts."""

    day: dt.date
    path: Path
    package_id: str
    manifest_sha256: str
    rows: int
    categories: dict[str, dict[str, Any]]


def package_id(day: dt.date) -> str:
    """The package id of a logical date: ``OSMS-<YYYY-MM-DD>``."""
    return f"OSMS-{day.isoformat()}"


# --------------------------------------------------------------------------- build


def build_package(
    run: Run, *, signing_key_pem: bytes, producer_version: str, memory_limit: str | None = None,
    receiver: Any = None, may_start: bool = True, started_by: str = "the first package built",
) -> PackageResult:
    """Build, check, sign and place ``packages/<D>/`` of ``run``'s day, chained on D-1's delivered package.

    A delivered package is never changed.

    ``receiver`` (an :class:`osms.package.chain.Receiver`) lets the chain recover a lost receipt
    or have a lost D-1 rebuilt; without it only local receipts count. ``may_start`` and ``started_by``: whether
    this build may write the chain's start when none is written (see :func:`osms.package.chain.link`). ``memory_limit``
    overrides DuckDB's share of the task's memory budget (:mod:`osms.core.budget`). One build
    of a date at a time: a second waits for the first (a lock beside the packages).
    """
    from osms.package.chain import ChainBroken, link

    day, data_dir = run.day, run.root
    key = _private_key(signing_key_pem)
    with _build_lock(data_dir, day):
        _remove_leftovers(data_dir, day)
        chain = link(data_dir, day, receiver, may_start=may_start, started_by=started_by)
        if chain.rebuild is not None:
            rebuilt = build_package(run.on(chain.rebuild), signing_key_pem=signing_key_pem,
                                    producer_version=producer_version, memory_limit=memory_limit, receiver=receiver)
            if rebuilt.manifest_sha256 != chain.expected_sha256:
                raise ChainBroken(
                    f"{chain.rebuild} was delivered with manifest sha256 {chain.expected_sha256}, but rebuilding it"
                    f" here gives {rebuilt.manifest_sha256}: its inputs changed since; restore its package folder"
                    f" from a backup to chain {day} on it")
            chain = link(data_dir, day, receiver)  # the receipt is recovered now that the package is back
        log.info("package %s %s", day, chain.how)
        return _build(run, key, producer_version, memory_limit, chain.previous)


def _build(run: Run, key: Any, producer_version: str, memory_limit: str | None,
           previous: Path | None) -> PackageResult:
    from osms.package.consolidate import consolidate, open_duckdb
    from osms.core.files import BackgroundWriter, RowGroupWriter

    day, data_dir, edition, budget = run.day, run.root, run.edition, run.budget
    final = layout.package_dir(data_dir, day)
    pid = os.getpid()
    work = run.paths.package_work(day, pid)
    spill = run.paths.scratch("package", day, pid=pid)
    for d in (work, spill):
        shutil.rmtree(d, ignore_errors=True)
        private_dir(d)  # 0700: the package folder is this one renamed, its files 0600
    try:
        units = plan_units(data_dir, day, edition, earliest=run.earliest)
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
                work / RECORDS, expected_rows=quality.totals.rows, categories=[c.code for c in edition.categories],
                chunk_rows=budget.gate_chunk_rows, expectations_dir=run.expectations_dir,
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
    path = layout.package_lock(Path(data_dir), day)
    private_dir(path.parent)
    with locked(path):
        yield


package_lock = _build_lock  # the delivery takes the same lock


def _remove_leftovers(data_dir: Path, day: dt.date) -> None:
    """What a killed build of D left: work folders and spill folders (under the lock, no build of D is running)."""
    paths = layout.Paths(data_dir)
    for path in (*paths.package_leftovers(day), *paths.scratches("package", day)):
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
        aside = layout.beside(final, f"old-{os.getpid()}")
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
            "status": units_verdict(cat_units),
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
