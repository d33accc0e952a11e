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

Consolidation runs in DuckDB with a memory limit and a spill directory, so that
the national scale (about 13 million rows) fits in bounded memory. Nothing in a
package depends on the wall clock: the same D and inputs give the same bytes.
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

from osms import layout
from osms.files import fsync_dir, sha256_file, write_bytes_atomic
from osms.registry import default_registry
from osms.status import read_status

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from osms.registry import Edition

__all__ = [
    "PACKAGE_SCHEMA",
    "PackageError",
    "PackageGateError",
    "PackageResult",
    "build_package",
    "canonical_json",
    "previous_delivered",
    "run_package_suite",
    "verify_package",
]

log = logging.getLogger(__name__)

PACKAGE_SCHEMA = "osms.package/1"
PRODUCER = "osms-pipeline"
RECORDS, CHANGES, QUALITY, MANIFEST, SIGNATURE, RECEIPT = (
    "records.parquet", "changes.parquet", "quality.json", "manifest.json", "manifest.sig", "receipt.json",
)
PACKAGE_FILES = (RECORDS, CHANGES, QUALITY)  # what the manifest lists, in this order
# Fixed row groups make the bytes independent of how DuckDB batches its output;
# half a million rows keeps a row group of records.parquet near 60 MB in memory.
ROW_GROUP_ROWS = 500_000
_FETCH_ROWS = 100_000
# The package suite's row-level rules run on chunks of this many rows (GX on
# pandas holds several copies of a frame per expectation).
GATE_CHUNK_ROWS = 1_000_000
PERSON_FIELDS = ("last_name", "first_name", "patronymic", "birth_date", "sex")
CONFLICT_FIELDS = PERSON_FIELDS + ("period_start", "period_end")
# What a ``changed`` membership compares: the person, the period and the decree's
# facts. ``bodies``/``systems``/``sources`` are lineage: a second body reporting
# the same person is not a change of membership.
CHANGE_FIELDS = PERSON_FIELDS + ("period_start", "period_end", "decree_row", "funding")

UnitStatus = Literal["published", "held_back", "failed", "missing"]
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
    """One (body, category) of the edition and the data it contributes to D's package."""

    body: str
    category: str
    status: UnitStatus  # the body's verdict on D ("missing": it did not report)
    reason: str | None
    counts: dict[str, Any] = field(default_factory=dict)  # rows_in, rows_published, ... of D's status
    source_day: dt.date | None = None  # D when published, L when carried forward, None: nothing to use

    @property
    def carried_forward_from(self) -> dt.date | None:
        """The date whose validated data stands in for D, when the unit is carried forward."""
        return self.source_day if self.status != "published" else None


# --------------------------------------------------------------------------- small public helpers


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a JSON document: sorted keys, no spaces, UTF-8, no trailing newline."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def package_id(day: dt.date) -> str:
    """The package id of a logical date: ``OSMS-<YYYY-MM-DD>``."""
    return f"OSMS-{day.isoformat()}"


def previous_delivered(data_dir: Path, day: dt.date) -> Path | None:
    """The package directory of the latest date before ``day`` that has a receipt (was delivered)."""
    dated = [(d, p) for d, p in layout.dated_dirs(data_dir / "packages") if d < day and (p / RECEIPT).is_file()]
    return max(dated)[1] if dated else None


# --------------------------------------------------------------------------- units and carry forward


