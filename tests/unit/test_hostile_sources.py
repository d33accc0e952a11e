"""A source (or receiver, or webhook) that is hostile or broken: bounded bytes, time and depth, no redirect,
its text folded and bounded, a record id in the form of an IIN withheld, plain http only on loopback.

HTTP is answered by a requests transport adapter scripted per request; nothing leaves the process.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from osms.core.budget import Budget
from osms.core.run import Run
from osms.core.redact import MASK
from osms.orchestration.failures import is_permanent
from osms.sources import extract
from osms.sources.connections import ConnectionRefused, HttpConnection, connection_url, read_connection
from osms.sources.extract import (
    MAX_JSON_DEPTH,
    FeedExtractError,
    PageError,
    SourceClient,
    SourceEndpoint,
    check_columns,
    extract_feed,
    nested_deeper_than,
    parse_page,
    withhold_iin_record_ids,
)
from osms.sources.http_client import ERROR_BODY_BYTES, HttpClient, Refused, RetryPolicy, TooLarge, TooSlow

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 3, 1)
IIN = "791028302728"


class _Body(io.RawIOBase):
    """A response body that counts what was read and may drip (``delay`` seconds before each piece)."""

    def __init__(self, data: bytes, *, piece: int = 1 << 20, delay: float = 0.0) -> None:
        self.data, self.piece, self.delay, self.read_bytes = data, piece, delay, 0

    def read1(self, n: int = -1) -> bytes:
        if self.delay:
            time.sleep(self.delay)
        out = self.data[self.read_bytes: self.read_bytes + min(n, self.piece)]
        self.read_bytes += len(out)
        return out

    def readable(self) -> bool:
        return True


class Scripted(BaseAdapter):
    """Answers each request with the next (status, body, headers); records what was sent and how."""

    def __init__(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.seen: list[tuple[requests.PreparedRequest, dict[str, Any]]] = []
        self.bodies: list[_Body] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append((request, kwargs))
        status, body, headers = self.answers.pop(0)
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict({"Content-Type": "application/x-ndjson", **headers})
        raw = body if isinstance(body, _Body) else _Body(body if isinstance(body, bytes) else json.dumps(body).encode())
        self.bodies.append(raw)
        response.raw = raw
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass

    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount("http://", self)
        session.mount("https://", self)
        return session


def _http(adapter: Scripted, **kw: Any) -> HttpClient:
    return HttpClient(token="tok", timeout=5, policy=RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.01),
                      session=adapter.session(), sleep=lambda _: None, shown_as="http://src.test", **kw)


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_fails_naming_where_it_pointed(status: int) -> None:
    adapter = Scripted((status, b"", {"Location": "http://elsewhere.test:5555/steal?token=x"}))
    with pytest.raises(Refused) as refused:
        _http(adapter).request("POST", "http://src.test/v1/x", what="x", json={"a": 1})
    assert len(adapter.seen) == 1 and adapter.seen[0][1].get("allow_redirects") is not True
    assert refused.value.status == status
    assert f"HTTP {status}" in refused.value.cause and "redirect to http://elsewhere.test:5555" in refused.value.cause
    assert "not followed" in refused.value.cause and "steal" not in refused.value.cause


def test_a_redirect_names_no_location_for_a_client_whose_url_is_secret() -> None:
    adapter = Scripted((302, b"", {"Location": "https://hooks.chat.test/secret-path"}))
    client = HttpClient(token=None, timeout=5, policy=RetryPolicy(attempts=1), session=adapter.session())
    with pytest.raises(Refused) as refused:
        client.request("POST", "https://hooks.chat.test/T0/B1", what="alert", json={})
    assert "hooks.chat.test" not in refused.value.cause and "not followed" in refused.value.cause


def test_a_redirect_from_the_receiver_is_permanent() -> None:
    from osms.package.deliver import DeliveryError

    assert is_permanent(DeliveryError("OSMS-2025-06-01", "commit", "HTTP 307 (a redirect ...)", status=307))
    assert not is_permanent(DeliveryError("OSMS-2025-06-01", "commit", "HTTP 503", status=503))


# ---------------------------------------------------------------- bytes and time


def test_an_answer_past_its_byte_bound_is_refused_and_reading_stops() -> None:
    body = _Body(b"x" * (10 << 20), piece=64 << 10)
    adapter = Scripted((200, body, {}))
    with pytest.raises(TooLarge) as large:
        _http(adapter).request("GET", "http://src.test/p", what="p", max_bytes=1 << 20)
    assert "larger than the limit of 1 MiB (1,048,576 bytes)" in large.value.cause
    assert body.read_bytes <= (1 << 20) + (64 << 10)  # stopped at the bound, not at the end
    assert len(adapter.seen) == 1  # not retried


def test_a_declared_length_past_the_bound_is_refused_before_reading() -> None:
    body = _Body(b"x" * 100)
    adapter = Scripted((200, body, {"Content-Length": str(600 << 20)}))
    with pytest.raises(TooLarge, match="it declares 600 MiB"):
        _http(adapter).request("GET", "http://src.test/p", what="p", max_bytes=1 << 20)
    assert body.read_bytes == 0


def test_an_error_body_is_read_only_as_far_as_its_bound() -> None:
    body = _Body(b'{"error": "x", "message": "' + b"y" * (50 << 20) + b'"}', piece=32 << 10)
    adapter = Scripted((400, body, {"Content-Type": "application/json"}))
    with pytest.raises(Refused) as refused:
        _http(adapter).request("GET", "http://src.test/p", what="p")
    assert refused.value.status == 400 and body.read_bytes <= ERROR_BODY_BYTES + (32 << 10)


def test_a_dripped_answer_fails_at_its_deadline_not_at_the_socket_timeout() -> None:
    body = _Body(b"{}\n" * 1000, piece=3, delay=0.05)  # every read returns a little: no socket timeout ever
    adapter = Scripted((200, body, {}))
    started = time.monotonic()
    with pytest.raises(TooSlow, match="still arriving after 0.5 s"):
        _http(adapter).request("GET", "http://src.test/p", what="p", deadline=0.5)
    assert time.monotonic() - started < 2.0 and len(adapter.seen) == 1


def test_a_source_page_past_max_page_bytes_fails_the_feed_at_once_naming_the_limit(tmp_path: Path) -> None:
    line = json.dumps({"record_id": "R1", "last_name": "A" * (3 << 20)}).encode() + b"\n"
    adapter = Scripted((200, line, {}))
    endpoint = SourceEndpoint("http://127.0.0.1:9", "tok", max_page_bytes=1 << 20, backoff_base=0.001)
    client = SourceClient(endpoint, session=adapter.session())
    with pytest.raises(TooLarge):
        list(client.pages("payments", "pregnant", DAY))
    assert len(adapter.seen) == 1


def test_the_page_bound_and_deadline_are_connection_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": 1, "password": "t",
            "extra": {"max_page_bytes": "64MiB", "page_deadline": 20}}
    monkeypatch.setenv("AIRFLOW_CONN_OSMS_SOURCE_X", json.dumps(conn))
    ep = extract.endpoint_from_connection("osms_source_x")
    assert ep.page_bytes(Budget()) == 64 << 20 and ep.page_deadline == 20.0
    # without the extra: what the run's budget allows (181 MiB at 2 GiB)
    assert SourceEndpoint("http://x", "t").page_bytes(Budget(2 * 2**30)) == (2048 - 600) * 2**20 // 8


# ---------------------------------------------------------------- depth


def _columns(category: str = "pregnant") -> tuple:
    from osms.core.registry import default_registry

    return default_registry().edition_on(DAY).category(category).record_columns


def test_depth_is_judged_without_parsing_and_brackets_in_strings_do_not_count() -> None:
    assert nested_deeper_than(b"[" * 33 + b"]" * 33) and not nested_deeper_than(b"[" * 32 + b"]" * 32)
    assert not nested_deeper_than(json.dumps({"a": "[[[[{{{{" * 100}).encode())
    assert not nested_deeper_than(json.dumps({"a": '\\"[[[[' * 100}).encode())
    started = time.monotonic()
    assert nested_deeper_than(b'{"a":' + b"[" * 1_000_000)  # never closed: stops at the 33rd level
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("line_no", [1, 3])
def test_a_line_nested_past_the_bound_is_named_not_a_recursion_error(line_no: int) -> None:
    good = json.dumps({c.name: None for c in _columns()}).encode()
    deep = b'{"record_id": "R", "last_name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lines = [good] * 3
    lines[line_no - 1] = deep
    with pytest.raises(PageError) as err:
        parse_page(b"\n".join(lines) + b"\n", _columns(), page=4)
    assert str(err.value) == f"page 4, line {line_no}: nested deeper than {MAX_JSON_DEPTH}"


# ---------------------------------------------------------------- a source's text, quoted


def test_a_sources_column_names_are_folded_bounded_and_listed_few() -> None:
    found = ["record_id", "x\ny" * 100_000, *[f"c{i}" for i in range(30)]]
    problem = check_columns(found, ["record_id"])
    assert "\n" not in problem and len(problem) < 800 and problem.endswith("and 21 more")
    assert "x y" in problem and "…" in problem


def test_a_content_type_is_quoted_folded_and_bounded() -> None:
    reason = extract._not_ndjson("text/x-" + "evil\r\n" * 10_000, b"a")
    assert "\n" not in reason and len(reason) < 200


def test_a_record_id_holding_an_iin_is_never_quoted_in_a_page_error() -> None:
    row = {c.name: None for c in _columns()} | {"record_id": IIN, "pregnancy_weeks": "many"}
    with pytest.raises(PageError) as err:
        parse_page(json.dumps(row).encode() + b"\n", _columns(), page=1)
    assert IIN not in str(err.value) and "record_id" not in str(err.value).split(":")[0]
    row["record_id"] = "REC-0001"
    with pytest.raises(PageError, match=r"\(record_id REC-0001\)"):
        parse_page(json.dumps(row).encode() + b"\n", _columns(), page=1)


# ---------------------------------------------------------------- record ids in the form of an IIN


def test_record_ids_in_the_form_of_an_iin_are_withheld_with_page_and_row() -> None:
    table = pa.table({"record_id": ["R-1", IIN, f"SRC-{IIN}", "791028302729", None, "1234567890123"]})
    out, replaced = withhold_iin_record_ids(table, page=7)
    assert replaced == 2
    assert out.column("record_id").to_pylist() == ["R-1", "withheld-iin-p7-r2", "withheld-iin-p7-r3",
                                                   "791028302729", None, "1234567890123"]


def _page_of(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _record(k: int, **changes: Any) -> dict[str, Any]:
    from osms.core import iin

    row = {"record_id": f"R{k:04d}", "iin": iin.generate(dt.date(1990, 1, 1), "F", k), "last_name": "Ахметова",
           "first_name": "Айгерим", "patronymic": None, "birth_date": "1990-01-01", "sex": "F",
           "period_start": "2024-01-01", "period_end": None, "updated_at": "2024-02-28T12:00:00Z",
           "pregnancy_weeks": 20, "expected_delivery_date": "2024-07-01"}
    return row | changes


def test_an_extract_lands_no_iin_as_a_record_id_and_logs_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = [_record(k) for k in range(5)]
    records[2]["record_id"] = records[2]["iin"]
    adapter = Scripted((200, _page_of(records), {}))
    with caplog.at_level(logging.DEBUG):
        result = extract_feed(_source(adapter), Run.of(DAY, data_dir=tmp_path),
                              body="labour", system="payments", category="pregnant",
                              landing_path=tmp_path / "x.parquet", columns=_columns())
    ids = pq.read_table(result.path).column("record_id").to_pylist()
    assert "withheld-iin-p1-r3" in ids and records[2]["iin"] not in ids and result.iin_record_ids == 1
    assert records[2]["iin"] not in caplog.text and "1 record id(s) had the form of an IIN" in caplog.text


def _source(adapter: Scripted, **settings: Any) -> SourceEndpoint:
    endpoint = SourceEndpoint("http://127.0.0.1:9", "tok", **({"backoff_base": 0.001} | settings))
    real = SourceClient.__init__

    def init(self: SourceClient, ep: SourceEndpoint, session: Any = None, **kw: Any) -> None:
        real(self, ep, session=adapter.session(), **kw)

    SourceClient.__init__ = init  # type: ignore[method-assign]
    _restore.append(lambda: setattr(SourceClient, "__init__", real))
    return endpoint


_restore: list[Any] = []


@pytest.fixture(autouse=True)
def _restore_client() -> Any:
    yield
    while _restore:
        _restore.pop()()


def test_the_feed_error_of_a_huge_page_names_the_limit_and_is_permanent(tmp_path: Path) -> None:
    adapter = Scripted((200, _page_of([_record(0, last_name="A" * (2 << 20))]), {}))
    with pytest.raises(FeedExtractError) as err:
        extract_feed(_source(adapter, max_page_bytes=1 << 20), Run.of(DAY, data_dir=tmp_path),
                     body="labour", system="payments",
                     category="pregnant", landing_path=tmp_path / "x.parquet", columns=_columns())
    message = str(err.value)
    assert "page 1: the answer is larger than the limit of 1 MiB" in message and "max_page_bytes" in message
    assert is_permanent(err.value) and not (tmp_path / "x.parquet").exists()


def test_the_feed_error_of_a_dripped_page_names_the_deadline(tmp_path: Path) -> None:
    adapter = Scripted((200, _Body(_page_of([_record(0)]), piece=5, delay=0.05), {}))
    with pytest.raises(FeedExtractError, match="page 1: the answer was still arriving after 0.3 s.*page_deadline"):
        extract_feed(_source(adapter, page_deadline=0.3), Run.of(DAY, data_dir=tmp_path),
                     body="labour", system="payments", category="pregnant", landing_path=tmp_path / "x.parquet",
                     columns=_columns())


# ---------------------------------------------------------------- an unsorted feed


def test_an_unsorted_feed_is_sorted_by_duckdb_not_in_memory_ties_in_the_order_received(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    records = [_record(k) for k in range(3000)][::-1]  # descending
    records[10]["record_id"] = records[11]["record_id"]  # a tie: kept in the order received
    records[10]["last_name"], records[11]["last_name"] = "first", "second"
    pages = [records[i:i + 1000] for i in range(0, 3000, 1000)]
    answers = [(200, _page_of(p), {"X-Next-Cursor": f"c{i}"} if i < 2 else {}) for i, p in enumerate(pages)]
    adapter = Scripted(*answers)
    # the feed is never read back whole (what the in-memory sort did): DuckDB streams it, sorted, in batches
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("the whole feed was read into memory"))
    result = extract_feed(_source(adapter), Run.of(DAY, data_dir=tmp_path),
                          body="labour", system="payments", category="pregnant",
                          landing_path=tmp_path / "x.parquet", columns=_columns())
    monkeypatch.undo()
    landed = pq.read_table(result.path)
    ids = landed.column("record_id").to_pylist()
    assert result.resorted and len(ids) == 3000 and ids == sorted(ids)
    names = [n for n in landed.column("last_name").to_pylist() if n in ("first", "second")]
    assert names == ["first", "second"]
    # the landing file's types (Parquet keeps timestamps in ms, as every landing file does)
    assert landed.schema.names == extract.landing_schema(_columns()).names
    assert landed.cast(extract.landing_schema(_columns())).schema == extract.landing_schema(_columns())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]  # no spill folder or temp file left


# ---------------------------------------------------------------- plain http


def _conn(**fields: Any) -> Any:
    return SimpleNamespace(**({"host": "127.0.0.1", "schema": "http", "port": 8080, "conn_type": "http",
                               "password": "t", "extra_dejson": {}} | fields))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "localhost", "[::1]"])
def test_plain_http_to_loopback_is_taken_as_it_is(host: str) -> None:
    from osms.sources.connections import _from, is_loopback

    assert _from(_conn(host=host), "c", None, {}).url.startswith("http://")
    assert is_loopback(host.strip("[]")) and not is_loopback("10.0.0.1") and not is_loopback("localhost.evil.test")


def test_plain_http_to_another_host_is_refused_naming_the_connection_and_the_extra() -> None:
    from osms.sources.connections import _from

    with pytest.raises(ConnectionRefused) as refused:
        _from(_conn(host="source.gov.kz"), "osms_source_nedb", None, {})
    assert "'osms_source_nedb'" in str(refused.value) and "allow_plain_http" in str(refused.value)
    assert is_permanent(refused.value)
    with pytest.raises(ConnectionRefused):
        _from(_conn(host="http://hooks.test/x", schema=None), "hook", None, {})
    assert _from(_conn(host="source.gov.kz", schema="https"), "c", None, {}).url == "https://source.gov.kz:8080"


def test_plain_http_allowed_by_the_extra_is_warned_of_naming_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    from osms.sources.connections import _from

    with caplog.at_level(logging.WARNING, logger="osms.sources.connections"):
        conn = _from(_conn(host="mocks", extra_dejson={"allow_plain_http": True}), "osms_source_nedb", None, {})
    assert conn.url == "http://mocks:8080"
    assert "'osms_source_nedb' uses plain http to mocks" in caplog.text
