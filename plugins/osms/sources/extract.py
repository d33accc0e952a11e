"""The one HTTP client for every source system, and the streaming extract of a feed
into its typed Parquet landing file.

    GET {base_url}/v1/systems/{system}/records?category=&as_of=&limit=&cursor=
    Authorization: Bearer <token of the system>

Pages are NDJSON and follow ``X-Next-Cursor`` until it is absent. Each page is
parsed by Arrow's C++ JSON reader against the declared column types, checked,
given the lineage columns and appended to a ``ParquetWriter`` on a temporary
file beside the landing file; only a complete feed is renamed onto the landing
path, so a reader never sees a partial feed and a failed run leaves the previous
file as it was. Memory stays bounded by one page plus one row group, whatever
the feed's size.

Requests go through the pipeline's one HTTP client (:mod:`osms.sources.http_client`):
its retry policy (connection errors and timeouts, 5xx, 408 and 429 retried with
exponential backoff, Retry-After honoured up to a cap; other 4xx not) and its
reading of the error envelope. What is source-specific stays here: cursor paging,
the checks of a complete page (a page cut off in the middle of a line or shorter
than ``X-Page-Records`` is retried like a 503; an answer that is not NDJSON is
not), and streaming into Parquet. A line that is not JSON in an otherwise
complete page, a column that is missing or unexpected, a value of the wrong type
are persistent too: the feed fails at once with a :class:`FeedExtractError` that
names the feed, the date, the page and the line, never the record's content
(IINs and names are personal data).

A source is untrusted input. A page is read piece by piece and refused past
``max_page_bytes`` (a connection extra; by default an eighth of what the task's
memory budget leaves for data) or when it is still arriving after ``page_deadline``
seconds; a redirect is not followed; a line nested deeper than
:data:`MAX_JSON_DEPTH` is refused before Python's JSON parser sees it (Arrow's
reader, given the flat declared schema, stops at the first nested value by itself);
whatever text of the source a message quotes (a column name, a content type, a
record id) is folded to one line and bounded (:func:`osms.core.redact.quote`).
A ``record_id`` in the form of an IIN (a source using the person's IIN as its
record id) is replaced in the landing file by ``withheld-iin-p<page>-r<row>``
before anything else sees it; the common suite's ``record_id_not_iin`` then
quarantines the row. A feed whose rows come unsorted is sorted by DuckDB within
the task's budget, spilling to disk, never held in memory whole.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import requests

from osms.core.files import fsync_dir, fsync_path, private_dir
from osms.core.redact import mask_iins, quote
from osms.sources.http_client import (
    Answer,
    HttpClient,
    Refused,
    RetryPolicy,
    TooLarge,
    TooSlow,
    Transient,
    backoff_seconds,
    parse_retry_after,
)

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from osms.core.registry import Column

__all__ = [
    "ExtractResult",
    "FeedExtractError",
    "LINEAGE_COLUMNS",
    "MAX_JSON_DEPTH",
    "PageError",
    "SchemaChange",
    "SourceClient",
    "SourceEndpoint",
    "backoff_seconds",
    "check_columns",
    "endpoint_from_connection",
    "extract_feed",
    "landing_schema",
    "next_request",
    "parse_page",
    "parse_retry_after",
    "withhold_iin_record_ids",
]

log = logging.getLogger(__name__)

SORT_KEY = "record_id"
# Rows per Parquet row group: large enough for good zstd ratios and fast scans,
# small enough that the buffer stays a few tens of MiB at any feed size.
ROW_GROUP_ROWS = 100_000
# Arrow's JSON reader splits its input in blocks of this size (a line must fit in one).
_JSON_BLOCK_BYTES = 1 << 20
LINEAGE_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("body", pa.string()),
    pa.field("system", pa.string()),
    pa.field("category", pa.string()),
    pa.field("as_of", pa.date32()),
)

_INT32 = (-(2**31), 2**31 - 1)
# A record is one flat JSON object (depth 1): a line nested deeper than this is refused before any
# Python parser sees it (json's recursion ends in RecursionError a thousand levels down).
MAX_JSON_DEPTH = 32
# What a record_id in the form of an IIN becomes in the landing file (and so everywhere after).
WITHHELD_PREFIX = "withheld-iin-"
# The deadline of one page: a national page of 50 000 records arrives in a second or two.
PAGE_DEADLINE = 300.0
# Source text (a column name) is quoted at most this long; at most this many names are listed.
NAME_QUOTE = 64
NAMES_LISTED = 10


# --------------------------------------------------------------------------
# Connection settings
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceEndpoint:
    """What an Airflow connection ``osms_source_<system>`` holds."""

    base_url: str
    token: str = field(repr=False)  # never in a repr, so never in a log line by accident
    # Records asked for a page; a connection's extra ``page_size`` sets it per source (the mocks
    # allow 50 000: a national feed of 6 M records then takes 120 requests instead of 600).
    page_size: int = 10_000
    timeout: float = 60.0
    # Retries per page; a page is given up after max_retries + 1 attempts.
    max_retries: int = 6
    # Backoff: base * 2**(retry - 1) seconds, at most backoff_max; a Retry-After
    # is honoured up to backoff_max too, so a source asking for an hour cannot
    # stall a worker for an hour (the task's own retry takes over).
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A feed of more pages than this is refused rather than followed: at 50 000 records a page,
    # 100 000 pages is 250 times the largest national feed.
    max_pages: int = 100_000
    # The largest page read (bytes); None: the task budget's (osms.core.budget.Budget.max_page_bytes,
    # 181 MiB at 2 GiB, where a national page of 50 000 records is about 15 MiB).
    max_page_bytes: int | None = None
    # Seconds a page may take from request to last byte: a source dripping a page is not waited on
    # for the task's hour (each socket read has ``timeout`` besides).
    page_deadline: float = PAGE_DEADLINE

    @property
    def policy(self) -> RetryPolicy:
        """The client's retry policy with this source's attempts and backoff."""
        return RetryPolicy(attempts=self.max_retries + 1, backoff_base=self.backoff_base, backoff_max=self.backoff_max)

    @property
    def page_bytes(self) -> int:
        """The largest page read: the extra ``max_page_bytes``, else what the task's budget allows."""
        if self.max_page_bytes is not None:
            return self.max_page_bytes
        from osms.core.budget import task_budget

        return task_budget().max_page_bytes