def plan_units(data_dir: Path, day: dt.date, edition: Edition, *, earliest: dt.date | None = None) -> list[Unit]:
    """Every (body, category) of the edition with its verdict on D and the date its data comes from."""
    earliest = earliest or min(e.effective_from for e in default_registry().editions)
    earlier_days = sorted((d for d, _ in layout.dated_dirs(data_dir / "status") if earliest <= d < day), reverse=True)
    status_cache: dict[tuple[dt.date, str], Any] = {}

    def status_of(d: dt.date, body: str) -> Any:
        if (d, body) not in status_cache:
            status_cache[(d, body)] = read_status(data_dir, d, body)
        return status_cache[(d, body)]

    units = []
    for body in sorted(b.code for b in edition.bodies):
        for cat in sorted(c.code for c in edition.categories_of(body)):
            verdict, reason, counts = _verdict(status_of(day, body), cat)
            if verdict == "published" and not layout.validated(data_dir, day, body, cat).is_file():
                verdict, reason = "failed", "published, but its validated file is missing"
            source = day if verdict == "published" else None
            if source is None:
                for d in earlier_days:
                    v, _, _ = _verdict(status_of(d, body), cat)
                    if v == "published" and layout.validated(data_dir, d, body, cat).is_file():
                        source = d
                        break
            units.append(Unit(body=body, category=cat, status=verdict, reason=reason, counts=counts, source_day=source))
    return units


def _verdict(status: Any, category: str) -> tuple[UnitStatus, str | None, dict[str, Any]]:
    if status is None:
        return "missing", "the body did not report for this date", {}
    try:
        c = status.category(category)
    except KeyError:
        return "missing", "the body's status names no such category", {}
    counts = {
        "rows_in": c.rows_in, "rows_published": c.rows_published, "rows_quarantined": c.rows_quarantined,
        "quarantined_by_rule": dict(sorted(c.quarantined_by_rule.items())),
    }
    return c.status, c.reason, counts


# --------------------------------------------------------------------------- build


def build_package(
    *, day: dt.date, data_dir: Path, signing_key_pem: bytes, producer_version: str, memory_limit: str = "2GB"
) -> PackageResult:
    """Build, check, sign and place ``packages/<D>/``; a delivered package is never changed."""
    data_dir = Path(data_dir)
    registry = default_registry()
    edition = registry.edition_on(day)
    key = _private_key(signing_key_pem)
    final = layout.package_dir(data_dir, day)
    pid = os.getpid()
    work = final.parent / f".{day.isoformat()}.tmp-{pid}"
    spill = data_dir / "tmp" / f"package-{day.isoformat()}-{pid}"
    for d in (work, spill):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    try:
        earliest = min(e.effective_from for e in registry.editions)
        units = plan_units(data_dir, day, edition, earliest=earliest)
        previous = previous_delivered(data_dir, day)
        with _duckdb(spill, memory_limit) as con, _step("consolidate"):
            stats = _consolidate(con, data_dir, units, edition, previous)
            with _step("write records.parquet"):
                _write_query(con, "SELECT * FROM records ORDER BY category, iin", work / RECORDS, _records_schema())
            with _step("changes"):
                stats["changes"] = _write_changes(con, previous, work / CHANGES)
        quality = _quality_doc(day, edition, units, stats, previous)
        write_bytes_atomic(canonical_json(quality), work / QUALITY)
        with _step("package suite"):
            run_package_suite(
                work / RECORDS, expected_rows=quality["totals"]["rows"], categories=[c.code for c in edition.categories]
            )
        manifest = _manifest_doc(day, edition, work, quality, previous, producer_version)
        manifest_bytes = canonical_json(manifest)
        write_bytes_atomic(manifest_bytes, work / MANIFEST)
        write_bytes_atomic(key.sign(manifest_bytes), work / SIGNATURE)
        _place(work, final)
        return PackageResult(
            day=day, path=final, package_id=manifest["package_id"], manifest_sha256=sha256_file(final / MANIFEST),
            rows=quality["totals"]["rows"], categories=quality["categories"],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)


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


# --------------------------------------------------------------------------- consolidation (DuckDB)


