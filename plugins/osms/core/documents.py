"""One contract per document: the JSON files that pass from stage to stage, as pydantic models.

Every writer builds its document through these models and every reader parses it
through them, so a field's name and type are said once. The bytes on disk stay
what the README documents (fields may be added, never renamed), so packages
delivered before still verify:

========================  ==================================  ==========================
document                  model                               where (``osms.core.layout``)
========================  ==================================  ==========================
a body's status for D     :class:`BodyStatus`                 ``status/D/<body>.json``
an extract's failure      :class:`ExtractError`               ``landing/.../<cat>.error.json``
QA's decisions on a day   :class:`DecisionLog`                ``decisions/D/<body>.json``
the package's quality     :class:`QualityDocument`            ``packages/D/quality.json``
the package's manifest    :class:`Manifest`                   ``packages/D/manifest.json``
the receiver's receipt    :class:`Receipt`                    ``packages/D/receipt.json``
a verification problem    :class:`Problem`                    (``osms package verify``)
the chain's start         :class:`ChainStart`                 ``chain/start.json``
========================  ==================================  ==========================

The package's files are named here, once (:data:`RECORDS` ... :data:`RECEIPT`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator
from typing_extensions import TypedDict

__all__ = [
    "CHANGES", "FEED_VERDICTS", "MANIFEST", "PACKAGE_CATEGORY_STATUSES", "PACKAGE_FILES", "QUALITY", "RECEIPT",
    "RECORDS", "SIGNATURE", "STATUS_VERDICTS",
    "BodyStatus", "CategoryStatus", "ChainStart", "Decision", "DecisionLog", "DocumentError", "ExtractError",
    "FeedReport", "FeedVerdict", "Manifest", "ManifestFile", "PackageBodyStatus", "PackageCategoryStatus",
    "PackageFeedStatus", "Problem", "QualityDocument", "Receipt", "StatusVerdict", "Verdict", "canonical_json",
    "first_error",
]

RECORDS, CHANGES, QUALITY, MANIFEST, SIGNATURE, RECEIPT = (
    "records.parquet", "changes.parquet", "quality.json", "manifest.json", "manifest.sig", "receipt.json",
)
PACKAGE_FILES = (RECORDS, CHANGES, QUALITY)  # what the manifest lists, in this order

STATUS_SCHEMA = "osms.core.status/1"
PACKAGE_SCHEMA = "osms.package.build/1"
QUALITY_SCHEMA = "osms.package.build.quality/1"
DECISIONS_SCHEMA = "osms.core.decisions/1"
CHAIN_START_SCHEMA = "osms.package.chain.start/1"

# The verdicts, in two vocabularies. A body's status (the agency DAG, on D) judges feeds and sums a category up;
# the package (quality.json, the manifest) says what it made of them: a held-back feed QA released, a body or feed
# that did not report (missing), a category carried forward from an earlier day.
FeedVerdict = Literal["published", "held_back", "failed"]  # a feed, in a body's status
StatusVerdict = Literal["published", "partial", "held_back", "failed"]  # a category, in a body's status
Verdict = StatusVerdict  # its former name
PackageFeedStatus = Literal["published", "released", "held_back", "failed", "missing"]  # a feed, in the package
PackageBodyStatus = Literal["published", "partial", "held_back", "failed", "missing"]  # a body's category, ditto
PackageCategoryStatus = Literal["published", "carried_forward", "partial", "missing"]  # a category, in the package
FEED_VERDICTS: tuple[str, ...] = get_args(FeedVerdict)
STATUS_VERDICTS: tuple[str, ...] = get_args(StatusVerdict)
PACKAGE_CATEGORY_STATUSES: tuple[str, ...] = get_args(PackageCategoryStatus)


class DocumentError(ValueError):
    """A document that does not fit its model; the message says which field and what is wrong."""


def first_error(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``field.path: message`` (never the value, which may be personal)."""
    err = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "document"
    return f"{where}: {err['msg'].lower()}"


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a JSON document: sorted keys, no spaces, UTF-8, no trailing newline."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, raw: bytes | str | dict[str, Any]) -> Any:
        """The document from its JSON (or an already parsed object); :class:`DocumentError` naming the field."""
        try:
            return cls.model_validate_json(raw) if isinstance(raw, bytes | str) else cls.model_validate(raw)
        except ValidationError as exc:
            raise DocumentError(first_error(exc)) from None