def _size(value: Any) -> int:
    """A size extra: bytes, or with a unit (``64MiB``)."""
    from osms.core.budget import parse_bytes

    return value if isinstance(value, int) and not isinstance(value, bool) else parse_bytes(str(value))


# Connection extras that tune an endpoint, with their types.
CONNECTION_EXTRAS = {"page_size": int, "timeout": float, "max_retries": int, "backoff_base": float,
                     "backoff_max": float, "max_pages": int, "max_page_bytes": _size, "page_deadline": float}


def endpoint_from_connection(conn_id: str) -> SourceEndpoint:
    """Read the Airflow connection ``conn_id`` (e.g. from ``AIRFLOW_CONN_<ID>``) as a SourceEndpoint."""
    from osms.sources.connections import read_connection

    conn = read_connection(conn_id, token_of="the source's", extras=CONNECTION_EXTRAS)
    return SourceEndpoint(base_url=conn.url, token=conn.token or "", **conn.settings)


# --------------------------------------------------------------------------
# Errors and results
# --------------------------------------------------------------------------


class FeedExtractError(RuntimeError):
    """A feed could not be extracted; the message names the feed, the date and the cause, never record content."""

    def __init__(
        self,
        *,
        body: str,
        system: str,
        category: str,
        as_of: dt.date,
        cause: str,
        status: int | None = None,
        attempts: int = 1,
        page: int | None = None,
        schema_change: bool = False,
    ) -> None:
        self.body, self.system, self.category, self.as_of = body, system, category, as_of
        self.cause, self.status, self.attempts, self.page = cause, status, attempts, page
        self.schema_change = schema_change
        super().__init__(f"feed {body}.{system}.{category} for {as_of.isoformat()}: {cause}")


class PageError(ValueError):
    """A page that is persistently wrong (not JSON, wrong columns or types); the message has no record content."""


