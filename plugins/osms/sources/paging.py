"""A source system's records, page after page: its endpoint, cursor paging and the checks of a complete page.

    GET {base_url}/v1/systems/{system}/records?category=&as_of=&limit=&cursor=
    Authorization: Bearer <token of the system>

Pages are NDJSON and follow ``X-Next-Cursor`` until it is absent. Requests go through the
pipeline's one HTTP client (:mod:`osms.sources.http_client`) and its retry policy. What is
source-specific is here: a page cut off in the middle of a line or shorter than ``X-Page-Records``
is retried like a 503; an answer that is not NDJSON is not. Paging is bounded (a cursor seen
before, more pages than the declared size needs, more than ``max_pages``), a page by
``max_page_bytes`` and ``page_deadline``; a redirect is not followed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from osms.core.budget import Budget
from osms.core.redact import quote
from osms.sources.connections import HTTP_EXTRAS, HttpEndpoint, read_connection
from osms.sources.http_client import Answer, HttpClient, Refused, Transient
from osms.sources.parse import NAME_QUOTE, PageError

__all__ = ["Page", "SourceClient", "SourceEndpoint", "endpoint_from_connection", "next_request"]

# a page's requests and retries are logged as the extract's, as they always were
log = logging.getLogger("osms.sources.extract")

# The deadline of one page: a national page of 50 000 records arrives in a second or two.
PAGE_DEADLINE = 300.0


@dataclass(frozen=True)
class SourceEndpoint(HttpEndpoint):
    """What an Airflow connection ``osms_source_<system>`` holds: an :class:`HttpEndpoint` and its paging bounds."""

    # Records asked for a page; a connection's extra ``page_size`` sets it per source (the mocks
    # allow 50 000: a national feed of 6 M records then takes 120 requests instead of 600).
    page_size: int = 10_000
    # A feed of more pages than this is refused rather than followed: at 50 000 records a page,
    # 100 000 pages is 250 times the largest national feed.
    max_pages: int = 100_000
    # The largest page read (bytes); None: the task budget's (osms.core.budget.Budget.max_page_bytes,
    # 181 MiB at 2 GiB, where a national page of 50 000 records is about 15 MiB).
    max_page_bytes: int | None = None
    # Seconds a page may take from request to last byte: a source dripping a page is not waited on
    # for the task's hour (each socket read has ``timeout`` besides).
    page_deadline: float = PAGE_DEADLINE

    def page_bytes(self, budget: Budget) -> int:
        """The largest page read: the extra ``max_page_bytes``, else what the task's ``budget`` allows."""
        return self.max_page_bytes if self.max_page_bytes is not None else budget.max_page_bytes


def _size(value: Any) -> int:
    """A size extra: bytes, or with a unit (``64MiB``)."""
    from osms.core.budget import parse_bytes

    return value if isinstance(value, int) and not isinstance(value, bool) else parse_bytes(str(value))


# Connection extras that tune an endpoint, with their types.
CONNECTION_EXTRAS = {"page_size": int, **HTTP_EXTRAS, "max_pages": int, "max_page_bytes": _size,
                     "page_deadline": float}


def endpoint_from_connection(conn_id: str) -> SourceEndpoint:
    """Read the Airflow connection ``conn_id`` (e.g. from ``AIRFLOW_CONN_<ID>``) as a SourceEndpoint."""
    conn = read_connection(conn_id, token_of="the source's", extras=CONNECTION_EXTRAS)
    return SourceEndpoint(base_url=conn.url, token=conn.token or "", **conn.settings)


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
        budget: Budget | None = None,
    ) -> None:
        self.endpoint = endpoint
        # shown_as: a source's address is no secret; a failure may name it, and where a redirect pointed
        self.http = HttpClient(token=endpoint.token, timeout=endpoint.timeout, policy=endpoint.policy,
                               session=session, sleep=sleep, log=log, headers={"Accept": "application/x-ndjson"},
                               shown_as=endpoint.base_url,
                               max_bytes=endpoint.page_bytes(budget or Budget()), deadline=endpoint.page_deadline)
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
