"""extract_feed against the mock Source API, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mocks.config import MockConfig
from mocks.defects import DefectRates
from mocks.faults import SystemFaults
from mocks.runner import RunningServer, serving
from mocks.sources import SourceService, create_app
from osms.core.run import Run
from osms.sources.extract import FeedExtractError, SourceEndpoint, endpoint_from_connection, extract_feed
from tests.support.fake_population import FakePopulation

pytestmark = pytest.mark.integration

DAY = dt.date(2024, 3, 1)
BODY, SYSTEM, CATEGORY = "labour", "payments", "pregnant"  # int, date and timestamp columns
SIZE = 150


@pytest.fixture(scope="module")
def mock() -> Iterator[tuple[RunningServer, SourceService]]:
    service = SourceService(FakePopulation(SIZE), MockConfig(defects=DefectRates.none()))
    with serving(create_app(service), name="sources") as server:
        yield server, service


@pytest.fixture
def source(mock: tuple[RunningServer, SourceService]) -> Iterator[tuple[RunningServer, SourceService]]:
    """The module's server, its faults cleared after each test."""
    yield mock
    for system in mock[1].faults:
        mock[1].faults[system] = SystemFaults()


def _endpoint(server: RunningServer, service: SourceService, **settings) -> SourceEndpoint:
    settings = {"page_size": 50, "backoff_base": 0.001, "backoff_max": 0.005} | settings
    return SourceEndpoint(server.url, service.tokens[SYSTEM], **settings)


def _extract(endpoint: SourceEndpoint, path: Path, **kw):
    return extract_feed(endpoint, Run.of(DAY, data_dir=path.parent),
                        body=BODY, system=SYSTEM, category=CATEGORY, landing_path=path, **kw)


def _assert_complete(path: Path, service: SourceService) -> pa.Table:
    expected = service.served_table(SYSTEM, CATEGORY, DAY)
    landed = pq.read_table(path)
    assert landed.num_rows == expected.num_rows == SIZE
    assert landed.select(expected.column_names).cast(expected.schema).equals(expected)
    return landed


def _iins(service: SourceService) -> list[str]:
    return service.served_table(SYSTEM, CATEGORY, DAY).column("iin").to_pylist()