class SchemaChange(PageError):
    """The source serves other columns than the registry declares (renamed, dropped or new ones)."""


@dataclass(frozen=True)
class ExtractResult:
    """What one extract did: counts and timings only, no personal data."""

    path: Path
    rows: int
    pages: int
    bytes_received: int
    seconds: float
    retries: int
    retry_causes: Mapping[str, int] = field(default_factory=dict)  # e.g. {"HTTP 503": 2}
    resorted: bool = False  # the source did not send rows sorted by record_id
    iin_record_ids: int = 0  # record ids in the form of an IIN, replaced (withheld-iin-...)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for XCom."""
        return {
            "path": str(self.path),
            "rows": self.rows,
            "pages": self.pages,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "retry_causes": dict(self.retry_causes),
            "resorted": self.resorted,
            "iin_record_ids": self.iin_record_ids,
        }


# --------------------------------------------------------------------------
# Small pure pieces: pagination, schema (Retry-After and backoff: osms.sources.http_client)
# --------------------------------------------------------------------------


def next_request(response: Any) -> dict[str, str] | None:
    """The query parameters that fetch the next page (``{"cursor": ...}``), or None after the last page."""
    headers = getattr(response, "headers", response)
    cursor = None
    if isinstance(headers, requests.structures.CaseInsensitiveDict):
        cursor = headers.get("X-Next-Cursor")
    else:
        for key, value in headers.items():
            if key.lower() == "x-next-cursor":
                cursor = value
                break
    cursor = (cursor or "").strip()
    return {"cursor": cursor} if cursor else None


def landing_schema(columns: Sequence[Column]) -> pa.Schema:
    """The landing file's schema: the declared columns, typed, then the lineage columns."""
    return pa.schema([pa.field(c.name, c.arrow_type) for c in columns] + list(LINEAGE_COLUMNS))


def _declared_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in columns])


def _json_schema(columns: Sequence[Column]) -> pa.Schema:
    # Arrow's JSON reader takes a date as days since the epoch, not as text: read
    # dates as strings and cast them (a strict cast: 2024-02-30 is refused).
    return pa.schema([pa.field(c.name, pa.string() if c.type == "date" else c.arrow_type) for c in columns])


def check_columns(found: Sequence[str], declared: Sequence[str]) -> str | None:
    """What is wrong with the columns a record carries, in words (a renamed column is one missing + one unexpected)."""
    found_set, declared_set = set(found), set(declared)
    missing = [c for c in declared if c not in found_set]
    unexpected = [c for c in found if c not in declared_set]
    problems = []
    if missing:
        problems.append(f"column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                        f" {'are' if len(missing) > 1 else 'is'} missing")
    if unexpected:
        # the source's own names: each folded and cut, and only the first few listed
        names = [quote(c, NAME_QUOTE) for c in unexpected[:NAMES_LISTED]]
        more = f" and {len(unexpected) - NAMES_LISTED} more" if len(unexpected) > NAMES_LISTED else ""
        problems.append(f"unexpected column{'s' if len(unexpected) > 1 else ''} {', '.join(names)}{more}")
    return "; ".join(problems) or None


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def nested_deeper_than(line: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays and objects more than ``limit`` deep (brackets in strings do not count).

    Read without parsing: strings are skipped whole, so a line of any depth costs one pass at most,
    and a deep one stops at its ``limit + 1``-th level.
    """
    if line.count(b"{") + line.count(b"[") <= limit:
        return False
    depth = 0
    for m in _JSON_TOKENS.finditer(line):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


# --------------------------------------------------------------------------
# Parsing a page
# --------------------------------------------------------------------------


def parse_page(data: bytes, columns: Sequence[Column], *, page: int) -> pa.Table:
    """One NDJSON page as a table of the declared columns and types; PageError naming page and line otherwise."""
    schema = _declared_schema(columns)
    if not data.strip():
        return schema.empty_table()
    declared = [c.name for c in columns]
    # The first record's keys: a renamed or dropped column fails on every line,
    # and here it is named as such instead of as a type error.
    first_line = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    first = _loads(first_line) if not nested_deeper_than(first_line) else None
    if isinstance(first, dict):
        problem = check_columns(list(first), declared)
        if problem:
            raise SchemaChange(f"page {page}: {problem}")
    try:
        # Arrow's reader is given the flat declared schema: it stops at the first nested value
        # (a type change or an unexpected field), so no depth reaches it
        table = _read_json(data, _json_schema(columns))
    except pa.ArrowInvalid:
        # Arrow's message may quote the offending value: find the line ourselves.
        raise _locate_bad_line(data, columns, page) from None
    for i, col in enumerate(columns):
        if col.type == "date":
            table = table.set_column(i, col.name, _dates(table, col.name, data, page))
    return table.select(declared)


def _loads(line: bytes) -> Any:
    """A line as JSON, or None when it is not (the caller names why)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _read_json(data: bytes, schema: pa.Schema) -> pa.Table:
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    try:
        return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=_JSON_BLOCK_BYTES),
                            parse_options=parse)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
        # a line longer than a block: read the page as one block
        return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=len(data) + 1),
                            parse_options=parse)