# --------------------------------------------------------------------------- the body status


class FeedReport(TypedDict, total=False):
    """One feed's part of a category's status: its verdict, counts, and the extract's figures or its error.

    A plain mapping on purpose (statuses written before verdicts were per feed hold only
    some of these keys); pydantic checks the types of what is there and keeps any other key.
    """

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    status: FeedVerdict
    reason: str | None
    rows_in: int
    rows_published: int
    rows_quarantined: int
    quarantined_by_rule: dict[str, int]
    warnings_by_rule: dict[str, int]
    rows: int
    pages: int
    retries: int
    declared_rows: int | None
    error: str
    kind: str


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: mapping[k] for k in sorted(mapping)}


class CategoryStatus(_Document):
    """The verdict on one category of one body for a date, with its counts and its feeds' verdicts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: StatusVerdict
    reason: str | None = None
    rows_in: int = 0
    rows_published: int = 0
    rows_quarantined: int = 0
    quarantined_by_rule: dict[str, int] = Field(default_factory=dict)
    warnings_by_rule: dict[str, int] = Field(default_factory=dict)
    feeds: dict[str, FeedReport] = Field(default_factory=dict)  # system -> the feed's report
    category: str = Field(exclude=True)  # the key it is filed under in the status, not repeated inside

    def __init__(self, category: str | None = None, status: str | None = None, /, **data: Any) -> None:
        # CategoryStatus("children", "published", rows_in=...) reads as the dataclass it was
        if category is not None:
            data["category"] = category
        if status is not None:
            data["status"] = status
        super().__init__(**data)

    @field_validator("quarantined_by_rule", "warnings_by_rule")
    @classmethod
    def _sort_counts(cls, v: dict[str, int]) -> dict[str, int]:
        return _sorted(v)

    @field_validator("feeds")
    @classmethod
    def _sort_feeds(cls, v: dict[str, FeedReport]) -> dict[str, FeedReport]:
        return {k: _sorted(dict(v[k])) for k in sorted(v)}  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, keys sorted for stable bytes."""
        return self.model_dump(mode="json")

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


class BodyStatus(_Document):
    """Everything a body reports for a date (``status/D/<body>.json``)."""

    schema_: Literal["osms.core.status/1"] = Field(default=STATUS_SCHEMA, alias="schema")
    body: str
    as_of: dt.date
    edition: str
    categories: tuple[CategoryStatus, ...]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The status document: categories filed under their codes, in order."""
        return {
            "schema": STATUS_SCHEMA,
            "body": self.body,
            "as_of": self.as_of.isoformat(),
            "edition": self.edition,
            "categories": {c.category: c.to_dict() for c in sorted(self.categories, key=lambda c: c.category)},
        }

    def to_bytes(self) -> bytes:
        """The file's bytes: indented JSON, a trailing newline."""
        return (json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes | str | dict[str, Any]) -> BodyStatus:
        """A status from its JSON; :class:`DocumentError` naming what is wrong (the field, or why it is no JSON)."""
        try:
            doc = json.loads(raw) if isinstance(raw, bytes | str) else raw
        except (ValueError, UnicodeDecodeError) as exc:
            what = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
            raise DocumentError(f"not valid JSON ({what.lower()}; {len(raw)} bytes: cut short or damaged)") from None
        if not isinstance(doc, dict) or doc.get("schema") != STATUS_SCHEMA:
            got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise DocumentError(f"not an osms status document (schema {got!r})")
        cats = doc.get("categories")
        if not isinstance(cats, dict):
            raise DocumentError("categories: must be an object filed by category code")
        try:
            return cls.model_validate({**doc, "categories": [{**dict(c), "category": code}
                                                             if isinstance(c, dict) else c
                                                             for code, c in cats.items()]})
        except ValidationError as exc:
            raise DocumentError(f"a field is missing or of the wrong type ({first_error(exc)})") from None

    def category(self, code: str) -> CategoryStatus:
        """The status of one category."""
        for c in self.categories:
            if c.category == code:
                return c
        raise KeyError(f"body {self.body} reported no category {code!r} for {self.as_of}")


# --------------------------------------------------------------------------- an extract's failure


