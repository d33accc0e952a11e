"""The document models (osms.core.documents): round trips, refusals naming the field, byte-stable output.

The documents are the real ones: one small day is run through the writers (a body's
status, an extract's failure, QA's release, the chain's start, a package built and
signed, its receipt stored), and every model is tested on what they wrote.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osms.core.run import Run
from osms.core import decisions, iin, layout
from osms.core.documents import (
    FEED_VERDICTS,
    MANIFEST,
    PACKAGE_CATEGORY_STATUSES,
    QUALITY,
    RECEIPT,
    STATUS_VERDICTS,
    BodyStatus,
    CategoryStatus,
    ChainStart,
    DecisionLog,
    DocumentError,
    ExtractError,
    Manifest,
    Problem,
    QualityDocument,
    Receipt,
    canonical_json,
)
from osms.core.files import write_bytes_atomic, write_parquet_atomic
from osms.core.status import write_status
from osms.package.build import build_package, verify_package
from osms.package.chain import set_chain_start
from osms.package.deliver import store_receipt

pytestmark = pytest.mark.unit

D = dt.date(2025, 6, 1)
EDITION = "2022"

# --------------------------------------------------------------------------- one small day, through the writers

_COLUMNS = pa.schema([
    ("record_id", pa.string()), ("iin", pa.string()), ("last_name", pa.string()), ("first_name", pa.string()),
    ("patronymic", pa.string()), ("birth_date", pa.date32()), ("sex", pa.string()),
    ("period_start", pa.date32()), ("period_end", pa.date32()), ("updated_at", pa.timestamp("us", tz="UTC")),
    ("body", pa.string()), ("system", pa.string()), ("category", pa.string()), ("as_of", pa.date32()),
])


def _validated(root: Path, body: str, system: str, category: str, numbers: range) -> None:
    """The validated rows of a (body, category) and an empty quarantine, as validation leaves them."""
    rows = []
    for n in numbers:
        birth, sex = dt.date(1960, 1, 1) + dt.timedelta(days=97 * n), "M" if n % 2 else "F"
        rows.append({**dict.fromkeys(_COLUMNS.names), "record_id": f"r{n}", "iin": iin.generate(birth, sex, n),
                     "last_name": f"Last{n}", "first_name": f"First{n}", "birth_date": birth, "sex": sex,
                     "period_start": dt.date(2024, 1, 1), "updated_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                     "body": body, "system": system, "category": category, "as_of": D})
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=_COLUMNS), layout.validated(root, D, body, category))
    quarantine = _COLUMNS.append(pa.field("rules", pa.list_(pa.string())))
    write_parquet_atomic(pa.Table.from_pylist([], schema=quarantine), layout.quarantine(root, D, body, category))


def _statuses(root: Path) -> None:
    """justice publishes its children; labour's unemployed feed is held back by a schema change elsewhere."""
    write_status(root, BodyStatus(body="justice", as_of=D, edition=EDITION, categories=(
        CategoryStatus("children", "published", rows_in=6, rows_published=5, rows_quarantined=1,
                       quarantined_by_rule={"iin_valid": 1}, warnings_by_rule={"name_latin": 2},
                       feeds={"individuals": {"status": "published", "reason": None, "rows_in": 6,
                                              "rows_published": 5, "rows_quarantined": 1,
                                              "quarantined_by_rule": {"iin_valid": 1},
                                              "warnings_by_rule": {"name_latin": 2},
                                              "rows": 6, "pages": 1, "retries": 0, "declared_rows": 6}}),
    )))
    write_status(root, BodyStatus(body="labour", as_of=D, edition=EDITION, categories=(
        CategoryStatus("unemployed", "held_back", reason="volume 4 is below 50% of the 7-day median",
                       rows_in=4, rows_published=0, rows_quarantined=0,
                       feeds={"labour_market": {"status": "held_back",
                                                "reason": "volume 4 is below 50% of the 7-day median",
                                                "rows_in": 4, "rows_published": 0, "rows_quarantined": 0,
                                                "quarantined_by_rule": {}, "warnings_by_rule": {},
                                                "rows": 4, "pages": 1, "retries": 1, "declared_rows": None}}),
    )))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding one day's documents, every one written by its writer."""
    root = tmp_path_factory.mktemp("documents")
    _validated(root, "justice", "individuals", "children", range(1, 6))
    _validated(root, "labour", "labour_market", "unemployed", range(10, 14))
    _statuses(root)
    write_bytes_atomic(ExtractError(feed="labour.payments.pregnant", as_of=D, connection="osms_labour",
                                    kind="schema_change", error="feed labour.payments.pregnant for 2025-06-01:"
                                    " column 'iin' is missing (connection osms_labour)").to_bytes(),
                       layout.extract_error(root, D, "labour", "payments", "pregnant"))
    decisions.record(root, day=D, body="labour", system="labour_market", category="unemployed", action="release",
                     reason="volume checked with the ministry: a holiday", by="qa.lead",
                     at=dt.datetime(2025, 6, 1, 9, 30, tzinfo=dt.UTC))
    set_chain_start(root, D, set_by="test")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    result = build_package(Run.of(D, data_dir=root), signing_key_pem=pem, producer_version="test", memory_limit="256MB")
    store_receipt(result.path, Receipt(receipt_id="SC-2025-06-01-0001", package_id=result.package_id,
                                       manifest_sha256=result.manifest_sha256, logical_date=D.isoformat(),
                                       received_at="2025-06-01T01:02:03+00:00", files=3))
    return root


