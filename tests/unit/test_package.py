"""The consolidated package: merge, conflicts, carry forward, protection, changes, determinism, verify, gate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osms.core.budget import Budget
from osms.core.run import CHECKOUT_EXPECTATIONS, Run
from osms.core import iin

from osms.core import layout

from osms.package import build as package
from osms.core.files import write_bytes_atomic, write_parquet_atomic
from osms.package.build import (
    PACKAGE_SCHEMA,
    PackageError,
    PackageGateError,
    build_package,
    canonical_json,
    run_package_suite,
    verify_package,
)
from osms.core.status import BodyStatus, CategoryStatus, write_status

pytestmark = pytest.mark.unit

D0, D1, D2 = dt.date(2025, 5, 31), dt.date(2025, 6, 1), dt.date(2025, 6, 2)
EDITION = "2022"
# the package suite as a package run gives it: the budget's chunk, the checkout's suites
GATE = {"chunk_rows": Budget().gate_chunk_rows, "expectations_dir": CHECKOUT_EXPECTATIONS}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def person(n: int, **fields: Any) -> dict[str, Any]:
    """A source record of a synthetic person number ``n`` (valid IIN)."""
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=97 * n)
    sex = "M" if n % 2 else "F"
    rec = {
        "record_id": f"r{n}", "iin": iin.generate(birth, sex, serial=n), "last_name": f"Last{n}",
        "first_name": f"First{n}", "patronymic": None, "birth_date": birth, "sex": sex,
        "period_start": dt.date(2024, 1, 1), "period_end": None,
    }
    rec.update(fields)
    return rec


_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("iin", pa.string()), ("last_name", pa.string()), ("first_name", pa.string()),
    ("patronymic", pa.string()), ("birth_date", pa.date32()), ("sex", pa.string()),
    ("period_start", pa.date32()), ("period_end", pa.date32()), ("updated_at", pa.timestamp("us", tz="UTC")),
    ("body", pa.string()), ("system", pa.string()), ("category", pa.string()), ("as_of", pa.date32()),
])


def _table(day: dt.date, body: str, category: str, records: list[dict[str, Any]], rules: bool) -> pa.Table:
    rows = []
    for r in records:
        rows.append({**{k: None for k in _SCHEMA.names}, "updated_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                     **r, "body": body, "category": category, "as_of": day})
    schema = _SCHEMA.append(pa.field("rules", pa.list_(pa.string()))) if rules else _SCHEMA
    if rules:
        rows = [{**r, "rules": ["iin_valid"]} for r in rows]
    return pa.Table.from_pylist(rows, schema=schema)


def publish(root: Path, day: dt.date, body: str, category: str, records: list[dict[str, Any]],
            quarantined: list[dict[str, Any]] = ()) -> None:
    """validated/ and quarantine/ files of one (body, category); each record names its system."""
    write_parquet_atomic(_table(day, body, category, records, False), layout.validated(root, day, body, category))
    write_parquet_atomic(_table(day, body, category, list(quarantined), True),
                         layout.quarantine(root, day, body, category))


def status(root: Path, day: dt.date, body: str, verdicts: dict[str, str]) -> None:
    cats = tuple(
        CategoryStatus(category=c, status=v, reason=None if v == "published" else f"{v} for the test",
                       rows_in=3, rows_published=2 if v == "published" else 0, rows_quarantined=1,
                       quarantined_by_rule={"iin_valid": 1})
        for c, v in verdicts.items()
    )
    write_status(root, BodyStatus(body=body, as_of=day, edition=EDITION, categories=cats))


def build(root: Path, day: dt.date, keys: tuple[bytes, bytes]) -> package.PackageResult:
    return build_package(Run.of(day, data_dir=root), signing_key_pem=keys[0], producer_version="test",
                         memory_limit="256MB")


def deliver(result: package.PackageResult) -> None:
    """What the delivery client does after a receipt: store it beside the package."""
    receipt = {"receipt_id": "R-1", "package_id": result.package_id, "manifest_sha256": result.manifest_sha256,
               "logical_date": result.day.isoformat(), "received_at": "2025-06-01T00:00:00Z", "files": 3}
    write_bytes_atomic(json.dumps(receipt).encode(), result.path / "receipt.json")


def records(result: package.PackageResult) -> dict[tuple[str, str], dict[str, Any]]:
    rows = pq.read_table(result.path / "records.parquet").to_pylist()
    return {(r["category"], r["iin"]): r for r in rows}


def changes(result: package.PackageResult) -> list[tuple[str, str, str, Any]]:
    return [(r["change"], r["category"], r["iin"], r["fields"])
            for r in pq.read_table(result.path / "changes.parquet").to_pylist()]


def quality(result: package.PackageResult) -> dict[str, Any]:
    return json.loads((result.path / "quality.json").read_bytes())


# --------------------------------------------------------------------------- merge and conflicts


def test_two_bodies_reporting_one_person_give_one_row_with_both_in_lineage(tmp_path, keys):
    # Arrange
    p = person(1)
    publish(tmp_path, D1, "enlightenment", "children", [{**p, "system": "nedb", "record_id": "e1"}])
    publish(tmp_path, D1, "justice", "children", [{**p, "system": "individuals", "record_id": "j1"}])
    status(tmp_path, D1, "enlightenment", {"children": "published"})
    status(tmp_path, D1, "justice", {"children": "published"})

    # Act
    result = build(tmp_path, D1, keys)

    # Assert
    rows = records(result)
    assert list(rows) == [("children", p["iin"])]
    row = rows[("children", p["iin"])]
    assert row["bodies"] == ["enlightenment", "justice"]
    assert row["systems"] == ["individuals", "nedb"]
    assert row["sources"] == ["enlightenment/nedb/e1", "justice/individuals/j1"]
    assert row["decree_row"] == 1 and row["funding"] == "republican_budget"
    assert "care_status" not in row  # category-specific columns stay out
    q = quality(result)
    assert q["categories"]["children"]["status"] == "published"
    assert q["categories"]["children"]["rows"] == 1 == result.rows
    assert q["categories"]["children"]["conflicts"] == dict.fromkeys(package.CONFLICT_FIELDS, 0)
    assert changes(result) == [("added", "children", p["iin"], None)]


def test_disagreeing_feeds_follow_the_conflict_rule_and_are_counted(tmp_path, keys):
    # Arrange: three records of one child; the majority, the smallest on a tie, earliest start, open end
    p = person(2)
    publish(tmp_path, D1, "enlightenment", "children", [
        {**p, "system": "nedb", "record_id": "e1", "last_name": "Bek", "patronymic": "Bolatuly",
         "period_start": dt.date(2024, 3, 1), "period_end": dt.date(2026, 1, 1)},
        {**p, "system": "orphans", "record_id": "o1", "last_name": "Bek", "patronymic": None,
         "period_start": dt.date(2024, 2, 1), "period_end": None},
    ])
    publish(tmp_path, D1, "justice", "children", [
        {**p, "system": "individuals", "record_id": "j1", "last_name": "Aba", "patronymic": "Aliuly",
         "period_start": dt.date(2024, 3, 1), "period_end": dt.date(2027, 1, 1)},
    ])
    status(tmp_path, D1, "enlightenment", {"children": "published"})
    status(tmp_path, D1, "justice", {"children": "published"})

    # Act
    result = build(tmp_path, D1, keys)

    # Assert
    row = records(result)[("children", p["iin"])]
    assert row["last_name"] == "Bek"  # two records against one
    assert row["patronymic"] == "Aliuly"  # one each (a missing value is no vote): the smallest
    assert row["first_name"] == p["first_name"]
    assert row["period_start"] == dt.date(2024, 2, 1)
    assert row["period_end"] is None  # one source leaves it open
    conflicts = quality(result)["categories"]["children"]["conflicts"]
    assert conflicts == {"last_name": 1, "first_name": 0, "patronymic": 1, "birth_date": 0, "sex": 0,
                         "period_start": 1, "period_end": 1}
    assert quality(result)["totals"]["conflicts"]["last_name"] == 1


def test_where_feeds_disagree_on_birth_date_or_sex_the_iins_value_wins(tmp_path, keys):
    # Arrange: the IIN of a woman born 1960-01-01 + 97*40 days; two records give another birth date and sex
    p = person(40)  # even n: "F"
    wrong_birth = p["birth_date"] - dt.timedelta(days=1)
    publish(tmp_path, D1, "labour", "pensioners", [
        {**p, "system": "payments", "record_id": "p1", "birth_date": wrong_birth, "sex": "M"},
        {**p, "system": "pensions_benefits", "record_id": "b1", "birth_date": wrong_birth, "sex": "M"},
    ])
    publish(tmp_path, D1, "courts", "pensioners", [{**p, "system": "judicial_is", "record_id": "c1"}])
    status(tmp_path, D1, "labour", {"pensioners": "published"})
    status(tmp_path, D1, "courts", {"pensioners": "published"})

    # Act
    result = build(tmp_path, D1, keys)

    # Assert: against a majority of two, the one record that agrees with the IIN
    row = records(result)[("pensioners", p["iin"])]
    assert (row["birth_date"], row["sex"]) == (p["birth_date"], "F") == iin.decode(p["iin"])
    conflicts = quality(result)["categories"]["pensioners"]["conflicts"]
    assert conflicts["birth_date"] == 1 and conflicts["sex"] == 1


# --------------------------------------------------------------------------- carry forward


def test_a_failed_unit_is_carried_forward_and_its_persons_are_not_removed(tmp_path, keys):
    # Arrange: labour published on D0 (delivered), failed on D1
    people = [person(3), person(4)]
    publish(tmp_path, D0, "labour", "unemployed", [{**p, "system": "labour_market"} for p in people])
    status(tmp_path, D0, "labour", {"unemployed": "published"})
    deliver(build(tmp_path, D0, keys))
    status(tmp_path, D1, "labour", {"unemployed": "failed"})

    # Act
    result = build(tmp_path, D1, keys)

    # Assert
    assert set(records(result)) == {("unemployed", p["iin"]) for p in people}
    assert changes(result) == []
    cat = quality(result)["categories"]["unemployed"]
    assert cat["status"] == "carried_forward" and cat["rows"] == 2
    assert cat["bodies"]["labour"]["status"] == "failed"
    assert cat["bodies"]["labour"]["carried_forward_from"] == D0.isoformat()
    assert result.categories["unemployed"]["status"] == "carried_forward"
    manifest = json.loads((result.path / "manifest.json").read_bytes())
    assert manifest["categories"]["unemployed"] == {"status": "carried_forward", "rows": 2}


def test_a_body_with_no_status_is_carried_forward_and_a_never_published_unit_says_so(tmp_path, keys):
    # Arrange: children from enlightenment (published D0 and D1) and justice (published D0, silent on D1)
    a, b = person(5), person(6)
    for day in (D0, D1):
        publish(tmp_path, day, "enlightenment", "children", [{**a, "system": "nedb"}])
        status(tmp_path, day, "enlightenment", {"children": "published", "students": "failed"})
    publish(tmp_path, D0, "justice", "children", [{**b, "system": "individuals"}])
    status(tmp_path, D0, "justice", {"children": "published"})
    deliver(build(tmp_path, D0, keys))

    # Act
    result = build(tmp_path, D1, keys)

    # Assert
    assert set(records(result)) == {("children", a["iin"]), ("children", b["iin"])}
    assert changes(result) == []
    q = quality(result)
    children = q["categories"]["children"]
    assert children["status"] == "partial"
    assert children["bodies"]["justice"]["status"] == "missing"
    assert children["bodies"]["justice"]["carried_forward_from"] == D0.isoformat()
    assert children["bodies"]["enlightenment"]["carried_forward_from"] is None
    students = q["categories"]["students"]
    assert students["status"] == "missing" and students["rows"] == 0
    assert "never published" in students["bodies"]["enlightenment"]["reason"]


def test_carry_forward_skips_dates_whose_unit_was_not_published(tmp_path, keys):
    # Arrange: published D0, held back D1 (its file exists but must not be used), failed D2
    old, held = person(7), person(8)
    publish(tmp_path, D0, "labour", "unemployed", [{**old, "system": "labour_market"}])
    status(tmp_path, D0, "labour", {"unemployed": "published"})
    publish(tmp_path, D1, "labour", "unemployed", [{**held, "system": "labour_market"}])
    status(tmp_path, D1, "labour", {"unemployed": "held_back"})
    status(tmp_path, D2, "labour", {"unemployed": "failed"})

    # Act
    result = build(tmp_path, D2, keys)

    # Assert
    assert set(records(result)) == {("unemployed", old["iin"])}
    assert quality(result)["categories"]["unemployed"]["bodies"]["labour"]["carried_forward_from"] == D0.isoformat()


# --------------------------------------------------------------------------- per-record protection and changes


def test_a_known_person_quarantined_today_keeps_the_row_and_a_new_one_is_not_added(tmp_path, keys):
    # Arrange
    known, stays, new = person(9), person(10), person(11)
    publish(tmp_path, D0, "justice", "children", [
        {**known, "system": "individuals", "record_id": "j9"}, {**stays, "system": "individuals", "record_id": "j10"}])
    status(tmp_path, D0, "justice", {"children": "published"})
    deliver(build(tmp_path, D0, keys))
    publish(
        tmp_path, D1, "justice", "children", [{**stays, "system": "individuals", "record_id": "j10"}],
        quarantined=[{**known, "system": "individuals", "record_id": "j9", "iin": "12345"},  # a broken IIN
                     {**new, "system": "individuals", "record_id": "j11"}],
    )
    status(tmp_path, D1, "justice", {"children": "published"})

    # Act
    result = build(tmp_path, D1, keys)

    # Assert
    assert set(records(result)) == {("children", known["iin"]), ("children", stays["iin"])}
    assert records(result)[("children", known["iin"])]["sources"] == ["justice/individuals/j9"]
    assert changes(result) == []
    children = quality(result)["categories"]["children"]
    assert children["status"] == "partial"  # enlightenment, the other body of children, never reported
    assert children["bodies"]["justice"]["status"] == "published"
    assert children["records_carried_forward"] == 1
    assert children["bodies"]["justice"]["records_carried_forward"] == 1
    assert quality(result)["totals"]["records_carried_forward"] == 1


def test_changes_list_added_removed_and_changed_fields(tmp_path, keys):
    # Arrange
    same, renamed, gone, ended, new = (person(n) for n in (12, 13, 14, 15, 16))
    publish(tmp_path, D0, "labour", "unemployed",
            [{**p, "system": "labour_market"} for p in (same, renamed, gone, ended)])
    status(tmp_path, D0, "labour", {"unemployed": "published"})
    deliver(build(tmp_path, D0, keys))
    publish(tmp_path, D1, "labour", "unemployed", [
        {**same, "system": "labour_market"},
        {**renamed, "system": "labour_market", "last_name": "Other"},
        {**ended, "system": "labour_market", "period_end": D1},
        {**new, "system": "labour_market"},
    ])
    status(tmp_path, D1, "labour", {"unemployed": "published"})

    # Act
    result = build(tmp_path, D1, keys)

    # Assert
    expected = sorted([
        ("changed", "unemployed", renamed["iin"], ["last_name"]),
        ("removed", "unemployed", gone["iin"], None),
        ("changed", "unemployed", ended["iin"], ["period_end"]),
        ("added", "unemployed", new["iin"], None),
    ], key=lambda c: (c[1], c[2]))
    assert changes(result) == expected
    assert quality(result)["changes"] == {"against": D0.isoformat(), "added": 1, "removed": 1, "changed": 2}


def test_a_package_follows_the_day_before_and_never_skips_an_undelivered_one(tmp_path, keys):
    from osms.package.chain import ChainWaiting

    # Arrange: D0 built but not delivered; a work folder of an earlier build of D0 left behind
    _two_bodies(tmp_path, D0)
    first = build(tmp_path, D0, keys)
    assert json.loads((first.path / "manifest.json").read_bytes())["previous_manifest_sha256"] is None
    (tmp_path / "packages" / f".{D0.isoformat()}.tmp-1").mkdir()
    _two_bodies(tmp_path, D1)
    _two_bodies(tmp_path, D2)

    # Act / Assert: D1 waits for D0's delivery; D2 cannot skip D1
    with pytest.raises(ChainWaiting, match=f"{D0.isoformat()}.*no receipt"):
        build(tmp_path, D1, keys)
    deliver(first)
    second = build(tmp_path, D1, keys)
    with pytest.raises(ChainWaiting, match=D1.isoformat()):
        build(tmp_path, D2, keys)
    deliver(second)
    third = build(tmp_path, D2, keys)

    manifest = json.loads((second.path / "manifest.json").read_bytes())
    assert manifest["previous_manifest_sha256"] == first.manifest_sha256
    assert json.loads((third.path / "manifest.json").read_bytes())["previous_manifest_sha256"] == second.manifest_sha256
    assert quality(third)["changes"]["against"] == D1.isoformat()


# --------------------------------------------------------------------------- determinism, placement, manifest


def _two_bodies(root: Path, day: dt.date = D1) -> None:
    publish(root, day, "labour", "unemployed", [{**person(n), "system": "labour_market"} for n in range(20, 30)])
    publish(root, day, "justice", "children", [{**person(n), "system": "individuals"} for n in range(30, 35)])
    status(root, day, "labour", {"unemployed": "published"})
    status(root, day, "justice", {"children": "published"})


def test_two_builds_give_byte_identical_packages(tmp_path, keys):
    # Arrange
    _two_bodies(tmp_path)
    first = build(tmp_path, D1, keys)
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}

    # Act
    second = build(tmp_path, D1, keys)

    # Assert
    after = {p.name: p.read_bytes() for p in second.path.iterdir()}
    assert after == before
    assert set(after) == {"records.parquet", "changes.parquet", "quality.json", "manifest.json", "manifest.sig"}
    assert second.manifest_sha256 == first.manifest_sha256
    assert not [p for p in (tmp_path / "packages").iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert not list((tmp_path / "tmp").iterdir())


def test_manifest_is_canonical_signed_and_lists_every_file(tmp_path, keys):
    _two_bodies(tmp_path)

    result = build(tmp_path, D1, keys)

    raw = (result.path / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    assert raw == canonical_json(manifest) and not raw.endswith(b"\n")
    assert manifest["schema"] == PACKAGE_SCHEMA and manifest["package_id"] == "OSMS-2025-06-01" == result.package_id
    assert manifest["previous_manifest_sha256"] is None
    assert manifest["edition"]["code"] == "2022" and manifest["edition"]["provisional"] is False
    assert [f["name"] for f in manifest["files"]] == ["records.parquet", "changes.parquet", "quality.json"]
    assert manifest["files"][0]["rows"] == 15 and manifest["files"][2]["rows"] is None
    assert manifest["producer"] == {"name": "osms-pipeline", "version": "test"}
    assert len((result.path / "manifest.sig").read_bytes()) == 64
    md = pq.ParquetFile(result.path / "records.parquet").metadata
    assert md.row_group(0).column(0).compression == "ZSTD"
    assert verify_package(result.path, keys[1]) == []


def test_a_delivered_package_is_never_overwritten(tmp_path, keys):
    # Arrange
    _two_bodies(tmp_path)
    first = build(tmp_path, D1, keys)
    deliver(first)
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}

    # Act: the same inputs give the existing package back
    again = build(tmp_path, D1, keys)

    # Assert
    assert again.manifest_sha256 == first.manifest_sha256
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before

    # Act: changed inputs are refused
    publish(tmp_path, D1, "labour", "unemployed", [{**person(99), "system": "labour_market"}])
    with pytest.raises(PackageError, match="delivered"):
        build(tmp_path, D1, keys)
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before


def test_a_wrong_signing_key_is_refused_clearly(tmp_path):
    with pytest.raises(PackageError, match="PEM"):
        build_package(Run.of(D1, data_dir=tmp_path), signing_key_pem=b"not a key", producer_version="t")


# --------------------------------------------------------------------------- verification


def test_verify_names_a_tampered_file(tmp_path, keys):
    _two_bodies(tmp_path)
    result = build(tmp_path, D1, keys)
    data = bytearray((result.path / "records.parquet").read_bytes())
    data[100] ^= 0xFF
    (result.path / "records.parquet").write_bytes(bytes(data))

    problems = verify_package(result.path, keys[1])

    assert problems == ["records.parquet: SHA-256 differs from the manifest"]


def test_verify_names_a_bad_signature(tmp_path, keys):
    _two_bodies(tmp_path)
    result = build(tmp_path, D1, keys)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    assert verify_package(result.path, other) == ["manifest.sig: the signature does not match manifest.json"]


def test_verify_names_a_broken_chain(tmp_path, keys):
    # Arrange: D0 delivered, D1 chained to it
    publish(tmp_path, D0, "labour", "unemployed", [{**person(40), "system": "labour_market"}])
    status(tmp_path, D0, "labour", {"unemployed": "published"})
    first = build(tmp_path, D0, keys)
    deliver(first)
    status(tmp_path, D1, "labour", {"unemployed": "failed"})
    second = build(tmp_path, D1, keys)
    manifest = json.loads((second.path / "manifest.json").read_bytes())
    assert manifest["previous_manifest_sha256"] == first.manifest_sha256
    assert verify_package(second.path, keys[1]) == []
    assert verify_package(second.path, keys[1], previous_manifest=first.path / "manifest.json") == []

    # Act: the predecessor's manifest is altered
    (first.path / "manifest.json").write_bytes((first.path / "manifest.json").read_bytes() + b" ")

    # Assert
    by_sibling = verify_package(second.path, keys[1])
    given = verify_package(second.path, keys[1], previous_manifest=first.path / "manifest.json")
    assert len(by_sibling) == 1 and by_sibling[0].startswith("chain: previous_manifest_sha256")
    assert "packages/2025-05-31/manifest.json" in by_sibling[0]
    assert len(given) == 1 and "does not match packages/2025-05-31/manifest.json" in given[0]


def test_verify_names_a_missing_file(tmp_path, keys):
    _two_bodies(tmp_path)
    result = build(tmp_path, D1, keys)
    (result.path / "changes.parquet").unlink()

    assert verify_package(result.path, keys[1]) == ["changes.parquet: listed in manifest.json but missing"]


def test_verify_names_a_manifest_outside_its_contract_and_still_checks_its_signature(tmp_path, keys):
    _two_bodies(tmp_path)
    result = build(tmp_path, D1, keys)
    manifest = json.loads((result.path / "manifest.json").read_bytes())
    del manifest["producer"]["version"]
    (result.path / "manifest.json").write_bytes(canonical_json(manifest))

    problems = verify_package(result.path, keys[1])

    assert [p.kind for p in problems] == ["manifest", "signature"]
    assert problems[0] == "manifest.json: does not fit the manifest's contract (producer.version: field required)"


# --------------------------------------------------------------------------- the package suite (gate)


def _records_file(path: Path, keys_: list[tuple[str, str]]) -> Path:
    table = pa.table({"iin": [k[1] for k in keys_], "category": [k[0] for k in keys_]})
    pq.write_table(table, path)
    return path


def test_the_package_suite_fails_on_a_duplicate_iin_and_category(tmp_path):
    a, b = person(50)["iin"], person(51)["iin"]
    path = _records_file(tmp_path / "records.parquet", sorted([("children", a), ("children", a), ("children", b)]))

    with pytest.raises(PackageGateError, match="iin_category_unique"):
        run_package_suite(path, expected_rows=3, categories=["children"], **GATE)


def test_the_package_suite_checks_iins_and_the_row_count(tmp_path):
    good = person(52)["iin"]
    bad = good[:11] + str((int(good[11]) + 1) % 10)  # the check digit does not match
    path = _records_file(tmp_path / "records.parquet", sorted([("children", bad), ("children", good)]))

    with pytest.raises(PackageGateError) as err:
        run_package_suite(path, expected_rows=5, categories=["children"], **GATE)
    assert "iin_valid: 1 rows failed" in str(err.value)
    assert "rows_equal_quality_json" in str(err.value)
    run_package_suite(_records_file(tmp_path / "ok.parquet", [("children", good)]), expected_rows=1,
                      categories=["children"], **GATE)


def test_a_duplicate_across_a_chunk_boundary_is_caught(tmp_path):
    iins = sorted(person(n)["iin"] for n in range(60, 64))
    path = _records_file(tmp_path / "records.parquet", [("children", i) for i in [iins[0], iins[1], iins[1], iins[2]]])

    with pytest.raises(PackageGateError, match="iin_category_unique"):
        run_package_suite(path, expected_rows=4, categories=["children"], **(GATE | {"chunk_rows": 2}))


def test_a_failing_gate_writes_no_package(tmp_path, keys, monkeypatch):
    # Arrange: consolidation that (wrongly) yields a duplicate row
    from osms.package import consolidate

    _two_bodies(tmp_path)
    original = consolidate._consolidate_range

    def broken(con, cat, *args):
        records = original(con, cat, *args)
        return pa.concat_tables([records.slice(0, 1), records]) if cat.category == "children" else records

    monkeypatch.setattr(consolidate, "_consolidate_range", broken)

    # Act / Assert
    with pytest.raises(PackageGateError, match="iin_category_unique"):
        build(tmp_path, D1, keys)
    assert not layout.package_dir(tmp_path, D1).exists()
    assert not [p for p in (tmp_path / "packages").iterdir()]


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": ["Ә", None]}) == '{"a":["Ә",null],"b":1}'.encode()