def _dates(table: pa.Table, name: str, data: bytes, page: int) -> pa.Array:
    strings = table.column(name).combine_chunks()
    try:
        return pc.cast(strings, pa.date32())
    except pa.ArrowInvalid:
        row = _first_uncastable(strings, pa.date32())
        raise PageError(f"page {page}, line {_line_of_row(data, row)}{_record_ref(table, row)}:"
                        f" column {name} holds a value that is not a date (YYYY-MM-DD)") from None


def _first_uncastable(values: pa.Array, to: pa.DataType) -> int:
    """Index of the first value that does not cast, by bisection (vectorised casts, no per-row Python)."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(values.slice(lo, mid - lo), to)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def _line_of_row(data: bytes, row: int) -> int:
    """1-based line number of the row-th record (Arrow skips blank lines)."""
    seen = -1
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == row:
                return number
    return row + 1


def _record_ref(table: pa.Table, row: int) -> str:
    return _quote_record_id(table.column(SORT_KEY)[row].as_py()) if SORT_KEY in table.column_names else ""


def _quote_record_id(value: Any) -> str:
    """`` (record_id X)`` for a message: record_id is the source's id, the one field a message may name;
    never one that holds an IIN, and only a short one, folded."""
    if not isinstance(value, str) or not 0 < len(value) <= NAME_QUOTE or mask_iins(value) != value:
        return ""
    return f" (record_id {quote(value, NAME_QUOTE)})"


def _fits(column_type: str, value: Any) -> bool:
    if value is None:
        return True
    if column_type in ("string", "iin", "enum", "date"):
        return isinstance(value, str)
    if column_type == "int":
        return isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]
    if column_type == "bool":
        return isinstance(value, bool)
    if column_type == "timestamp":
        if not isinstance(value, str):
            return False
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return False


_TYPE_WORDS = {
    "string": "text", "iin": "text", "enum": "text", "date": "a date (YYYY-MM-DD)",
    "timestamp": "a timestamp (YYYY-MM-DDTHH:MM:SSZ)", "int": "a 32-bit whole number", "bool": "true or false",
}


def _locate_bad_line(data: bytes, columns: Sequence[Column], page: int) -> PageError:
    """The first line that Arrow could not read, as a PageError naming page, line and column."""
    declared = [c.name for c in columns]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"page {page}, line {number}"
        if nested_deeper_than(raw):
            return PageError(f"{where}: nested deeper than {MAX_JSON_DEPTH}")
        try:
            record = json.loads(raw)
        except RecursionError:  # pragma: no cover: nested_deeper_than stops such a line first
            return PageError(f"{where}: nested deeper than {MAX_JSON_DEPTH}")
        except ValueError as exc:
            # the decoder's own words ("unterminated string", "expecting ',' delimiter"), never its excerpt
            reason = exc.msg.split(" starting at")[0].lower() if isinstance(exc, json.JSONDecodeError) \
                else "not UTF-8 text"
            return PageError(f"{where}: not valid JSON ({reason})")
        if not isinstance(record, dict):
            return PageError(f"{where}: not a JSON object")
        problem = check_columns(list(record), declared)
        if problem:
            return SchemaChange(f"{where}: {problem}")
        ref = _quote_record_id(record.get(SORT_KEY))
        for col in columns:
            if not _fits(col.type, record.get(col.name)):
                return PageError(f"{where}{ref}: column {col.name} holds a value that is not {_TYPE_WORDS[col.type]}")
    # Arrow refused the page and no line looks wrong to Python: ask Arrow line by line.
    schema = _json_schema(columns)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            try:
                _read_json(raw + b"\n", schema)
            except pa.ArrowInvalid:
                return PageError(f"page {page}, line {number}: a value does not fit its declared column type")
    return PageError(f"page {page}: the page could not be read as the declared columns")


# --------------------------------------------------------------------------
# The HTTP client
# --------------------------------------------------------------------------


# The client's failures under the names this module's callers and tests know.
_Transient = Transient
_Refused = Refused


@dataclass(frozen=True)
class Page:
    """One complete page as received: its number, bytes, what comes next and the feed's size the source declares."""

    number: int
    data: bytes
    next_params: dict[str, str] | None
    attempts: int
    declared_rows: int | None = None  # X-Total-Count: the records the source says the feed holds