@contextmanager
def _duckdb(spill: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB whose tables, joins and sorts beyond the limit spill to ``spill``."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
        con.execute(f"SET temp_directory = {_lit(str(spill / 'spill'))}")
        con.execute("SET preserve_insertion_order = false")  # order comes from ORDER BY only
        yield con
    finally:
        con.close()


def _lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


_SRC_COLUMNS = (
    "system VARCHAR", "record_id VARCHAR", "iin VARCHAR", "last_name VARCHAR", "first_name VARCHAR",
    "patronymic VARCHAR", "birth_date DATE", "sex VARCHAR", "period_start DATE", "period_end DATE",
)


def _union(selects: list[str], empty_columns: Sequence[str]) -> str:
    if selects:
        return "\nUNION ALL\n".join(selects)
    return "SELECT " + ", ".join(f"NULL::{c.split()[1]} AS {c.split()[0]}" for c in empty_columns) + " WHERE false"


def _consolidate(
    con: duckdb.DuckDBPyConnection, data_dir: Path, units: list[Unit], edition: Edition, previous: Path | None
) -> dict[str, Any]:
    """Create the ``records`` table (one row per (iin, category)) and return its counts."""
    used = [u for u in units if u.source_day is not None]
    src = []
    quarantined = []
    for u in used:
        cols = ", ".join(f"CAST({c.split()[0]} AS {c.split()[1]}) AS {c.split()[0]}" for c in _SRC_COLUMNS)
        path = layout.validated(data_dir, u.source_day, u.body, u.category)
        src.append(f"SELECT {_lit(u.body)} AS body, {_lit(u.category)} AS category, {cols}"
                   f" FROM read_parquet({_lit(str(path))})")
        qpath = layout.quarantine(data_dir, u.source_day, u.body, u.category)
        if qpath.is_file():
            quarantined.append(
                f"SELECT {_lit(u.body)} AS body, {_lit(u.category)} AS category,"
                f" {_lit(u.body + '/')} || CAST(system AS VARCHAR) || '/' || CAST(record_id AS VARCHAR) AS source"
                f" FROM read_parquet({_lit(str(qpath))}) WHERE system IS NOT NULL AND record_id IS NOT NULL"
            )
    # Read every source file once; the steps below scan the copy (spilled beyond the limit).
    con.execute("CREATE TABLE src AS " + _union(src, ("body VARCHAR", "category VARCHAR", *_SRC_COLUMNS)))
    con.execute("CREATE TEMP VIEW quarantined AS " + _union(
        quarantined, ("body VARCHAR", "category VARCHAR", "source VARCHAR")))
    cats = [(c.code, c.row, c.funding) for c in edition.categories]
    con.execute("CREATE TABLE edition_categories (category VARCHAR, decree_row INTEGER, funding VARCHAR)")
    con.executemany("INSERT INTO edition_categories VALUES (?, ?, ?)", cats)

    # Most persons are reported by one record: they are taken as they are. Only the
    # (iin, category) reported more than once are aggregated, and a field's min
    # equals its max when the feeds agree: only disagreeing groups are voted on.
    con.execute("CREATE TABLE multi AS SELECT iin, category FROM src GROUP BY iin, category HAVING count(*) > 1")
    con.execute("CREATE TABLE contested AS SELECT * FROM src SEMI JOIN multi USING (iin, category)")
    person = ",\n".join(
        f"min({f}) AS {f}, min({f}) IS DISTINCT FROM max({f}) AS c_{f}" for f in PERSON_FIELDS
    )
    no_conflict = ", ".join(f"false AS c_{f}" for f in CONFLICT_FIELDS)
    con.execute(f"""
        CREATE TABLE merged AS
        SELECT iin, category, {", ".join(PERSON_FIELDS)}, period_start, period_end,
          [body] AS bodies, [system] AS systems, [body || '/' || system || '/' || record_id] AS sources,
          false AS kept_from_previous, {no_conflict}
        FROM src ANTI JOIN multi USING (iin, category)
        UNION ALL BY NAME
        SELECT iin, category,
          {person},
          min(period_start) AS period_start,
          min(period_start) IS DISTINCT FROM max(period_start) AS c_period_start,
          CASE WHEN bool_or(period_end IS NULL) THEN NULL ELSE max(period_end) END AS period_end,
          (bool_or(period_end IS NULL) AND bool_or(period_end IS NOT NULL))
            OR min(period_end) IS DISTINCT FROM max(period_end) AS c_period_end,
          list_sort(list_distinct(list(body))) AS bodies,
          list_sort(list_distinct(list(system))) AS systems,
          list_sort(list_distinct(list(body || '/' || system || '/' || record_id))) AS sources,
          false AS kept_from_previous
        FROM contested GROUP BY iin, category
    """)
    for f in PERSON_FIELDS:
        if not con.execute(f"SELECT bool_or(c_{f}) FROM merged").fetchone()[0]:
            continue
        # the most reported value; ties go to the smallest (a missing value is not a vote)
        con.execute(f"""
            UPDATE merged SET {f} = w.v FROM (
              SELECT iin, category, first(v ORDER BY n DESC, v ASC) AS v FROM (
                SELECT s.iin, s.category, s.{f} AS v, count(*) AS n
                FROM contested s SEMI JOIN (SELECT iin, category FROM merged WHERE c_{f}) c
                  ON s.iin = c.iin AND s.category = c.category
                WHERE s.{f} IS NOT NULL GROUP BY ALL
              ) GROUP BY iin, category
            ) w
            WHERE merged.iin = w.iin AND merged.category = w.category
        """)

    # Per-record protection: a previous row whose source record is quarantined now
    # stays, unless the person is present anyway.
    if previous is not None:
        prev = _lit(str(previous / RECORDS))
        con.execute(f"""
            CREATE TABLE kept AS
            SELECT DISTINCT p.iin, p.category, q.body
            FROM (SELECT iin, category, unnest(sources) AS source FROM read_parquet({prev})) p
            JOIN quarantined q ON p.category = q.category AND p.source = q.source
            WHERE NOT EXISTS (SELECT 1 FROM merged m WHERE m.iin = p.iin AND m.category = p.category)
        """)
        flags = ", ".join(f"false AS c_{f}" for f in CONFLICT_FIELDS)
        con.execute(f"""
            INSERT INTO merged BY NAME
            SELECT p.iin, p.category, {", ".join("p." + f for f in PERSON_FIELDS)},
              p.period_start, p.period_end, p.bodies, p.systems, p.sources, true AS kept_from_previous, {flags}
            FROM read_parquet({prev}) p
            SEMI JOIN (SELECT DISTINCT iin, category FROM kept) k ON p.iin = k.iin AND p.category = k.category
        """)
    else:
        con.execute("CREATE TABLE kept (iin VARCHAR, category VARCHAR, body VARCHAR)")

    con.execute(f"""
        CREATE TABLE records AS
        SELECT m.iin, m.category, e.decree_row, e.funding,
          {", ".join("m." + f for f in PERSON_FIELDS)}, m.period_start, m.period_end,
          m.bodies, m.systems, m.sources
        FROM merged m JOIN edition_categories e USING (category)
    """)

    stats: dict[str, Any] = {"rows": {}, "conflicts": {}, "kept": {}, "kept_by_body": {}, "used_by_unit": {}}
    for cat, n in con.execute("SELECT category, count(*) FROM records GROUP BY category").fetchall():
        stats["rows"][cat] = n
    sums = ", ".join(f"sum(c_{f}::INTEGER)" for f in CONFLICT_FIELDS)
    for cat, *counts in con.execute(f"SELECT category, {sums} FROM merged GROUP BY category").fetchall():
        stats["conflicts"][cat] = {f: int(n or 0) for f, n in zip(CONFLICT_FIELDS, counts)}
    kept_rows = "SELECT category, count(*) FROM merged WHERE kept_from_previous GROUP BY category"
    for cat, n in con.execute(kept_rows).fetchall():
        stats["kept"][cat] = n
    for cat, body, n in con.execute("SELECT category, body, count(*) FROM kept GROUP BY ALL").fetchall():
        stats["kept_by_body"][(cat, body)] = n
    for body, cat, n in con.execute("SELECT body, category, count(*) FROM src GROUP BY ALL").fetchall():
        stats["used_by_unit"][(body, cat)] = n
    return stats


def _write_changes(con: duckdb.DuckDBPyConnection, previous: Path | None, path: Path) -> dict[str, int]:
    """Write changes.parquet against the previous delivered package; return counts per kind."""
    prev = f"read_parquet({_lit(str(previous / RECORDS))})" if previous else "(SELECT * FROM records WHERE false)"
    differs = ", ".join(f"CASE WHEN r.{f} IS DISTINCT FROM p.{f} THEN '{f}' END" for f in CHANGE_FIELDS)
    con.execute(f"""
        CREATE TABLE changes AS
        SELECT * FROM (
          SELECT
            CASE WHEN p.iin IS NULL THEN 'added' WHEN r.iin IS NULL THEN 'removed' ELSE 'changed' END AS change,
            coalesce(r.iin, p.iin) AS iin,
            coalesce(r.category, p.category) AS category,
            CASE WHEN r.iin IS NOT NULL AND p.iin IS NOT NULL
              THEN list_filter([{differs}], lambda x: x IS NOT NULL) END AS fields
          FROM records r FULL OUTER JOIN {prev} p ON r.iin = p.iin AND r.category = p.category
        ) WHERE change <> 'changed' OR len(fields) > 0
    """)
    _write_query(con, "SELECT * FROM changes ORDER BY category, iin", path, _changes_schema())
    counts = dict.fromkeys(("added", "removed", "changed"), 0)
    counts.update(dict(con.execute("SELECT change, count(*) FROM changes GROUP BY change").fetchall()))
    return counts


def _records_schema() -> pa.Schema:
    import pyarrow as pa

    s = pa.string()
    return pa.schema([
        ("iin", s), ("category", s), ("decree_row", pa.int32()), ("funding", s),
        ("last_name", s), ("first_name", s), ("patronymic", s), ("birth_date", pa.date32()), ("sex", s),
        ("period_start", pa.date32()), ("period_end", pa.date32()),
        ("bodies", pa.list_(s)), ("systems", pa.list_(s)), ("sources", pa.list_(s)),
    ])


def _changes_schema() -> pa.Schema:
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("change", s), ("iin", s), ("category", s), ("fields", pa.list_(s))])


