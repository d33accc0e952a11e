"""The mock source systems over real HTTP on 127.0.0.1, with the real synthetic population."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import numpy as np
import pytest

from mocks.defects import DEFECT_KINDS, DefectRates
from mocks.faults import SystemFaults
from mocks.service import MockServices
from osms.core import iin

pytestmark = pytest.mark.integration

DAY = dt.date(2025, 6, 1)


def fetch(m: MockServices, system: str, category: str, day: dt.date, limit: int = 5000) -> tuple[list[bytes], int]:
    """Every line of a feed, following cursors; and the number of pages."""
    lines: list[bytes] = []
    cursor, pages = None, 0
    with httpx.Client(base_url=m.sources_url, headers={"Authorization": f"Bearer {m.tokens[system]}"}) as c:
        while True:
            params = {"category": category, "as_of": day.isoformat(), "limit": limit}
            if cursor:
                params["cursor"] = cursor
            r = c.get(f"/v1/systems/{system}/records", params=params)
            assert r.status_code == 200, r.text
            lines += r.content.splitlines()
            pages += 1
            cursor = r.headers.get("x-next-cursor")
            if not cursor:
                return lines, pages


def ids(lines: list[bytes]) -> list[str]:
    return [json.loads(x)["record_id"] for x in lines]


@pytest.mark.parametrize("limit", [97, 1000, 50_000])
def test_paging_returns_each_record_exactly_once(clean_mocks: MockServices, limit: int) -> None:
    table = clean_mocks.source_service.served_table("individuals", "children", DAY)
    lines, pages = fetch(clean_mocks, "individuals", "children", DAY, limit)
    assert ids(lines) == table.column("record_id").to_pylist()
    assert pages == max(1, -(-table.num_rows // limit))
    assert len(set(ids(lines))) == len(lines)


def test_same_seed_scale_date_same_bytes(start) -> None:
    a, b = start(), start()
    assert a.sources.port != b.sources.port
    for system, category in [("payments", "pregnant"), ("nedb", "students"), ("penal_db", "inmates")]:
        assert fetch(a, system, category, DAY)[0] == fetch(b, system, category, DAY)[0]


def test_consecutive_days_differ_by_starts_and_ends(clean_mocks: MockServices) -> None:
    d1, d2 = DAY, DAY + dt.timedelta(days=1)
    changed = 0
    for system, category in clean_mocks.source_service.population.feeds():
        if category == "crisis_nonworking":
            continue
        one = {r["record_id"]: r for r in map(json.loads, fetch(clean_mocks, system, category, d1)[0])}
        two = {r["record_id"]: r for r in map(json.loads, fetch(clean_mocks, system, category, d2)[0])}
        for rid in two.keys() - one.keys():  # started on d2
            assert two[rid]["period_start"] == d2.isoformat(), (system, category)
        for rid in one.keys() - two.keys():  # ended on d1
            assert one[rid]["period_end"] == d1.isoformat(), (system, category)
        changed += len(two.keys() ^ one.keys())
    assert changed > 0


def test_every_iin_valid_except_injected(start) -> None:
    rates = DefectRates.from_mapping({k: 0.01 for k in DEFECT_KINDS}, DefectRates.none())
    m = start(defects=rates)
    bad_iin_kinds = {"bad_check_digit", "malformed_iin"}
    for system, category in [("individuals", "children"), ("pensions_benefits", "pensioners"), ("nedb", "students")]:
        rows = [json.loads(x) for x in fetch(m, system, category, DAY)[0]]
        values = [r["iin"] for r in rows]
        invalid = {r["record_id"] for r, ok in zip(rows, iin.check(values).valid, strict=True) if not ok}
        truth = m.source_service.ground_truth(system, category, DAY).to_pylist()
        assert invalid == {t["record_id"] for t in truth if t["defect"] in bad_iin_kinds}
        assert invalid


def test_contract_errors_over_http(clean_mocks: MockServices) -> None:
    m = clean_mocks
    url = f"{m.sources_url}/v1/systems/payments/records"
    good = {"Authorization": f"Bearer {m.tokens['payments']}"}
    other = {"Authorization": f"Bearer {m.tokens['oralman']}"}
    q = {"category": "pregnant", "as_of": DAY.isoformat()}
    assert httpx.get(url, params=q).status_code == 401
    assert httpx.get(url, params=q, headers=other).status_code == 403
    assert httpx.get(f"{m.sources_url}/v1/systems/nosuch/records", params=q, headers=good).status_code == 404
    assert httpx.get(url, params={**q, "category": "inmates"}, headers=good).status_code == 404
    r = httpx.get(url, params={**q, "limit": 100_000}, headers=good)
    assert r.status_code == 422 and r.json()["error"] == "bad_parameter"


@pytest.mark.parametrize(
    ("faults", "status", "low", "high"),
    [
        (SystemFaults(error_rate=0.2), 500, 0.14, 0.26),
        (SystemFaults(rate_limit_rate=0.1), 429, 0.06, 0.14),
    ],
)
def test_fault_rates_over_http(start, faults: SystemFaults, status: int, low: float, high: float) -> None:
    m = start(faults={"payments": faults})
    n, hits = 600, 0
    with httpx.Client(headers={"Authorization": f"Bearer {m.tokens['payments']}"}) as c:
        for _ in range(n):
            r = c.get(f"{m.sources_url}/v1/systems/payments/records",
                      params={"category": "pregnant", "as_of": DAY.isoformat(), "limit": 1})
            hits += r.status_code >= 500 if status == 500 else r.status_code == status
    assert low <= hits / n <= high


def test_slow_responses(start) -> None:
    m = start(faults={"oralman": SystemFaults(slow_rate=1.0, slow_seconds=0.5)})
    r = httpx.get(f"{m.sources_url}/v1/systems/oralman/records",
                  params={"category": "kandases", "as_of": DAY.isoformat()},
                  headers={"Authorization": f"Bearer {m.tokens['oralman']}"})
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.5


def test_credentials_files(clean_mocks: MockServices) -> None:
    tokens, env = clean_mocks.write_credentials()
    assert oct(tokens.stat().st_mode)[-3:] == "600" and oct(env.stat().st_mode)[-3:] == "600"
    doc = json.loads(tokens.read_text())
    assert doc["sources_url"] == clean_mocks.sources_url
    text = env.read_text()
    assert "AIRFLOW_CONN_OSMS_SOURCE_PAYMENTS=" in text and "AIRFLOW_CONN_OSMS_STATE_CORP=" in text
    assert np.all([line.count("127.0.0.1") == 1 for line in text.splitlines()])