@pytest.mark.parametrize("page_size", [1, 7, 5000])
def test_full_extract_equals_what_the_source_serves(source, tmp_path: Path, page_size: int) -> None:
    server, service = source
    result = _extract(_endpoint(server, service, page_size=page_size), tmp_path / "pregnant.parquet")
    _assert_complete(result.path, service)
    assert result.rows == SIZE and result.pages == -(-SIZE // page_size) and result.retries == 0
    assert result.bytes_received > 0 and not result.resorted


def test_landing_file_is_typed_zstd_with_lineage(source, tmp_path: Path) -> None:
    server, service = source
    result = _extract(_endpoint(server, service), tmp_path / "landing" / "pregnant.parquet")
    schema = pq.read_schema(result.path)
    assert schema.field("birth_date").type == pa.date32()
    assert schema.field("period_end").type == pa.date32()
    assert pa.types.is_timestamp(schema.field("updated_at").type)
    assert schema.field("updated_at").type.tz == "UTC"
    assert schema.field("pregnancy_weeks").type == pa.int32()
    assert schema.names[-4:] == ["body", "system", "category", "as_of"]
    lineage = pq.read_table(result.path, columns=["body", "system", "category", "as_of"]).to_pylist()
    assert {tuple(r.values()) for r in lineage} == {(BODY, SYSTEM, CATEGORY, DAY)}
    meta = pq.ParquetFile(result.path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    ids = pq.read_table(result.path, columns=["record_id"]).column(0).to_pylist()
    assert ids == sorted(ids)


def test_server_errors_and_rate_limits_are_retried(source, tmp_path: Path) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(error_rate=0.3, rate_limit_rate=0.2)
    result = _extract(_endpoint(server, service, page_size=10, max_retries=30), tmp_path / "x.parquet")
    _assert_complete(result.path, service)
    assert result.retries > 0
    assert "HTTP 429" in result.retry_causes and any(k.startswith("HTTP 5") for k in result.retry_causes)


def test_truncated_pages_are_asked_again(source, tmp_path: Path) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(truncate_rate=0.3)
    result = _extract(_endpoint(server, service, page_size=10, max_retries=30), tmp_path / "x.parquet")
    _assert_complete(result.path, service)
    assert result.retry_causes.get("truncated page", 0) > 0


def test_a_malformed_line_fails_at_once_naming_page_and_line(source, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(malformed_line_rate=0.5)
    with caplog.at_level(logging.DEBUG), pytest.raises(FeedExtractError) as err:
        _extract(_endpoint(server, service, page_size=10), tmp_path / "x.parquet")
    message = str(err.value)
    assert message.startswith(f"feed {BODY}.{SYSTEM}.{CATEGORY} for {DAY.isoformat()}: page ")
    assert ", line " in message and "not valid JSON" in message
    assert err.value.attempts == 1 and "retrying" not in caplog.text
    for iin in _iins(service):
        assert iin not in message and iin not in caplog.text


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (SystemFaults(rename_columns={"birth_date": "date_of_birth"}),
         "column birth_date is missing; unexpected column date_of_birth"),
        (SystemFaults(drop_columns=("pregnancy_weeks",)), "column pregnancy_weeks is missing"),
    ],
)
def test_renamed_or_dropped_column_is_named(source, tmp_path: Path, faults: SystemFaults, expected: str) -> None:
    server, service = source
    service.faults[SYSTEM] = faults
    with pytest.raises(FeedExtractError) as err:
        _extract(_endpoint(server, service), tmp_path / "x.parquet")
    assert str(err.value).endswith(f"page 1: {expected}")


def test_a_bad_token_fails_with_401_and_no_retry(source, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server, service = source
    endpoint = SourceEndpoint(server.url, "not-the-token", backoff_base=0.001, backoff_max=0.005)
    with caplog.at_level(logging.WARNING, logger="osms.sources.extract"), pytest.raises(FeedExtractError) as err:
        _extract(endpoint, tmp_path / "x.parquet")
    assert err.value.status == 401 and err.value.attempts == 1
    assert "HTTP 401" in str(err.value) and "not retried" in str(err.value)
    assert "retrying" not in caplog.text and "not-the-token" not in str(err.value) + caplog.text


def test_a_token_of_another_system_is_forbidden(source, tmp_path: Path) -> None:
    server, service = source
    endpoint = SourceEndpoint(server.url, service.tokens["oralman"])
    with pytest.raises(FeedExtractError, match="HTTP 403 forbidden"):
        _extract(endpoint, tmp_path / "x.parquet")


def test_a_system_that_is_down_fails_after_max_retries_plus_one(source, tmp_path: Path) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(down=True)
    with pytest.raises(FeedExtractError) as err:
        _extract(_endpoint(server, service, max_retries=2), tmp_path / "x.parquet")
    assert err.value.attempts == 3 and err.value.status == 503
    assert "gave up after 3 attempts; last: HTTP 503" in str(err.value)


def test_a_failure_leaves_the_previous_landing_file_and_no_temp_file(source, tmp_path: Path) -> None:
    server, service = source
    path = tmp_path / "pregnant.parquet"
    _extract(_endpoint(server, service), path)
    before = path.read_bytes()
    # the failure comes on page 3 of 5, after two pages were written to the temp file
    service.faults[SYSTEM] = SystemFaults(malformed_line_rate=1.0)
    with pytest.raises(FeedExtractError):
        _extract(_endpoint(server, service, page_size=30), path)
    service.faults[SYSTEM] = SystemFaults(error_rate=1.0)
    with pytest.raises(FeedExtractError):
        _extract(_endpoint(server, service, max_retries=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pregnant.parquet"]


def test_an_empty_feed_lands_as_an_empty_typed_file(source, tmp_path: Path) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(volume_drop=1.0)
    result = _extract(_endpoint(server, service), tmp_path / "x.parquet")
    table = pq.read_table(result.path)
    assert result.rows == 0 and table.num_rows == 0 and result.pages == 1
    assert table.schema.field("birth_date").type == pa.date32() and table.schema.names[-1] == "as_of"


class _Unsorted(FakePopulation):
    def records(self, system: str, category: str, as_of: dt.date) -> pa.Table:
        table = super().records(system, category, as_of)
        return table.take(pa.array(list(range(table.num_rows))[::-1]))


def test_unsorted_source_is_sorted_after_writing(tmp_path: Path) -> None:
    service = SourceService(_Unsorted(40), MockConfig(defects=DefectRates.none()))
    with serving(create_app(service)) as server:
        result = _extract(_endpoint(server, service, page_size=7), tmp_path / "x.parquet")
    ids = pq.read_table(result.path, columns=["record_id"]).column(0).to_pylist()
    assert result.resorted and len(ids) == 40 and ids == sorted(ids)


def test_endpoint_from_an_airflow_connection_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": 40123, "schema": "http", "password": "tok-abc-123",
            "extra": {"page_size": 500, "timeout": 5, "max_retries": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_OSMS_SOURCE_PAYMENTS", json.dumps(conn))
    endpoint = endpoint_from_connection("osms_source_payments")
    assert endpoint.base_url == "http://127.0.0.1:40123" and endpoint.token == "tok-abc-123"
    assert (endpoint.page_size, endpoint.timeout, endpoint.max_retries) == (500, 5.0, 2)
    assert endpoint.backoff_base == 0.5


def test_connection_endpoint_extracts_from_the_mock(source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, service = source
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "http",
            "password": service.tokens[SYSTEM], "extra": {"page_size": 40}}
    monkeypatch.setenv("AIRFLOW_CONN_OSMS_SOURCE_PAYMENTS", json.dumps(conn))
    result = _extract(endpoint_from_connection("osms_source_payments"), tmp_path / "x.parquet")
    assert result.pages == 4
    _assert_complete(result.path, service)


# ---------------------------------------------------------------- bounded paging, honest causes


def test_a_repeated_cursor_ends_the_extract_instead_of_looping(source, tmp_path: Path) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(repeat_cursor=True)
    before = service.stats[SYSTEM]["ok"]
    with pytest.raises(FeedExtractError, match="cursor it gave before") as err:
        _extract(_endpoint(server, service), tmp_path / "x.parquet")
    assert service.stats[SYSTEM]["ok"] - before <= 3  # stopped at once, not after thousands of pages
    assert "page 2" in str(err.value) or "page 3" in str(err.value)
    assert not (tmp_path / "x.parquet").exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_html_page_answered_200_is_named_and_not_retried(source, tmp_path: Path) -> None:
    server, service = source
    service.faults[SYSTEM] = SystemFaults(html_pages=True)
    with pytest.raises(FeedExtractError) as err:
        _extract(_endpoint(server, service, max_retries=5), tmp_path / "x.parquet")
    assert "HTML page" in str(err.value) and "not NDJSON" in str(err.value) and "truncated" not in str(err.value)
    assert err.value.attempts == 1


def test_more_pages_than_the_declared_size_needs_are_refused(tmp_path: Path) -> None:
    """A source that declares 10 records but keeps naming new cursors is stopped at the page that is too many."""
    from osms.sources.extract import SourceClient

    class Endless:
        headers: dict[str, str] = {}

        def __init__(self) -> None:
            self.n = 0

        def get(self, url: str, params: dict, timeout: float, stream: bool = False, **kwargs):
            import requests

            self.n += 1
            r = requests.Response()
            r.status_code, r._content, r._content_consumed = 200, b'{"a": 1}\n' * 5, True
            r.headers.update({"X-Total-Count": "10", "X-Next-Cursor": f"c{self.n}",
                              "Content-Type": "application/x-ndjson"})
            return r

        def close(self) -> None:
            pass

    session = Endless()
    client = SourceClient(SourceEndpoint("http://127.0.0.1:9", "t", page_size=5), session=session)  # type: ignore
    with pytest.raises(Exception, match="more than its declared 10 records need"):
        list(client.pages("payments", "pregnant", DAY))
    assert session.n == 3