def _write_query(con: duckdb.DuckDBPyConnection, sql: str, path: Path, schema: pa.Schema) -> int:
    """Stream a query into Parquet with fixed row groups, zstd and nothing time-dependent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = con.sql(sql).to_arrow_reader(_FETCH_ROWS)
    total = 0
    with pq.ParquetWriter(path, schema, compression="zstd", compression_level=3) as writer:
        pending: list[pa.Table] = []
        n = 0
        for batch in reader:
            t = pa.Table.from_batches([batch]).cast(schema)
            pending.append(t)
            n += t.num_rows
            while n >= ROW_GROUP_ROWS:
                joined = pa.concat_tables(pending)
                writer.write_table(joined.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                pending, n = [joined.slice(ROW_GROUP_ROWS)], n - ROW_GROUP_ROWS
                total += ROW_GROUP_ROWS
        if n:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            total += n
    return total


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
    day: dt.date, edition: Edition, units: list[Unit], stats: dict[str, Any], previous: Path | None
) -> dict[str, Any]:
    """quality.json: per category and body, counts and verdicts only."""
    categories: dict[str, Any] = {}
    for cat in sorted(c.code for c in edition.categories):
        cat_units = [u for u in units if u.category == cat]
        bodies = {}
        for u in cat_units:
            c = u.counts
            bodies[u.body] = {
                "status": u.status,
                "reason": u.reason if u.source_day is not None else
                "; ".join(filter(None, [u.reason, "never published: contributes nothing"])),
                "rows_in": c.get("rows_in", 0),
                "rows_published": c.get("rows_published", 0),
                "rows_quarantined": c.get("rows_quarantined", 0),
                "quarantined_by_rule": c.get("quarantined_by_rule", {}),
                "carried_forward_from": u.carried_forward_from.isoformat() if u.carried_forward_from else None,
                "rows_used": stats["used_by_unit"].get((u.body, cat), 0),
                "records_carried_forward": stats["kept_by_body"].get((cat, u.body), 0),
            }
        categories[cat] = {
            "status": category_verdict(cat_units),
            "rows": stats["rows"].get(cat, 0),
            "decree_row": edition.category(cat).row,
            "records_carried_forward": stats["kept"].get(cat, 0),
            "conflicts": stats["conflicts"].get(cat, dict.fromkeys(CONFLICT_FIELDS, 0)),
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
    return {
        "schema": "osms.package.quality/1",
        "package_id": package_id(day),
        "logical_date": day.isoformat(),
        "edition": {"code": edition.code, "provisional": edition.provisional},
        "categories": categories,
        "totals": totals,
        "changes": {"against": previous.name if previous else None, **stats["changes"]},
        "notes": list(NOTES),
    }


def category_verdict(units: list[Unit]) -> CategoryVerdict:
    """A category's verdict from its units: published, partial, carried_forward or missing."""
    published = [u for u in units if u.status == "published"]
    if len(published) == len(units):
        return "published"
    if not any(u.source_day is not None for u in units):
        return "missing"  # nothing published today and nothing ever before
    return "partial" if published else "carried_forward"


