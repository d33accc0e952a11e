"""The extract's pure parts: pagination, Retry-After, backoff, schema checks, page parsing, retries."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest
import requests

from osms.core.run import Run
from osms.sources import extract
from osms.sources.extract import (
    ExtractResult,
    FeedExtractError,
    PageError,
    SourceClient,
    SourceEndpoint,
    backoff_seconds,
    check_columns,
    landing_schema,
    next_request,
    parse_page,
    parse_retry_after,
)
from osms.core.registry import Column, default_registry

pytestmark = pytest.mark.unit

IIN = "791028302728"


def _col(name: str, type_: str) -> Column:
    return Column(name=name, type=type_, required=False, personal=False, description=name)


COLUMNS = (
    _col("record_id", "string"),
    _col("iin", "iin"),
    _col("birth_date", "date"),
    _col("updated_at", "timestamp"),
    _col("weeks", "int"),
    _col("active", "bool"),
)


def _line(**over: object) -> dict:
    rec = {"record_id": "R-000001", "iin": IIN, "birth_date": "1979-10-28", "updated_at": "2024-01-02T03:04:05Z",
           "weeks": 12, "active": True}
    rec.update(over)
    return rec


def _page(*records: dict) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


# ---------------------------------------------------------------- pagination


def test_next_request_follows_the_cursor_header() -> None:
    r = requests.Response()
    r.headers["x-next-cursor"] = "MTA6YWJj"
    assert next_request(r) == {"cursor": "MTA6YWJj"}


@pytest.mark.parametrize("headers", [{}, {"X-Next-Cursor": ""}, {"X-Total-Count": "5"}])
def test_next_request_is_none_on_the_last_page(headers: dict[str, str]) -> None:
    r = requests.Response()
    r.headers.update(headers)
    assert next_request(r) is None


def test_next_request_accepts_plain_header_mappings() -> None:
    assert next_request({"X-Next-Cursor": "abc"}) == {"cursor": "abc"}


# ---------------------------------------------------------------- Retry-After and backoff


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1.0), ("2.5", 2.5), ("120", 30.0), ("-3", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_in_seconds_is_capped(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, cap=30.0) == expected


def test_retry_after_as_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 12, usegmt=True)
    assert parse_retry_after(header, cap=60.0, now=now) == pytest.approx(12.0, abs=1.0)
    assert parse_retry_after(header, cap=5.0, now=now) == 5.0


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [backoff_seconds(n, base=0.5, maximum=30.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_seconds(1, base=0.01, maximum=0.05) == 0.01


# ---------------------------------------------------------------- schema


def test_check_columns_names_a_renamed_column_as_missing_and_unexpected() -> None:
    declared = ["record_id", "iin", "birth_date"]
    assert check_columns(["record_id", "iin", "date_of_birth"], declared) == (
        "column birth_date is missing; unexpected column date_of_birth"
    )


def test_check_columns_dropped_and_extra() -> None:
    declared = ["record_id", "iin", "birth_date", "sex"]
    assert check_columns(["record_id", "iin"], declared) == "columns birth_date, sex are missing"
    assert check_columns(declared + ["x", "y"], declared) == "unexpected columns x, y"
    assert check_columns(list(reversed(declared)), declared) is None


def test_landing_schema_types_and_lineage() -> None:
    cat = default_registry().edition_on(dt.date(2024, 3, 1)).category("pregnant")
    schema = landing_schema(cat.record_columns)
    assert schema.names[: len(cat.record_columns)] == [c.name for c in cat.record_columns]
    assert schema.names[-4:] == ["body", "system", "category", "as_of"]
    assert schema.field("birth_date").type == pa.date32()
    assert schema.field("updated_at").type == pa.timestamp("s", tz="UTC")
    assert schema.field("pregnancy_weeks").type == pa.int32()
    assert schema.field("iin").type == pa.string()
    assert schema.field("as_of").type == pa.date32()


# ---------------------------------------------------------------- parsing a page


def test_parse_page_types_every_column() -> None:
    table = parse_page(_page(_line(), _line(record_id="R-000002", weeks=None, active=False)), COLUMNS, page=1)
    assert table.schema == pa.schema([("record_id", pa.string()), ("iin", pa.string()), ("birth_date", pa.date32()),
                                      ("updated_at", pa.timestamp("s", tz="UTC")), ("weeks", pa.int32()),
                                      ("active", pa.bool_())])
    assert table.column("birth_date").to_pylist() == [dt.date(1979, 10, 28)] * 2
    assert table.column("updated_at")[0].as_py() == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert table.column("weeks").to_pylist() == [12, None]


def test_parse_page_keeps_declared_order_whatever_the_key_order() -> None:
    rec = _line()
    reordered = dict(reversed(list(rec.items())))
    assert parse_page(_page(reordered), COLUMNS, page=1).column_names == [c.name for c in COLUMNS]


def test_empty_page_is_an_empty_typed_table() -> None:
    table = parse_page(b"", COLUMNS, page=1)
    assert table.num_rows == 0 and table.schema.field("birth_date").type == pa.date32()


def test_a_line_that_is_not_json_is_named_by_page_and_line_without_content() -> None:
    good = _page(*[_line(record_id=f"R-{i:06d}") for i in range(20)])
    lines = good.split(b"\n")
    lines[16] = lines[16][: len(lines[16]) // 2]  # line 17 cut short, as a crashing serialiser leaves it
    with pytest.raises(PageError) as err:
        parse_page(b"\n".join(lines), COLUMNS, page=3)
    message = str(err.value)
    assert message.startswith("page 3, line 17: not valid JSON (")
    assert IIN not in message and "1979" not in message and "R-000016" not in message


def test_a_value_of_the_wrong_type_names_column_and_line() -> None:
    data = _page(_line(), _line(record_id="R-000002", birth_date="abc"), _line(record_id="R-000003"))
    with pytest.raises(PageError, match=r"^page 2, line 2 \(record_id R-000002\): column birth_date .*date") as err:
        parse_page(data, COLUMNS, page=2)
    assert "abc" not in str(err.value) and IIN not in str(err.value)


def test_an_impossible_date_is_refused() -> None:
    with pytest.raises(PageError, match="line 1 .*column birth_date"):
        parse_page(_page(_line(birth_date="2024-02-30")), COLUMNS, page=1)


@pytest.mark.parametrize(
    ("over", "column"),
    [({"weeks": "12"}, "weeks"), ({"weeks": 5_000_000_000}, "weeks"), ({"active": "yes"}, "active"),
     ({"updated_at": "yesterday"}, "updated_at"), ({"iin": 791028302728}, "iin")],
)
def test_other_type_errors_name_the_column(over: dict, column: str) -> None:
    data = _page(_line(), _line(**over))
    with pytest.raises(PageError, match=f"^page 1, line 2 .*column {column} ") as err:
        parse_page(data, COLUMNS, page=1)
    assert "5000000000" not in str(err.value) and "yes" not in str(err.value)


def test_renamed_column_on_the_first_line_fails_the_page() -> None:
    rec = _line()
    rec["date_of_birth"] = rec.pop("birth_date")
    with pytest.raises(PageError, match="^page 1: column birth_date is missing; unexpected column date_of_birth$"):
        parse_page(_page(rec), COLUMNS, page=1)


def test_unexpected_column_on_a_later_line_is_found() -> None:
    data = _page(_line(), _line(), _line(extra=1))
    with pytest.raises(PageError, match="^page 1, line 3: unexpected column extra$"):
        parse_page(data, COLUMNS, page=1)


# ---------------------------------------------------------------- results, endpoint


def test_result_as_dict_is_json_and_counts_only(tmp_path: Path) -> None:
    result = ExtractResult(path=tmp_path / "x.parquet", rows=10, pages=2, bytes_received=1234, seconds=0.5,
                           retries=1, retry_causes={"HTTP 503": 1})
    d = result.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["path"] == str(tmp_path / "x.parquet") and d["rows"] == 10 and d["retries"] == 1
    assert set(d) == {"path", "rows", "pages", "bytes_received", "seconds", "retries", "retry_causes", "resorted",
                      "iin_record_ids"}


def test_endpoint_repr_hides_the_token() -> None:
    ep = SourceEndpoint("http://127.0.0.1:1", "s3cret-token")
    assert "s3cret-token" not in repr(ep)


def test_feed_error_names_the_feed() -> None:
    err = FeedExtractError(body="labour", system="payments", category="pregnant", as_of=dt.date(2024, 3, 1),
                           cause="page 3, line 17: not valid JSON (unterminated string)")
    assert str(err) == ("feed labour.payments.pregnant for 2024-03-01: page 3, line 17: not valid JSON"
                        " (unterminated string)")


# ---------------------------------------------------------------- retries, with a scripted session


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r._content_consumed = True  # read already: iter_content, as the client streams it, gives these bytes
    r.headers.update(headers or {})
    return r


class _ScriptedSession:
    """Answers with the given responses in order; records the requests."""

    def __init__(self, *responses: requests.Response | Exception) -> None:
        self.responses = list(responses)
        self.headers: dict[str, str] = {}
        self.calls: list[dict] = []

    def get(self, url: str, params: dict, timeout: float, stream: bool = False, **kwargs) -> requests.Response:
        assert kwargs.get("allow_redirects") is False  # a redirect is never followed
        self.calls.append(dict(params))
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        pass


def _client(session: _ScriptedSession, **ep) -> tuple[SourceClient, list[float]]:
    sleeps: list[float] = []
    endpoint = SourceEndpoint("http://127.0.0.1:9", "tok", **({"backoff_base": 0.5, "backoff_max": 30.0} | ep))
    return SourceClient(endpoint, session=session, sleep=sleeps.append), sleeps  # type: ignore[arg-type]


def _pages(client: SourceClient) -> list[extract.Page]:
    return list(client.pages("payments", "pregnant", dt.date(2024, 3, 1)))


def test_retry_after_is_honoured_and_backoff_grows(caplog: pytest.LogCaptureFixture) -> None:
    ok = _response(200, b'{"a":1}\n')
    session = _ScriptedSession(
        _response(429, b'{"error":"rate_limited","message":"too many requests"}', {"Retry-After": "7"}),
        _response(503, b'{"error":"server_error","message":"x"}'),
        requests.ConnectionError("refused"),
        _response(200, b'{"a":1}\n{"a":'),  # cut mid-line
        ok,
    )
    client, sleeps = _client(session)
    with caplog.at_level(logging.WARNING, logger="osms.sources.extract"):
        pages = _pages(client)
    assert len(pages) == 1 and pages[0].attempts == 5
    assert sleeps == [7.0, 1.0, 2.0, 4.0]
    assert client.retry_causes == {"HTTP 429": 1, "HTTP 503": 1, "connection error": 1, "truncated page": 1}
    assert "HTTP 429 rate_limited: too many requests, retrying in 7.00 s" in caplog.text
    assert "tok" not in caplog.text


def test_the_same_cursor_is_asked_again_after_a_failure() -> None:
    session = _ScriptedSession(
        _response(200, b'{"a":1}\n', {"X-Next-Cursor": "c1"}),
        _response(502),
        _response(200, b'{"a":2}\n'),
    )
    client, _ = _client(session)
    assert len(_pages(client)) == 2
    assert [c.get("cursor") for c in session.calls] == [None, "c1", "c1"]
    assert session.calls[1]["limit"] == "10000" and session.calls[1]["as_of"] == "2024-03-01"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    session = _ScriptedSession(_response(status, b'{"error":"nope","message":"no"}'))
    client, sleeps = _client(session)
    with pytest.raises(extract._Refused) as err:
        _pages(client)
    assert err.value.status == status and sleeps == [] and len(session.calls) == 1


def test_retries_run_out_after_max_retries_plus_one_attempts() -> None:
    session = _ScriptedSession(*[_response(503) for _ in range(3)])
    client, sleeps = _client(session, max_retries=2, backoff_base=0.01, backoff_max=0.01)
    with pytest.raises(extract._Transient):
        _pages(client)
    assert len(session.calls) == 3 and sleeps == [0.01, 0.01]


def test_extract_feed_maps_a_refusal_to_a_feed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = _ScriptedSession(_response(401, b'{"error":"unauthorized","message":"the token is not valid"}'))
    monkeypatch.setattr(extract.requests, "Session", lambda: session)
    with pytest.raises(FeedExtractError) as err:
        extract.extract_feed(SourceEndpoint("http://127.0.0.1:9", "tok"),
                             Run.of(dt.date(2024, 3, 1), data_dir=tmp_path), body="labour", system="payments", category="pregnant", landing_path=tmp_path / "x.parquet",
                             columns=COLUMNS)
    assert err.value.status == 401 and err.value.attempts == 1
    assert "HTTP 401 unauthorized: the token is not valid (not retried)" in str(err.value)
    assert list(tmp_path.iterdir()) == []
