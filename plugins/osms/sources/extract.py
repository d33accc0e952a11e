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

The parts live by job: the endpoint and paging in :mod:`osms.sources.paging`, a page's parsing and
checks in :mod:`osms.sources.parse`, the landing file in :mod:`osms.sources.landing`; this module
runs them for one feed and keeps every name it always had.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from osms.sources.http_client import (
    Refused,
    TooLarge,
    TooSlow,
    Transient,
    backoff_seconds,
    parse_retry_after,
)
from osms.sources.landing import (
    LINEAGE_COLUMNS,
    ROW_GROUP_ROWS,
    LandingWriter,
    SortCheck,
    landing_schema,
    with_lineage,
)
from osms.sources.paging import (
    CONNECTION_EXTRAS,
    PAGE_DEADLINE,
    Page,
    SourceClient,
    SourceEndpoint,
    _Ahead,
    _complete_page,
    _not_ndjson,
    endpoint_from_connection,
    next_request,
)
from osms.sources.parse import (
    MAX_JSON_DEPTH,
    NAME_QUOTE,
    NAMES_LISTED,
    SORT_KEY,
    WITHHELD_PREFIX,
    PageError,
    SchemaChange,
    check_columns,
    nested_deeper_than,
    parse_page,
    withhold_iin_record_ids,
)

if TYPE_CHECKING:
    from osms.core.registry import Column
    from osms.core.run import Run

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

# Names this module has always offered (its callers and tests use them), now defined by job elsewhere.
_REEXPORTED = (CONNECTION_EXTRAS, PAGE_DEADLINE, Page, ROW_GROUP_ROWS, NAME_QUOTE, NAMES_LISTED, nested_deeper_than,
               _complete_page, _not_ndjson, requests)
# The client's failures under the names this module's callers and tests know.
_Transient = Transient
_Refused = Refused

log = logging.getLogger(__name__)


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
# The extract
# --------------------------------------------------------------------------


@dataclass
class _Progress:
    """What the extract of one feed has done so far: counts only."""

    pages: int = 0
    bytes_received: int = 0
    withheld: int = 0  # record ids in the form of an IIN, replaced
    number: int = 0  # the page last read
    sort_check: SortCheck = field(default_factory=SortCheck)


def extract_feed(
    endpoint: SourceEndpoint,
    run: Run,
    *,
    body: str,
    system: str,
    category: str,
    landing_path: Path | None = None,
    columns: Sequence[Column] | None = None,
) -> ExtractResult:
    """Stream every page of one feed of ``run``'s day into its landing file (Parquet, zstd, typed), atomically.

    The landing file is the run's (``landing/D/<body>/<system>/<category>.parquet``) unless ``landing_path``
    names another; the columns are the run's edition's for the category unless ``columns`` are given.
    """
    as_of = run.day
    columns = tuple(columns if columns is not None else run.edition.category(category).record_columns)
    landing_path = Path(landing_path) if landing_path is not None else run.paths.landing(as_of, body, system, category)
    label = f"{body}.{system}.{category} {as_of.isoformat()}"
    started = time.perf_counter()
    progress = _Progress()
    writer = LandingWriter(landing_path, landing_schema(columns))
    client = SourceClient(endpoint, budget=run.budget)
    ahead = _Ahead(client.pages(system, category, as_of, label=label), name=f"extract {label}")
    try:
        for page in ahead:
            progress.number = page.number
            _land(page, columns, writer, progress, lineage=(body, system, category, as_of), label=label)
        _commit(writer, progress, label, memory_limit=run.budget.duckdb_limit)
    except BaseException as exc:
        writer.abort()
        error = _feed_error(exc, progress.number, endpoint)
        if error is None:
            raise
        raise FeedExtractError(body=body, system=system, category=category, as_of=as_of, **error) from None
    finally:
        ahead.close()
        client.close()
    result = ExtractResult(
        path=landing_path,
        rows=writer.rows,
        pages=progress.pages,
        bytes_received=progress.bytes_received,
        seconds=time.perf_counter() - started,
        retries=client.retries,
        retry_causes=dict(client.retry_causes),
        resorted=not progress.sort_check.sorted,
        iin_record_ids=progress.withheld,
    )
    _log_result(label, result)
    return result


def _land(page: Page, columns: Sequence[Column], writer: LandingWriter, progress: _Progress, *,
          lineage: tuple[str, str, str, dt.date], label: str) -> None:
    """One page parsed, checked against the feed's declared size, given its lineage and written."""
    table = parse_page(page.data, columns, page=page.number)
    table, replaced = withhold_iin_record_ids(table, page=page.number)
    progress.withheld += replaced
    if page.declared_rows is not None and writer.rows + table.num_rows > page.declared_rows:
        raise PageError(f"page {page.number}: the source sends more records than the"
                        f" {page.declared_rows:,} it declares for the feed")
    if SORT_KEY in table.column_names:
        progress.sort_check.see(table.column(SORT_KEY))
    writer.write(with_lineage(table, *lineage))
    progress.pages += 1
    progress.bytes_received += len(page.data)
    log.debug("%s page %d: %d rows, %d bytes", label, page.number, table.num_rows, len(page.data))


def _commit(writer: LandingWriter, progress: _Progress, label: str, *, memory_limit: str) -> None:
    """Rename the complete feed into place, sorted first if the source sent it unsorted."""
    if progress.withheld:
        log.warning("%s: %d record id(s) had the form of an IIN: replaced by %s<page>-r<row> (the suite's"
                    " record_id_not_iin quarantines those rows)", label, progress.withheld, WITHHELD_PREFIX)
    if not progress.sort_check.sorted:
        log.warning("%s: the source did not send rows sorted by %s; sorting the landing file (DuckDB, spilling"
                    " beyond the task's share)", label, SORT_KEY)
    writer.commit(sort_by=None if progress.sort_check.sorted else SORT_KEY, memory_limit=memory_limit)


def _feed_error(exc: BaseException, number: int, endpoint: SourceEndpoint) -> dict[str, Any] | None:
    """A failure of the extract as a FeedExtractError's fields (cause, status, page...); None: not the feed's own."""
    number = number + 1 if isinstance(exc, Transient | Refused) else number  # the page being fetched
    if isinstance(exc, Transient):
        attempts = endpoint.max_retries + 1
        return {"cause": f"page {number}: gave up after {attempts} attempts; last: {exc.cause}",
                "status": exc.status, "attempts": attempts, "page": number}
    if isinstance(exc, TooLarge):
        return {"cause": f"page {number}: {exc.cause}; the connection's extra max_page_bytes sets the limit"
                         " (not retried)", "status": exc.status, "page": number}
    if isinstance(exc, TooSlow):
        return {"cause": f"page {number}: {exc.cause}; the connection's extra page_deadline sets it (not retried)",
                "status": exc.status, "page": number}
    if isinstance(exc, Refused):
        return {"cause": f"page {number}: {exc.cause} (not retried)", "status": exc.status, "page": number}
    if isinstance(exc, PageError):
        return {"cause": str(exc), "page": number, "schema_change": isinstance(exc, SchemaChange)}
    return None


def _log_result(label: str, result: ExtractResult) -> None:
    """One line of counts and timings (no record content)."""
    seconds = result.seconds
    log.info("%s: %d rows in %d pages, %.1f MiB in %.2f s (%.0f rows/s), %d retries%s", label, result.rows,
             result.pages, result.bytes_received / 2**20, seconds, result.rows / seconds if seconds else 0.0,
             result.retries, f" {dict(result.retry_causes)}" if result.retries else "")