def _manifest_doc(
    day: dt.date, edition: Edition, work: Path, quality: dict[str, Any], previous: Path | None, version: str
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    files = []
    for name in PACKAGE_FILES:
        path = work / name
        rows = pq.ParquetFile(path).metadata.num_rows if name.endswith(".parquet") else None
        files.append({"name": name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": rows})
    return {
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
        "categories": {k: {"status": v["status"], "rows": v["rows"]} for k, v in quality["categories"].items()},
        "producer": {"name": PRODUCER, "version": version},
    }


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

    from osms.quality.suites import load_suite_dict
    from osms.quality.validate import _run_suite

    suite = load_suite_dict("package")
    parameters = {"expected_rows": int(expected_rows), "edition_categories": sorted(categories)}
    table_rules = [e for e in suite["expectations"] if e.get("meta", {}).get("scope") == "table"]
    row_rules = [e for e in suite["expectations"] if e not in table_rules]
    failures: dict[str, dict[str, Any]] = {}

    def run(expectations: list[dict[str, Any]], table: pa.Table) -> None:
        if not expectations:
            return
        part = {**suite, "expectations": expectations}
        for r in _run_suite(part, table, parameters, chunk_rows=max(table.num_rows, 1), gx_runs=[]):
            if r.success and r.exception is None:
                continue
            f = failures.setdefault(r.rule, {"unexpected": 0, "exception": None})
            f["unexpected"] += r.unexpected_count
            f["exception"] = f["exception"] or r.exception

    pf = pq.ParquetFile(records_path)
    run(table_rules, pq.read_table(records_path, columns=["category"], read_dictionary=["category"]))

    unsorted = 0
    carry: pa.Table | None = None
    last_key: tuple[str, str] | None = None
    batches = pf.iter_batches(batch_size=GATE_CHUNK_ROWS, columns=["iin", "category"])
    for batch in [*batches, None]:
        if batch is not None:
            incoming = pa.Table.from_batches([batch])
            chunk = incoming if carry is None else pa.concat_tables([carry, incoming])
            if chunk.num_rows < GATE_CHUNK_ROWS:
                carry = chunk
                continue
            cut = _key_boundary(chunk, GATE_CHUNK_ROWS)
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
                   previous_manifest: Path | None = None) -> list[str]:
    """Every problem with a package, one sentence each naming the file; [] when all is well.

    Without a public key (``None``) the signature is not checked; everything else is.
    """
    package_dir = Path(package_dir)
    manifest_path = package_dir / MANIFEST
    if not manifest_path.is_file():
        return [f"{MANIFEST}: missing from {package_dir}"]
    manifest_bytes = manifest_path.read_bytes()
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        return [f"{MANIFEST}: not valid JSON ({exc})"]
    problems: list[str] = []
    if not isinstance(manifest, dict) or manifest.get("schema") != PACKAGE_SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else None
        return [f"{MANIFEST}: schema is {got!r}, not {PACKAGE_SCHEMA!r}"]
    if canonical_json(manifest) != manifest_bytes:
        problems.append(f"{MANIFEST}: not in canonical JSON form")

    problems += _verify_files(package_dir, manifest)
    if public_key_pem is not None:
        problems += _verify_signature(package_dir, manifest_bytes, public_key_pem)
    problems += _verify_chain(package_dir, manifest, previous_manifest)
    return problems


def _verify_files(package_dir: Path, manifest: dict[str, Any]) -> list[str]:
    import pyarrow.parquet as pq

    problems = []
    listed = {f.get("name") for f in manifest.get("files", [])}
    for name in PACKAGE_FILES:
        if name not in listed:
            problems.append(f"{name}: not listed in {MANIFEST}")
    for entry in manifest.get("files", []):
        name = entry.get("name", "?")
        path = package_dir / name
        if Path(name).name != name or name in (MANIFEST, SIGNATURE, RECEIPT):
            problems.append(f"{name}: not a file a manifest may list")
            continue
        if not path.is_file():
            problems.append(f"{name}: listed in {MANIFEST} but missing")
            continue
        if path.stat().st_size != entry.get("bytes"):
            size = path.stat().st_size
            problems.append(f"{name}: size {size} bytes differs from the manifest ({entry.get('bytes')})")
        if sha256_file(path) != entry.get("sha256"):
            problems.append(f"{name}: SHA-256 differs from the manifest")
        elif name.endswith(".parquet"):
            rows = pq.ParquetFile(path).metadata.num_rows
            if rows != entry.get("rows"):
                problems.append(f"{name}: {rows} rows, the manifest says {entry.get('rows')}")
    return problems


def _verify_signature(package_dir: Path, manifest_bytes: bytes, public_key_pem: bytes) -> list[str]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig_path = package_dir / SIGNATURE
    if not sig_path.is_file():
        return [f"{SIGNATURE}: missing"]
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        return [f"public key: not a PEM public key ({exc})"]
    if not isinstance(key, Ed25519PublicKey):
        return [f"public key: must be Ed25519, not {type(key).__name__}"]
    signature = sig_path.read_bytes()
    if len(signature) != 64:
        return [f"{SIGNATURE}: {len(signature)} bytes, an Ed25519 signature is 64"]
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        return [f"{SIGNATURE}: the signature does not match {MANIFEST}"]
    return []


def _verify_chain(package_dir: Path, manifest: dict[str, Any], previous_manifest: Path | None) -> list[str]:
    claimed = manifest.get("previous_manifest_sha256")
    if previous_manifest is not None:
        previous_manifest = Path(previous_manifest)
        shown = _short_path(previous_manifest)
        if not previous_manifest.is_file():
            return [f"chain: {shown} does not exist"]
        actual = sha256_file(previous_manifest)
        if claimed is None:
            return [f"chain: previous_manifest_sha256 is null, but {shown} was given as the previous package"]
        if claimed != actual:
            return [f"chain: previous_manifest_sha256 {claimed} does not match {shown} (its SHA-256 is {actual})"]
        return []
    # Without an explicit previous manifest: look among the package's siblings.
    try:
        day = dt.date.fromisoformat(str(manifest.get("logical_date")))
    except ValueError:
        return [f"{MANIFEST}: logical_date {manifest.get('logical_date')!r} is not a date"]
    earlier = sorted(
        ((d, p) for d, p in layout.dated_dirs(package_dir.resolve().parent) if d < day and (p / MANIFEST).is_file()),
        reverse=True,
    )
    if claimed is None:
        delivered = [p for _, p in earlier if (p / RECEIPT).is_file()]
        if delivered:
            return [f"chain: previous_manifest_sha256 is null, but {_short_path(delivered[0] / MANIFEST)}"
                    " was delivered before"]
        return []
    if not earlier:
        return []  # a package on its own (copied out): the link cannot be checked here
    for _, p in earlier:
        if sha256_file(p / MANIFEST) == claimed:
            return []
    return [f"chain: previous_manifest_sha256 {claimed} does not match {_short_path(earlier[0][1] / MANIFEST)}"
            " nor any earlier manifest beside this package"]


def _short_path(path: Path) -> str:
    """``packages/<D>/manifest.json`` style: the last three parts of a path."""
    return "/".join(Path(path).parts[-3:])