def _paths(root: Path) -> dict[str, Path]:
    package = layout.package_dir(root, D)
    return {
        "status": layout.status(root, D, "labour"),
        "extract_error": layout.extract_error(root, D, "labour", "payments", "pregnant"),
        "decisions": layout.decisions(root, D, "labour"),
        "quality": package / QUALITY,
        "manifest": package / MANIFEST,
        "receipt": package / RECEIPT,
        "chain_start": layout.chain_start(root),
    }


MODELS: dict[str, Any] = {
    "status": BodyStatus, "extract_error": ExtractError, "decisions": DecisionLog, "quality": QualityDocument,
    "manifest": Manifest, "receipt": Receipt, "chain_start": ChainStart,
}


def _raw(root: Path, name: str) -> bytes:
    return _paths(root)[name].read_bytes()


def _doc(root: Path, name: str) -> dict[str, Any]:
    return json.loads(_raw(root, name))


def test_the_day_holds_what_the_models_must_cover(day):
    # the fixture is what the other tests stand on: a released feed, a decision, a receipt of the real manifest
    quality = QualityDocument.parse(_raw(day, "quality"))
    feed = quality.categories["unemployed"].bodies["labour"].feeds["labour_market"]
    assert feed.status == "released" and feed.decision is not None and feed.decision.by == "qa.lead"
    assert quality.categories["children"].bodies["justice"].status == "published"
    assert [d.action for d in quality.decisions] == ["release"]
    manifest = Manifest.parse(_raw(day, "manifest"))
    assert [f.name for f in manifest.files] == ["records.parquet", "changes.parquet", "quality.json"]
    assert Receipt.parse(_raw(day, "receipt")).package_id == manifest.package_id


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_written_document_parses_and_gives_back_its_bytes(day, name):
    # Arrange
    raw = _raw(day, name)

    # Act
    doc = MODELS[name].parse(raw)
    again = MODELS[name].parse(doc.to_bytes())

    # Assert
    assert doc.to_bytes() == raw
    assert again == doc


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_document_parses_the_same_from_bytes_text_and_an_object(day, name):
    raw = _raw(day, name)

    docs = [MODELS[name].parse(raw), MODELS[name].parse(raw.decode()), MODELS[name].parse(json.loads(raw))]

    assert docs[0] == docs[1] == docs[2]


def test_a_status_keeps_its_categories_feeds_and_counts(day):
    status = BodyStatus.parse(layout.status(day, D, "justice").read_bytes())

    children = status.category("children")

    assert (status.body, status.as_of, status.edition) == ("justice", D, EDITION)
    assert (children.status, children.rows_in, children.rows_published, children.rows_quarantined) == (
        "published", 6, 5, 1)
    assert children.quarantined_by_rule == {"iin_valid": 1} and children.warnings_by_rule == {"name_latin": 2}
    assert children.feed_status("individuals") == "published" and children.feed_rows_in("individuals") == 6
    with pytest.raises(KeyError, match="no category 'unemployed'"):
        status.category("unemployed")


def test_a_problem_prints_as_its_sentence_and_round_trips_through_its_dict_and_pickle(day, tmp_path):
    # Arrange: a copy of the package with its quality document changed after signing
    package = shutil.copytree(layout.package_dir(day, D), tmp_path / D.isoformat())
    (package / QUALITY).write_bytes(b"{}")

    # Act
    problems = verify_package(package, None)

    # Assert
    assert {(p.kind, p.file) for p in problems} == {("file", QUALITY)}  # its size and its checksum
    problem = problems[0]
    assert problem == f"{QUALITY}: {problem.message}"
    assert Problem(**problem.as_dict()) == problem and Problem(**problem.as_dict()).kind == "file"
    assert pickle.loads(pickle.dumps(problem)).as_dict() == problem.as_dict()