class ExtractError(_Document):
    """Why a feed's extract failed: kept beside its landing file so that the status can say so.

    The message names the feed, the date, the connection and the cause, never a record's content.
    """

    feed: str
    as_of: dt.date
    connection: str
    kind: Literal["schema_change", "extract_failed"]
    error: str

    def to_bytes(self) -> bytes:
        """The file's bytes (compact JSON, keys in the model's order)."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- QA's decisions


DecisionAction = Literal["release", "hold"]


class Decision(_Document):
    """What QA decided about one feed held back on one day: release its validated rows, or confirm the hold.

    ``applies_from`` is the first package the decision shapes, fixed when it is made: the
    day's own package if it was not built yet, else the next one not built; a delivered
    package never changes. ``by`` is the login of whoever decided, ``at`` when (UTC).
    """

    feed: str = Field(pattern=r"^[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+$")  # body.system.category
    day: dt.date
    action: DecisionAction
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(min_length=1, max_length=100)
    at: dt.datetime
    applies_from: dt.date

    @field_validator("at")
    @classmethod
    def _aware_utc(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("must carry its time zone")
        return v.astimezone(dt.UTC)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the decisions file, quality.json, the pages)."""
        return self.model_dump(mode="json")


class DecisionLog(_Document):
    """``decisions/D/<body>.json``: every decision made about the body's feeds held back on D, in order made.

    Append-only: a later decision about the same feed stands from its ``applies_from`` on,
    and the earlier one keeps shaping the packages built before, so they rebuild the same.
    """

    schema_: Literal["osms.core.decisions/1"] = Field(default=DECISIONS_SCHEMA, alias="schema")
    body: str
    day: dt.date
    decisions: tuple[Decision, ...] = ()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        """The file's bytes: indented JSON, a trailing newline."""
        doc = self.model_dump(mode="json", by_alias=True)
        return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode()


# --------------------------------------------------------------------------- the package's quality.json


class QualityFeed(_Document):
    """One feed of a body in one category: its verdict on D and what it contributed.

    ``released``: held back on D and released by QA (``decision`` says who, when, why).
    """

    status: PackageFeedStatus
    reason: str | None
    carried_forward_from: dt.date | None
    rows_in: int
    rows_published: int
    rows_quarantined: int
    rows_used: int
    decision: Decision | None = None  # QA's decision on this feed's verdict of D, where it shapes this package


class QualityBody(_Document):
    """One body's part of a category: its verdict, counts and feeds."""

    status: PackageBodyStatus  # the body's verdict on the category in its status, or missing (none)
    reason: str | None
    rows_in: int
    rows_published: int
    rows_quarantined: int
    quarantined_by_rule: dict[str, int]
    carried_forward_from: dt.date | None
    rows_used: int
    records_carried_forward: int
    feeds: dict[str, QualityFeed]


class QualityCategory(_Document):
    """One category of the package."""

    status: PackageCategoryStatus
    rows: int
    decree_row: int
    records_carried_forward: int
    conflicts: dict[str, int]
    bodies: dict[str, QualityBody]


class QualityTotals(_Document):
    rows: int
    categories: dict[str, int]
    rows_quarantined: int
    records_carried_forward: int
    conflicts: dict[str, int]


class Changes(_Document):
    against: str | None  # the previous delivered package's folder (its date), or None: every row is added
    added: int
    removed: int
    changed: int


class EditionRef(_Document):
    code: str
    provisional: bool


class QualityDocument(_Document):
    """``quality.json``: per category, body and feed, counts and verdicts only (never personal data)."""

    schema_: Literal["osms.package.build.quality/1"] = Field(default=QUALITY_SCHEMA, alias="schema")
    package_id: str
    logical_date: dt.date
    edition: EditionRef
    categories: dict[str, QualityCategory]
    totals: QualityTotals
    changes: Changes
    notes: list[str]
    # the QA decisions that shaped this package (see osms.core.decisions); absent when none did
    decisions: list[Decision] = Field(default_factory=list)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        """The file's bytes: canonical JSON (a package no decision shaped has the bytes it had before decisions)."""
        doc = self.model_dump(mode="json", by_alias=True)
        if not doc["decisions"]:
            del doc["decisions"]
        for category in doc["categories"].values():
            for body in category["bodies"].values():
                for feed in body["feeds"].values():
                    if feed["decision"] is None:
                        del feed["decision"]
        return canonical_json(doc)


