"""The Source API contract, served by the mock source systems (in-process)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from mocks.config import MockConfig
from mocks.defects import DEFECT_KINDS, DefectRates
from mocks.faults import SystemFaults
from mocks.sources import SourceService, create_app
from tests.support.fake_population import FakePopulation

pytestmark = pytest.mark.unit

DAY = "2024-03-01"
URL = "/v1/systems/{}/records"


def _client(size: int = 300, **config) -> tuple[TestClient, SourceService]:
    cfg = MockConfig(defects=config.pop("defects", DefectRates.none()), **config)
    service = SourceService(FakePopulation(size), cfg)
    return TestClient(create_app(service)), service


def _auth(service: SourceService, system: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.tokens[system]}"}


def _fetch_all(client: TestClient, service: SourceService, system: str, category: str, limit: int) -> list[dict]:
    rows, cursor, pages = [], None, 0
    while True:
        params = {"category": category, "as_of": DAY, "limit": limit} | ({"cursor": cursor} if cursor else {})
        r = client.get(URL.format(system), params=params, headers=_auth(service, system))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-ndjson"
        rows += [json.loads(line) for line in r.text.splitlines()]
        pages += 1
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            return rows


@pytest.mark.parametrize("limit", [1, 7, 100, 300, 5000])
def test_paging_returns_every_record_once(limit: int) -> None:
    client, service = _client(size=300, defects=DefectRates())
    expected = service.served_table("pensions_benefits", "pensioners", __import__("datetime").date(2024, 3, 1))
    rows = _fetch_all(client, service, "pensions_benefits", "pensioners", limit)
    assert [r["record_id"] for r in rows] == expected.column("record_id").to_pylist()


def test_records_have_the_registry_columns_in_order() -> None:
    from osms.core.registry import default_registry

    client, service = _client()
    rows = _fetch_all(client, service, "migration_police", "eaeu_migrants", 50)
    cat = default_registry().edition("2022").category("eaeu_migrants")
    assert list(rows[0]) == [c.name for c in cat.record_columns]


def test_same_request_same_bytes() -> None:
    client, service = _client(defects=DefectRates())
    params = {"category": "children", "as_of": DAY, "limit": 100}
    a = client.get(URL.format("individuals"), params=params, headers=_auth(service, "individuals"))
    client2, service2 = _client(defects=DefectRates(), tokens=service.tokens, admin_token="a")
    b = client2.get(URL.format("individuals"), params=params, headers=_auth(service2, "individuals"))
    assert a.content == b.content and a.headers["x-next-cursor"] == b.headers["x-next-cursor"]


def test_consecutive_days_differ() -> None:
    client, service = _client()
    h = _auth(service, "oralman")
    a = client.get(URL.format("oralman"), params={"category": "kandases", "as_of": "2022-10-01"}, headers=h)
    b = client.get(URL.format("oralman"), params={"category": "kandases", "as_of": "2022-10-02"}, headers=h)
    assert len(b.text.splitlines()) > len(a.text.splitlines())


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer nope"}, 401, "unauthorized"),
    ],
)
def test_bad_tokens(headers: dict[str, str], status: int, error: str) -> None:
    client, _ = _client()
    r = client.get(URL.format("payments"), params={"category": "pregnant", "as_of": DAY}, headers=headers)
    assert r.status_code == status and r.json()["error"] == error
    assert r.headers.get("www-authenticate") == "Bearer"


def test_token_of_another_system_is_forbidden() -> None:
    client, service = _client()
    r = client.get(URL.format("payments"), params={"category": "pregnant", "as_of": DAY},
                   headers=_auth(service, "oralman"))
    assert r.status_code == 403 and "payments" in r.json()["message"]


@pytest.mark.parametrize(
    ("system", "params", "status", "error"),
    [
        ("nosuch", {"category": "pregnant", "as_of": DAY}, 404, "unknown_system"),
        ("payments", {"category": "children", "as_of": DAY}, 404, "unknown_category"),
        ("payments", {"as_of": DAY}, 422, "bad_parameter"),
        ("payments", {"category": "pregnant"}, 422, "bad_parameter"),
        ("payments", {"category": "pregnant", "as_of": "01.03.2024"}, 422, "bad_parameter"),
        ("payments", {"category": "pregnant", "as_of": "2021-01-01"}, 422, "bad_parameter"),
        ("payments", {"category": "pregnant", "as_of": DAY, "limit": "0"}, 422, "bad_parameter"),
        ("payments", {"category": "pregnant", "as_of": DAY, "limit": "lots"}, 422, "bad_parameter"),
        ("payments", {"category": "pregnant", "as_of": DAY, "cursor": "!!"}, 422, "bad_cursor"),
        ("payments", {"category": "pregnant", "as_of": DAY, "page": "2"}, 422, "bad_parameter"),
    ],
)
def test_errors_per_contract(system: str, params: dict, status: int, error: str) -> None:
    client, service = _client()
    headers = _auth(service, system) if system in service.tokens else _auth(service, "payments")
    r = client.get(URL.format(system), params=params, headers=headers)
    assert (r.status_code, r.json()["error"]) == (status, error)
    assert r.json()["message"]


def test_cursor_of_another_query_is_refused() -> None:
    client, service = _client()
    h = _auth(service, "payments")
    first = client.get(URL.format("payments"), params={"category": "pregnant", "as_of": DAY, "limit": 5}, headers=h)
    cursor = first.headers["x-next-cursor"]
    r = client.get(URL.format("payments"), params={"category": "pregnant", "as_of": "2024-03-02", "cursor": cursor},
                   headers=h)
    assert r.status_code == 422 and r.json()["error"] == "bad_cursor"


def _rate(client: TestClient, service: SourceService, system: str, category: str, n: int = 400) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _ in range(n):
        r = client.get(URL.format(system), params={"category": category, "as_of": DAY, "limit": 10},
                       headers=_auth(service, system))
        counts[r.status_code] = counts.get(r.status_code, 0) + 1
    return counts


def test_server_errors_at_their_rate() -> None:
    client, service = _client(faults={"payments": SystemFaults(error_rate=0.25)})
    counts = _rate(client, service, "payments", "pregnant")
    errors = sum(v for k, v in counts.items() if k >= 500)
    assert 70 <= errors <= 130 and set(counts) <= {200, 500, 502, 503}


def test_rate_limit_with_retry_after() -> None:
    client, service = _client(faults={"payments": SystemFaults(rate_limit_rate=0.2, retry_after_seconds=3)})
    counts = _rate(client, service, "payments", "pregnant")
    assert 50 <= counts[429] <= 110
    h = _auth(service, "payments")
    while (r := client.get(URL.format("payments"), params={"category": "pregnant", "as_of": DAY}, headers=h)).status_code != 429:
        pass
    assert r.headers["retry-after"] == "3"


def test_truncated_pages_end_mid_line() -> None:
    client, service = _client(faults={"nedb": SystemFaults(truncate_rate=1.0)})
    r = client.get(URL.format("nedb"), params={"category": "children", "as_of": DAY, "limit": 50},
                   headers=_auth(service, "nedb"))
    assert r.status_code == 200 and not r.content.endswith(b"\n")


def test_malformed_line_persists_on_retry() -> None:
    client, service = _client(faults={"nedb": SystemFaults(malformed_line_rate=1.0)})
    params = {"category": "children", "as_of": DAY, "limit": 50}
    bodies = [client.get(URL.format("nedb"), params=params, headers=_auth(service, "nedb")).content for _ in range(2)]
    assert bodies[0] == bodies[1]
    bad = 0
    for line in bodies[0].splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad += 1
    assert bad == 1


def test_renamed_and_dropped_columns() -> None:
    faults = SystemFaults(rename_columns={"birth_date": "date_of_birth"}, drop_columns=("sex",))
    client, service = _client(faults={"nedb": faults})
    r = client.get(URL.format("nedb"), params={"category": "children", "as_of": DAY, "limit": 5},
                   headers=_auth(service, "nedb"))
    row = json.loads(r.text.splitlines()[0])
    assert "date_of_birth" in row and "birth_date" not in row and "sex" not in row


def test_volume_drop_withholds_records() -> None:
    client, service = _client(size=1000, faults={"penal_db": SystemFaults(volume_drop=0.5)})
    full = _client(size=1000)[1].served_table("penal_db", "inmates", __import__("datetime").date(2024, 3, 1))
    rows = _fetch_all(client, service, "penal_db", "inmates", 5000)
    assert 0.4 * full.num_rows <= len(rows) <= 0.6 * full.num_rows


def test_down_and_rejected_token() -> None:
    client, service = _client(faults={"tsa_db": SystemFaults(down=True), "oralman": SystemFaults(reject_token=True)})
    r = client.get(URL.format("tsa_db"), params={"category": "tsa_recipients", "as_of": DAY},
                   headers=_auth(service, "tsa_db"))
    assert r.status_code == 503 and "retry-after" in r.headers
    r = client.get(URL.format("oralman"), params={"category": "kandases", "as_of": DAY},
                   headers=_auth(service, "oralman"))
    assert r.status_code == 401 and r.json()["error"] == "token_rejected"


def test_admin_faults_and_ground_truth() -> None:
    rates = DefectRates.from_mapping({k: 0.02 for k in DEFECT_KINDS}, DefectRates.none())
    client, service = _client(size=2000, defects=rates)
    admin = {"Authorization": f"Bearer {service.config.admin_token}"}
    assert client.get("/_admin/faults").status_code == 401
    r = client.put("/_admin/faults/payments", json={"error_rate": 1.0}, headers=admin)
    assert r.status_code == 200 and r.json()["error_rate"] == 1.0
    assert client.put("/_admin/faults/payments", json={"eror_rate": 1}, headers=admin).status_code == 422
    counts = _rate(client, service, "payments", "pregnant", n=5)
    assert set(counts) <= {500, 502, 503}
    truth = client.get("/_admin/ground-truth", params={"as_of": DAY, "system": "nedb", "category": "children"},
                       headers=admin)
    lines = [json.loads(x) for x in truth.text.splitlines()]
    assert lines and {x["defect"] for x in lines} == set(DEFECT_KINDS)
    served = _fetch_all(client, service, "nedb", "children", 5000)
    served_ids = {r["record_id"] for r in served}
    assert {x["record_id"] for x in lines} <= served_ids


def test_faults_keyed_to_a_day_hold_for_that_day_only() -> None:
    import datetime as dt

    day = dt.date.fromisoformat(DAY)
    client, service = _client(day_faults={day: {"penal_db": SystemFaults(down=True),
                                                "migration_police": SystemFaults(volume_drop=0.9)}})
    params = {"category": "inmates", "limit": 10}
    down = client.get(URL.format("penal_db"), params={**params, "as_of": DAY}, headers=_auth(service, "penal_db"))
    assert down.status_code == 503
    other = (day + dt.timedelta(days=1)).isoformat()
    back = client.get(URL.format("penal_db"), params={**params, "as_of": other}, headers=_auth(service, "penal_db"))
    assert back.status_code == 200 and int(back.headers["X-Total-Count"]) > 0
    full = service.day_table("migration_police", "eaeu_migrants", day)[0].num_rows
    assert full > 20 and service.served_table("migration_police", "eaeu_migrants", day).num_rows < full / 2
    assert service.served_table("migration_police", "eaeu_migrants", day + dt.timedelta(days=1)).num_rows >= full