class SourceClient:
    """A source system through the pipeline's HTTP client: cursor pagination and the checks of a complete page."""

    def __init__(
        self,
        endpoint: SourceEndpoint,
        session: requests.Session | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        # shown_as: a source's address is no secret; a failure may name it, and where a redirect pointed
        self.http = HttpClient(token=endpoint.token, timeout=endpoint.timeout, policy=endpoint.policy,
                               session=session, sleep=sleep, log=log, headers={"Accept": "application/x-ndjson"},
                               shown_as=endpoint.base_url,
                               max_bytes=endpoint.page_bytes, deadline=endpoint.page_deadline)
        self.session = self.http.session

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    def __enter__(self) -> SourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def retry_causes(self) -> Counter[str]:
        """Retries made so far, by cause (``HTTP 503``, ``truncated page``, ...)."""
        return self.http.retry_causes

    @property
    def retries(self) -> int:
        """Retries made so far, over every page."""
        return self.http.retries

    def pages(self, system: str, category: str, as_of: dt.date, *, label: str = "") -> Iterator[Page]:
        """Every page of one feed, in order; each retried on its own as needed.

        Paging is bounded: a cursor seen before (the source would be followed round in a
        circle), more pages than the feed's declared size needs, or more than
        ``max_pages``, end it with a :class:`PageError` instead of a loop that never ends.
        """
        ep = self.endpoint
        base = {"category": category, "as_of": as_of.isoformat(), "limit": str(ep.page_size)}
        url = f"{ep.base_url.rstrip('/')}/v1/systems/{system}/records"
        params: dict[str, str] | None = base
        number = 0
        seen: set[str] = set()
        while params is not None:
            number += 1
            page = self.fetch(url, params, number=number, label=label or f"{system}.{category}")
            yield page
            if page.next_params is None:
                return
            cursor = page.next_params["cursor"]
            if cursor in seen or cursor == params.get("cursor"):
                raise PageError(f"page {number}: the source names a cursor it gave before as the next page:"
                                " following it would go round in a circle")
            seen.add(cursor)
            limit = ep.max_pages
            if page.declared_rows is not None:
                limit = min(limit, -(-page.declared_rows // ep.page_size) + 1)
            if number >= limit:
                why = (f"its declared {page.declared_rows:,} records need" if page.declared_rows is not None
                       else f"max_pages ({ep.max_pages}) allows")
                raise PageError(f"page {number}: the source names yet another page, more than {why}")
            params = base | page.next_params

    def fetch(self, url: str, params: dict[str, str], *, number: int, label: str) -> Page:
        """One page, retried on transient failures; raises Refused, or the last Transient once retries run out."""
        before = self.http.retries
        page = self.http.request("GET", url, what=f"{label} page {number}", params=params,
                                 check=lambda answer: _complete_page(answer, number))
        # a retry of this page is one more attempt at it
        return Page(number=number, data=page.data, next_params=page.next_params,
                    attempts=self.http.retries - before + 1, declared_rows=page.declared_rows)


def _complete_page(answer: Answer, number: int) -> Page:
    """A 200 answer as a page, if it is a complete NDJSON page; Transient or Refused (with the status) otherwise."""
    data, headers, status = answer.content, answer.headers, answer.status
    not_ndjson = _not_ndjson(headers.get("Content-Type"), data)
    if not_ndjson:
        raise Refused(not_ndjson, status=status)
    if data and not data.endswith(b"\n"):
        # Every NDJSON line ends in a newline: a page without one was cut in transit.
        raise Transient("page cut off mid-line (truncated)", kind="truncated page", status=status)
    expected = headers.get("X-Page-Records")
    if expected is not None and expected.isdigit() and int(expected) != data.count(b"\n"):
        lines = data.count(b"\n")
        raise Transient(f"page holds {lines} lines, X-Page-Records says {expected}", kind="short page", status=status)
    total = (headers.get("X-Total-Count") or "").strip()
    return Page(number=number, data=data, next_params=next_request(headers), attempts=1,
                declared_rows=int(total) if total.isdigit() else None)


# What an NDJSON page may be labelled; a JSON document or an HTML page is not a page of records.
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
                           "application/json-lines", "text/plain", "application/octet-stream", ""})


def _not_ndjson(content_type: str | None, data: bytes) -> str | None:
    """Why a 200 answer is not an NDJSON page, in words (None: it may be one)."""
    kind = quote((content_type or "").split(";")[0].strip().lower(), NAME_QUOTE)
    head = data.lstrip()[:64].lower()
    if "html" in kind or head.startswith((b"<!doctype html", b"<html")):
        return f"the source answered an HTML page (content type {kind or 'not given'}), not NDJSON records"
    if kind == "application/json":
        return "the source answered one JSON document (content type application/json), not NDJSON records"
    if kind not in _NDJSON_TYPES:
        return f"the source answered content type {kind}, not NDJSON records (application/x-ndjson)"
    return None


class _Ahead:
    """Pages fetched one ahead, in a thread: the source prepares page n + 1 while page n is parsed.

    The cursor of the next page is in the current page's headers, so fetching can
    run ahead of parsing; at most ``depth`` pages wait, which bounds the memory.
    An error of the fetching thread is raised where the page would have been.
    """

    _DONE = object()

    def __init__(self, pages: Iterator[Page], *, depth: int = 1, name: str = "pages") -> None:
        import queue
        import threading

        self._pages = pages
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import queue

        item: Any = self._DONE
        try:
            for page in self._pages:
                while not self._stop.is_set():
                    try:
                        self._queue.put(page, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001: handed to the reading thread
            item = exc
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Page]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop fetching (a page in flight is finished and dropped) and wait for the thread."""
        self._stop.set()
        self._thread.join()
        close = getattr(self._pages, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------
# The landing file
# --------------------------------------------------------------------------


class _LandingWriter:
    """Parquet on a temp file in the landing directory; renamed onto the landing path only by ``commit``."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        import pyarrow.parquet as pq

        self.path, self.schema, self.row_group_rows = path, schema, row_group_rows
        private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append rows; they reach the file a row group at a time."""
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=self.row_group_rows)
        self._buffer, self._buffered = [], 0

    def commit(self, *, sort_by: str | None = None, spill: Path | None = None, memory_limit: str | None = None) -> None:
        """Close, sort if asked (the fallback for a source that sent unsorted rows), fsync, rename."""
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        if sort_by is not None:
            # a hidden folder beside the landing file: remove_temporaries clears one a killed try left
            self._resort(sort_by, spill=spill or self.path.parent / f".{self.path.name}.{os.getpid()}.sort.tmp",
                         memory_limit=memory_limit or "256MiB")
        fsync_path(self.tmp)
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)

    def _resort(self, key: str, *, spill: Path, memory_limit: str) -> None:
        """Sort the written file by ``key`` (ties in the order received) with DuckDB, spilling beyond
        ``memory_limit``: the feed is never in memory whole, a batch of rows at a time is."""
        import shutil

        import pyarrow.parquet as pq

        from osms.core.files import create_private
        from osms.core.spill import spilling_duckdb

        fd, sorted_tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        sorted_path = create_private(Path(sorted_tmp))
        try:
            with spilling_duckdb(spill, memory_limit) as con:
                con.execute("SET threads = 1")  # one core for a fallback: the other task slot keeps its core
                query = (f'SELECT * EXCLUDE (file_row_number) FROM read_parquet(?, file_row_number = true)'
                         f' ORDER BY "{key}" ASC NULLS LAST, file_row_number')
                reader = con.sql(query, params=[str(self.tmp)]).to_arrow_reader(self.row_group_rows)
                with pq.ParquetWriter(sorted_path, self.schema, compression="zstd") as writer:
                    for batch in reader:
                        # DuckDB gives timestamps in microseconds: cast back to the landing schema
                        writer.write_table(pa.Table.from_batches([batch]).cast(self.schema),
                                           row_group_size=self.row_group_rows)
            os.replace(sorted_path, self.tmp)
        finally:
            Path(sorted_path).unlink(missing_ok=True)
            shutil.rmtree(spill, ignore_errors=True)

    def abort(self) -> None:
        """Drop the temp file; the landing file, if any, stays as it was."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001: we are already failing; the temp file goes anyway
                pass
            self._writer = None
        self._buffer = []
        self.tmp.unlink(missing_ok=True)


# Rows whose record_id holds a run of 12 digits: the candidates for an IIN (RE2 has no lookbehind).
_TWELVE_DIGITS = r"(^|[^0-9])[0-9]{12}([^0-9]|$)"


def withhold_iin_record_ids(table: pa.Table, *, page: int) -> tuple[pa.Table, int]:
    """``record_id`` values that are, or hold, an IIN replaced by ``withheld-iin-p<page>-r<row>``; how many.

    The replacement is made before the landing file is written, so an IIN a source put in
    its record ids reaches no file, message, log or page of the UI as a record id; the
    common suite's ``record_id_not_iin`` quarantines the row (the body's feedback names
    the page and row of its answer for D).
    """
    import numpy as np

    if SORT_KEY not in table.column_names or table.num_rows == 0:
        return table, 0
    ids = table.column(SORT_KEY).combine_chunks()
    candidates = pc.fill_null(pc.match_substring_regex(ids, _TWELVE_DIGITS), False)
    rows = np.flatnonzero(candidates.to_numpy(zero_copy_only=False))
    if not len(rows):
        return table, 0
    values = ids.take(pa.array(rows)).to_pylist()
    hit = np.array([mask_iins(v) != v for v in values], dtype=bool)
    if not hit.any():
        return table, 0
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[rows[hit]] = True
    replacement = pa.array([f"{WITHHELD_PREFIX}p{page}-r{r + 1}" for r in rows[hit].tolist()], pa.string())
    replaced = pc.replace_with_mask(ids, pa.array(mask), replacement)
    return table.set_column(table.schema.get_field_index(SORT_KEY), SORT_KEY, replaced), int(hit.sum())


def _with_lineage(table: pa.Table, body: str, system: str, category: str, as_of: dt.date) -> pa.Table:
    n = table.num_rows
    for f, value in zip(LINEAGE_COLUMNS, (body, system, category, as_of), strict=True):
        table = table.append_column(f, pa.repeat(pa.scalar(value, f.type), n))
    return table


class _SortCheck:
    """Whether record_id never decreases, page after page (vectorised within a page)."""

    def __init__(self) -> None:
        self.last: str | None = None
        self.sorted = True

    def see(self, ids: pa.ChunkedArray | pa.Array) -> None:
        if not self.sorted:
            return
        ids = ids.drop_null() if ids.null_count else ids
        if len(ids) == 0:
            return
        if self.last is not None and ids[0].as_py() < self.last:
            self.sorted = False
        elif len(ids) > 1 and not pc.all(pc.less_equal(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py():
            self.sorted = False
        self.last = ids[len(ids) - 1].as_py()


# --------------------------------------------------------------------------
# The extract
# --------------------------------------------------------------------------


def extract_feed(
    endpoint: SourceEndpoint,
    *,
    body: str,
    system: str,
    category: str,
    as_of: dt.date,
    landing_path: Path,
    columns: Sequence[Column] | None = None,
) -> ExtractResult:
    """Stream every page of one feed into ``landing_path`` (Parquet, zstd, typed, lineage columns), atomically."""
    if columns is None:
        from osms.core.registry import default_registry

        columns = default_registry().edition_on(as_of).category(category).record_columns
    columns = tuple(columns)
    landing_path = Path(landing_path)
    label = f"{body}.{system}.{category} {as_of.isoformat()}"

    def failed(cause: str, **kw: Any) -> FeedExtractError:
        return FeedExtractError(body=body, system=system, category=category, as_of=as_of, cause=cause, **kw)

    started = time.perf_counter()
    pages = bytes_received = withheld = 0
    sort_check = _SortCheck()
    writer = _LandingWriter(landing_path, landing_schema(columns))
    client = SourceClient(endpoint)
    ahead = _Ahead(client.pages(system, category, as_of, label=label), name=f"extract {label}")
    number = 0
    try:
        for page in ahead:
            number = page.number
            table = parse_page(page.data, columns, page=page.number)
            table, replaced = withhold_iin_record_ids(table, page=page.number)
            withheld += replaced
            if page.declared_rows is not None and writer.rows + table.num_rows > page.declared_rows:
                raise PageError(f"page {page.number}: the source sends more records than the"
                                f" {page.declared_rows:,} it declares for the feed")
            if SORT_KEY in table.column_names:
                sort_check.see(table.column(SORT_KEY))
            writer.write(_with_lineage(table, body, system, category, as_of))
            pages += 1
            bytes_received += len(page.data)
            log.debug("%s page %d: %d rows, %d bytes", label, page.number, table.num_rows, len(page.data))
        if withheld:
            log.warning("%s: %d record id(s) had the form of an IIN: replaced by %s<page>-r<row> (the suite's"
                        " record_id_not_iin quarantines those rows)", label, withheld, WITHHELD_PREFIX)
        if not sort_check.sorted:
            log.warning("%s: the source did not send rows sorted by %s; sorting the landing file (DuckDB, spilling"
                        " beyond the task's share)", label, SORT_KEY)
        from osms.core.budget import task_budget

        writer.commit(sort_by=None if sort_check.sorted else SORT_KEY, memory_limit=task_budget().duckdb_limit)
    except BaseException as exc:
        writer.abort()
        number = number + 1 if isinstance(exc, Transient | Refused) else number
        if isinstance(exc, Transient):
            attempts = endpoint.max_retries + 1
            raise failed(f"page {number}: gave up after {attempts} attempts; last: {exc.cause}",
                         status=exc.status, attempts=attempts, page=number) from None
        if isinstance(exc, TooLarge):
            raise failed(f"page {number}: {exc.cause}; the connection's extra max_page_bytes sets the limit"
                         " (not retried)", status=exc.status, page=number) from None
        if isinstance(exc, TooSlow):
            raise failed(f"page {number}: {exc.cause}; the connection's extra page_deadline sets it (not retried)",
                         status=exc.status, page=number) from None
        if isinstance(exc, Refused):
            raise failed(f"page {number}: {exc.cause} (not retried)", status=exc.status, page=number) from None
        if isinstance(exc, PageError):
            raise failed(str(exc), page=number, schema_change=isinstance(exc, SchemaChange)) from None
        raise
    finally:
        ahead.close()
        client.close()
    seconds = time.perf_counter() - started
    result = ExtractResult(
        path=landing_path,
        rows=writer.rows,
        pages=pages,
        bytes_received=bytes_received,
        seconds=seconds,
        retries=client.retries,
        retry_causes=dict(client.retry_causes),
        resorted=not sort_check.sorted,
        iin_record_ids=withheld,
    )
    log.info("%s: %d rows in %d pages, %.1f MiB in %.2f s (%.0f rows/s), %d retries%s", label, result.rows, pages,
             bytes_received / 2**20, seconds, result.rows / seconds if seconds else 0.0, result.retries,
             f" {dict(client.retry_causes)}" if client.retries else "")
    return result