def test_a_problem_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown problem kind 'weather'"):
        Problem("weather", MANIFEST, "rain")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- refusals, each naming the field


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with the field at ``path`` set to ``value`` (or removed: ``_GONE``)."""
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _GONE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_GONE = object()

# (document, field path, value: wrong type, _GONE for missing, an unknown enum value, a wrong schema; what the
# message must name)
REFUSALS = [
    # a body's status
    ("status", ("body",), 7, "body"),
    ("status", ("as_of",), "yesterday", "as_of"),
    ("status", ("edition",), _GONE, "edition"),
    ("status", ("categories",), [], "categories"),
    ("status", ("categories", "unemployed", "status"), "done", "status"),
    ("status", ("categories", "unemployed", "rows_in"), "four", "rows_in"),
    ("status", ("categories", "unemployed", "quarantined_by_rule"), {"iin_valid": "one"}, "quarantined_by_rule"),
    ("status", ("categories", "unemployed", "colour"), "red", "colour"),
    ("status", ("categories", "unemployed", "feeds", "labour_market", "status"), "done", "status"),
    ("status", ("categories", "unemployed", "feeds", "labour_market", "rows_in"), "four", "rows_in"),
    ("status", ("schema",), "osms.core.status/2", "schema"),
    ("status", ("schema",), _GONE, "schema"),
    # an extract's failure
    ("extract_error", ("kind",), "timeout", "kind"),
    ("extract_error", ("as_of",), 20250601, "as_of"),
    ("extract_error", ("connection",), _GONE, "connection"),
    ("extract_error", ("error",), None, "error"),
    ("extract_error", ("row",), 3, "row"),
    # QA's decisions
    ("decisions", ("schema",), "osms.core.decisions/0", "schema"),
    ("decisions", ("day",), "June", "day"),
    ("decisions", ("body",), _GONE, "body"),
    ("decisions", ("decisions", "0", "action"), "approve", "action"),
    ("decisions", ("decisions", "0", "feed"), "labour/labour_market", "feed"),
    ("decisions", ("decisions", "0", "at"), "2025-06-01T09:30:00", "at"),
    ("decisions", ("decisions", "0", "reason"), "", "reason"),
    ("decisions", ("decisions", "0", "applies_from"), _GONE, "applies_from"),
    # quality.json
    ("quality", ("schema",), "osms.package.build/1", "schema"),
    ("quality", ("package_id",), _GONE, "package_id"),
    ("quality", ("logical_date",), "2025-13-01", "logical_date"),
    ("quality", ("edition", "provisional"), "maybe", "provisional"),
    ("quality", ("categories", "children", "status"), "held_back", "status"),
    ("quality", ("categories", "children", "rows"), "five", "rows"),
    ("quality", ("categories", "children", "bodies", "justice", "status"), "released", "status"),
    ("quality", ("categories", "children", "bodies", "justice", "feeds", "individuals", "status"), "late",
     "status"),
    ("quality", ("categories", "children", "bodies", "justice", "feeds", "individuals", "rows_used"), _GONE,
     "rows_used"),
    ("quality", ("categories", "unemployed", "bodies", "labour", "feeds", "labour_market", "decision", "action"),
     "approve", "action"),
    ("quality", ("totals", "rows"), None, "rows"),
    ("quality", ("changes", "added"), _GONE, "added"),
    ("quality", ("notes",), "none", "notes"),
    ("quality", ("signed_by",), "me", "signed_by"),
    # the manifest
    ("manifest", ("schema",), "osms.package.build.quality/1", "schema"),
    ("manifest", ("package_id",), 1, "package_id"),
    ("manifest", ("previous_manifest_sha256",), "not a hash", "previous_manifest_sha256"),
    ("manifest", ("files", "0", "sha256"), "ABC", "sha256"),
    ("manifest", ("files", "0", "bytes"), -1, "bytes"),
    ("manifest", ("files", "0", "rows"), _GONE, "rows"),
    ("manifest", ("categories", "children", "status"), "held_back", "status"),
    ("manifest", ("edition", "decree", "date"), "660", "date"),
    ("manifest", ("producer",), _GONE, "producer"),
    # the receipt
    ("receipt", ("receipt_id",), _GONE, "receipt_id"),
    ("receipt", ("receipt_id",), "", "receipt_id"),
    ("receipt", ("files",), "3", "files"),
    ("receipt", ("manifest_sha256",), 42, "manifest_sha256"),
    ("receipt", ("logical_date",), 20250601, "logical_date"),
    # the chain's start
    ("chain_start", ("schema",), "osms.package.chain.start/2", "schema"),
    ("chain_start", ("start",), "soon", "start"),
    ("chain_start", ("set_by",), 1, "set_by"),
    ("chain_start", ("set_at",), _GONE, "set_at"),
    ("chain_start", ("end",), "2026-01-01", "end"),
]


@pytest.mark.parametrize(("name", "path", "value", "field"), REFUSALS,
                         ids=[f"{n}:{'.'.join(p)}={'missing' if v is _GONE else repr(v)[:20]}"
                              for n, p, v, _ in REFUSALS])
def test_a_malformed_field_is_refused_naming_it(day, name, path, value, field):
    # Arrange
    doc = _set(_doc(day, name), path, value)

    # Act
    with pytest.raises(DocumentError) as caught:
        MODELS[name].parse(json.dumps(doc).encode())

    # Assert: the field is named, and never the value that was refused (but for a schema: it is no one's data)
    assert field in str(caught.value)
    if isinstance(value, str) and len(value) > 3 and field != "schema":
        assert value not in str(caught.value)


def test_a_receipt_ignores_fields_the_receiver_adds():
    receipt = Receipt.parse({"receipt_id": "R", "package_id": "P", "manifest_sha256": "a" * 64,
                             "received_at": "2025-06-01T00:00:00Z", "files": 3, "receiver": "sc-2"})

    assert "receiver" not in receipt.as_dict() and receipt.logical_date is None


def test_a_status_that_is_not_json_says_it_is_cut_short():
    with pytest.raises(DocumentError, match=r"not valid JSON \(.*; 9 bytes: cut short or damaged\)"):
        BodyStatus.parse(b'{"schema"')


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_document_that_is_not_json_is_refused(name):
    with pytest.raises(DocumentError):
        MODELS[name].parse(b"{not json")


def test_the_verdict_vocabularies_are_those_the_models_accept():
    assert FEED_VERDICTS == ("published", "held_back", "failed")
    assert STATUS_VERDICTS == ("published", "partial", "held_back", "failed")
    assert PACKAGE_CATEGORY_STATUSES == ("published", "carried_forward", "partial", "missing")
    for verdict in STATUS_VERDICTS:
        assert CategoryStatus("children", verdict).status == verdict
    with pytest.raises(ValueError, match="status"):
        CategoryStatus("children", "carried_forward")


# --------------------------------------------------------------------------- byte-stable output


def _reordered(obj: Any) -> Any:
    """The same JSON with every object's keys in reverse order (lists keep theirs: their order means something)."""
    if isinstance(obj, dict):
        return {k: _reordered(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reordered(v) for v in obj]
    return obj


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_bytes_do_not_depend_on_the_order_fields_came_in(day, name):
    raw = _raw(day, name)

    reordered = MODELS[name].parse(json.dumps(_reordered(json.loads(raw))).encode())

    assert reordered.to_bytes() == raw


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_same_document_gives_the_same_bytes(day, name):
    first, second = MODELS[name].parse(_raw(day, name)), MODELS[name].parse(_raw(day, name))

    assert first is not second and first.to_bytes() == second.to_bytes()


@pytest.mark.parametrize("name", ["quality", "manifest"])
def test_the_package_documents_are_canonical_json(day, name):
    raw = _raw(day, name)

    assert raw == canonical_json(json.loads(raw))
    assert list(json.loads(raw)) == sorted(json.loads(raw))


@pytest.mark.parametrize("name", ["receipt", "chain_start"])
def test_receipt_and_chain_start_are_sorted_and_end_with_a_newline(day, name):
    raw = _raw(day, name)

    assert raw.endswith(b"}\n")
    assert raw == (json.dumps(json.loads(raw), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def test_a_status_files_its_categories_feeds_and_rule_counts_by_code_whatever_order_they_were_given():
    # Arrange: the same status, its categories, feeds and rule counts given in two orders
    def status(order: slice) -> BodyStatus:
        feeds = {s: {"status": "published", "rows_in": 1} for s in ["nedb", "edu", "kindergarten"][order]}
        rules = dict([("iin_valid", 1), ("birth_date_past", 2)][order])
        cats = [CategoryStatus(c, "published", rows_in=3, quarantined_by_rule=rules, feeds=feeds)
                for c in ["pupils", "children"][order]]
        return BodyStatus(body="enlightenment", as_of=D, edition=EDITION, categories=tuple(cats))

    # Act
    forward, backward = status(slice(None)), status(slice(None, None, -1))

    # Assert
    assert forward.to_bytes() == backward.to_bytes()
    doc = json.loads(forward.to_bytes())
    assert list(doc) == ["schema", "body", "as_of", "edition", "categories"]
    assert list(doc["categories"]) == ["children", "pupils"]
    assert list(doc["categories"]["children"]["feeds"]) == ["edu", "kindergarten", "nedb"]
    assert list(doc["categories"]["children"]["quarantined_by_rule"]) == ["birth_date_past", "iin_valid"]


def test_a_quality_document_no_decision_shaped_has_no_decision_keys(day):
    # a package built before QA could decide keeps its bytes: no empty "decisions", no "decision": null
    doc = _doc(day, "quality")
    doc["decisions"] = []
    del doc["categories"]["unemployed"]["bodies"]["labour"]["feeds"]["labour_market"]["decision"]

    raw = QualityDocument.parse(doc).to_bytes()

    assert b'"decision' not in raw