# --------------------------------------------------------------------------- the manifest


class ManifestFile(_Document):
    """One file a manifest lists, with its checksum and size (rows for Parquet files)."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    rows: int | None


class Decree(_Document):
    number: str
    date: dt.date
    title: str


class ManifestEdition(_Document):
    code: str
    provisional: bool
    decree: Decree


class ManifestCategory(_Document):
    status: PackageCategoryStatus
    rows: int


class Producer(_Document):
    name: str
    version: str


class Manifest(_Document):
    """``manifest.json``: what the package holds, checksummed, chained on its predecessor; signed as bytes."""

    schema_: Literal["osms.package.build/1"] = Field(default=PACKAGE_SCHEMA, alias="schema")
    package_id: str
    logical_date: dt.date
    edition: ManifestEdition
    previous_manifest_sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    files: list[ManifestFile]
    categories: dict[str, ManifestCategory]
    producer: Producer

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        """The bytes that are signed: canonical JSON."""
        return canonical_json(self.model_dump(mode="json", by_alias=True))

    def file(self, name: str) -> ManifestFile | None:
        """The entry of one listed file, or None."""
        return next((f for f in self.files if f.name == name), None)


# --------------------------------------------------------------------------- the receipt


class Receipt(_Document):
    """The receiver's proof that a package was delivered (``receipt.json``, and what the receiver answers)."""

    receipt_id: StrictStr = Field(min_length=1)
    package_id: StrictStr = Field(min_length=1)
    manifest_sha256: StrictStr = Field(min_length=1)
    logical_date: StrictStr | None = None
    received_at: StrictStr = Field(min_length=1)
    files: StrictInt

    # the receiver may add fields of its own to its answer; they are not ours to keep
    model_config = ConfigDict(frozen=True, extra="ignore")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (receipt.json and XCom)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> Receipt:
        """A receipt from the receiver's JSON (or receipt.json); ValueError when a field is missing or mistyped."""
        if not isinstance(data, dict):
            raise ValueError("a receipt is a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            if err["type"] == "missing":
                raise ValueError(f"a receipt needs {err['loc'][0]!r}") from None
            raise ValueError(f"a receipt's fields have the wrong types ({first_error(exc)})") from None

    def to_bytes(self) -> bytes:
        """The file's bytes: indented, sorted JSON and a newline."""
        return (json.dumps(self.as_dict(), ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- the chain's start


class ChainStart(_Document):
    """``chain/start.json``: the first day of the delivery chain, written once; no package is built before it."""

    schema_: Literal["osms.package.chain.start/1"] = Field(default=CHAIN_START_SCHEMA, alias="schema")
    start: dt.date
    set_by: StrictStr  # who wrote it: the init, the first scheduled or backfill run, osms run, osms chain start
    set_at: StrictStr  # when (UTC, ISO 8601): for people; no package depends on it

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        """The file's bytes: indented, sorted JSON and a newline."""
        return (json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- verification problems


ProblemKind = Literal["manifest", "file", "signature", "key", "chain"]


class Problem(str):
    """One problem found by ``verify_package``: a sentence naming the file (it *is* that string, so it prints
    and compares as one), with its ``kind``, the ``file`` concerned and the ``message`` after the file's name.

    Kinds: ``manifest`` (missing, unreadable, not canonical), ``file`` (a listed file missing
    or differing), ``signature``, ``key`` (the public key given) and ``chain`` (the link to
    the previous package). The UI sorts problems by kind, never by matching sentences.
    """

    kind: ProblemKind
    file: str
    message: str
    KINDS: ClassVar[tuple[str, ...]] = ("manifest", "file", "signature", "key", "chain")

    def __new__(cls, kind: ProblemKind, file: str, message: str) -> Problem:
        if kind not in cls.KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self = super().__new__(cls, f"{file}: {message}")
        self.kind, self.file, self.message = kind, file, message
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Problem, (self.kind, self.file, self.message))

    def as_dict(self) -> dict[str, str]:
        """JSON-able form: kind, file, message."""
        return {"kind": self.kind, "file": self.file, "message": self.message}
