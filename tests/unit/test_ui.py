"""The Data quality plugin: what it reads and shows, that every route is guarded, that paths stay inside.

The app is exercised in-process (Starlette's test client) with a stand-in for Airflow's
authorization, so these tests need no server; the real Airflow login is covered by
tests/integration/test_ui_http.py and the browser tests.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from osms.core.run import Run
from osms.core import iin

from osms.core import layout
from osms.core.files import write_parquet_atomic
from osms.core.documents import Receipt
from osms.package.build import build_package
from osms.package.deliver import store_receipt
from osms.core.status import BodyStatus, CategoryStatus, write_status
from osms.ui.app import create_app, external_view
from osms.ui.charts import line_chart
from osms.ui.report import BadDay, available_days, day_report, package_view, parse_day, trends

pytestmark = pytest.mark.unit

D0, D1 = dt.date(2025, 5, 31), dt.date(2025, 6, 1)
USER_HEADER = "x-test-user"


def _key_pair(tmp: Path) -> tuple[bytes, Path]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = tmp / "public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _validated(root: Path, day: dt.date, body: str, category: str, system: str, n: int) -> list[str]:
    """A validated file of ``n`` synthetic persons; returns their IINs and names (to look for on pages)."""
    rows, secrets = [], []
    for k in range(n):
        birth = dt.date(1980, 1, 1) + dt.timedelta(days=37 * k)
        person_iin = iin.generate(birth, "F", serial=100 + k)
        rows.append({"record_id": f"{body}-{k}", "iin": person_iin, "last_name": f"Жумабекова{k}",
                     "first_name": "Айгерим", "patronymic": None, "birth_date": birth, "sex": "F",
                     "period_start": dt.date(2024, 1, 1), "period_end": None,
                     "updated_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "body": body, "system": system,
                     "category": category, "as_of": day})
        secrets += [person_iin, f"Жумабекова{k}"]
    schema = pa.schema([
        ("record_id", pa.string()), ("iin", pa.string()), ("last_name", pa.string()), ("first_name", pa.string()),
        ("patronymic", pa.string()), ("birth_date", pa.date32()), ("sex", pa.string()),
        ("period_start", pa.date32()), ("period_end", pa.date32()), ("updated_at", pa.timestamp("us", tz="UTC")),
        ("body", pa.string()), ("system", pa.string()), ("category", pa.string()), ("as_of", pa.date32()),
    ])
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), layout.validated(root, day, body, category))
    write_parquet_atomic(pa.Table.from_pylist([], schema=schema.append(pa.field("rules", pa.list_(pa.string())))),
                         layout.quarantine(root, day, body, category))
    return secrets


def _status(root: Path, day: dt.date, body: str, **cats: CategoryStatus) -> None:
    write_status(root, BodyStatus(body=body, as_of=day, edition="2022", categories=tuple(cats.values())))


@pytest.fixture
def world(tmp_path: Path) -> dict:
    """Two days: labour publishes unemployed on both; justice publishes children on D0, holds it back on D1."""
    root = tmp_path / "data"
    secrets = []
    secrets += _validated(root, D0, "justice", "children", "individuals", 5)
    _status(root, D0, "justice", children=CategoryStatus(
        "children", "published", rows_in=6, rows_published=5, rows_quarantined=1,
        quarantined_by_rule={"iin_valid": 1}, warnings_by_rule={"iin_matches_birth_date_sex": 2}))
    for day, n in ((D0, 4), (D1, 3)):
        secrets += _validated(root, day, "labour", "unemployed", "labour_market", n)
    _status(root, D0, "labour", unemployed=CategoryStatus("unemployed", "published", rows_in=4, rows_published=4))
    _status(root, D1, "labour", unemployed=CategoryStatus(
        "unemployed", "published", rows_in=5, rows_published=3, rows_quarantined=2,
        quarantined_by_rule={"iin_valid": 1, "required:last_name": 1}))
    _status(root, D1, "justice", children=CategoryStatus(
        "children", "held_back", reason="volume 10 is under 80 % of the trailing median 100", rows_in=10))
    private, public = _key_pair(tmp_path)
    result = build_package(Run.of(D1, data_dir=root), signing_key_pem=private, producer_version="test",
                           memory_limit="256MB")
    store_receipt(result.path, Receipt(receipt_id="RCPT-TEST", package_id=result.package_id,
                                       manifest_sha256=result.manifest_sha256, logical_date=D1.isoformat(),
                                       received_at="2025-06-02T01:00:00+00:00", files=3))
    docs = root / "reports" / "data_docs" / D1.isoformat()
    (docs / "validations").mkdir(parents=True)
    (docs / "index.html").write_text(
        '<html><head><link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/'
        'bootstrap.min.css"></head><body><a href="validations/v.html">v</a></body></html>')
    (docs / "validations" / "v.html").write_text("<html><body>validation</body></html>")
    (tmp_path / "outside.txt").write_text("secret outside the docs")
    return {"root": root, "public": public, "secrets": secrets, "tmp": tmp_path}


def _client(world: dict, key: Path | None = None) -> TestClient:
    def authorize(request: Request) -> str:
        user = request.headers.get(USER_HEADER)
        if not user:
            raise HTTPException(status_code=401, detail="Not authenticated")
        return user

    plugin = create_app(authorize, root=lambda: world["root"],
                        key=lambda: key if key is not None else world["public"])
    app = FastAPI()
    app.mount("/osms", plugin)
    client = TestClient(app)
    client.plugin = plugin  # type: ignore[attr-defined]
    return client


# --------------------------------------------------------------------------- what the pages read


def test_day_report_gives_verdicts_counts_rules_and_carry_forward(world):
    # Act
    report = day_report(world["root"], D1)

    # Assert
    cats = {c.code: c for c in report.categories}
    assert len(cats) == 16 and report.edition.code == "2022"
    assert cats["unemployed"].status == "published"
    assert (cats["unemployed"].rows_in, cats["unemployed"].rows_published, cats["unemployed"].rows_quarantined) == (5, 3, 2)
    assert cats["unemployed"].quarantined_by_rule == {"iin_valid": 1, "required:last_name": 1}
    children = cats["children"]
    justice = next(u for u in children.units if u.body == "justice")
    assert justice.status == "held_back" and "trailing median" in justice.reason
    assert justice.carried_forward_from == D0
    enlightenment = next(u for u in children.units if u.body == "enlightenment")
    assert enlightenment.status == "missing" and enlightenment.carried_forward_from is None
    assert children.status == "carried_forward" and children.carried_forward_from == D0
    assert cats["pensioners"].status == "missing"
    assert report.bodies_reported == ("justice", "labour") and len(report.bodies_missing) == 6
    assert report.has_package and report.has_docs
    assert cats["unemployed"].package_rows == 3


def test_trends_sum_bodies_per_day_and_leave_gaps_for_days_nobody_reported(world):
    # Act
    trend = trends(world["root"], D1, days=3)

    # Assert
    assert trend.days == (D1 - dt.timedelta(days=2), D0, D1)
    unemployed = trend.series["unemployed"]
    assert [p.rows_in for p in unemployed] == [None, 4, 5]
    assert unemployed[2].quarantine_rate == pytest.approx(2 / 5)
    assert unemployed[0].quarantine_rate is None
    assert [p.rows_in for p in trend.series["children"]] == [None, 6, 10]
    assert [p.rows_in for p in trend.series["pensioners"]] == [None, None, None]


def test_package_view_checks_checksums_signature_chain_and_shows_the_receipt(world):
    # Act
    view = package_view(world["root"], D1, world["public"])

    # Assert
    assert view.exists and not view.problems
    assert view.signature_ok is True
    assert {f["name"] for f in view.files} == {"records.parquet", "changes.parquet", "quality.json"}
    assert all(f["ok"] for f in view.files)
    assert view.chain["ok"] and view.chain["previous_manifest_sha256"] is None
    assert view.receipt is not None and view.receipt.receipt_id == "RCPT-TEST"


def test_package_view_names_a_tampered_file_and_a_wrong_key(world, tmp_path):
    # Arrange
    records = layout.package_dir(world["root"], D1) / "records.parquet"
    records.write_bytes(records.read_bytes() + b"x")
    other = tmp_path / "other"
    other.mkdir()
    _, other_public = _key_pair(other)

    # Act
    view = package_view(world["root"], D1, other_public)

    # Assert
    bad = {f["name"]: f for f in view.files}
    assert not bad["records.parquet"]["ok"] and bad["quality.json"]["ok"]
    assert view.signature_ok is False
    assert any("signature does not match" in p for p in view.problems)


def test_package_view_without_a_key_checks_everything_but_the_signature(world):
    view = package_view(world["root"], D1, None)
    assert view.signature_ok is None and not view.problems


def test_parse_day_accepts_only_iso_dates():
    assert parse_day("2025-06-01") == D1
    for bad in ("2025-6-1", "20250601", "2025-06-01T00:00", "../2025-06-01", "2025-02-30", ""):
        with pytest.raises(BadDay):
            parse_day(bad)


def test_available_days_are_the_dated_folders_newest_first(world):
    (world["root"] / "status" / "not-a-date").mkdir()
    assert available_days(world["root"]) == [D1, D0]


# --------------------------------------------------------------------------- pages


def test_quality_page_shows_statuses_rules_carry_forward_and_one_chart_pair_per_category(world):
    # Act
    r = _client(world).get(f"/osms/quality?day={D1}", headers={USER_HEADER: "qa"})

    # Assert
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    html = r.text
    assert 'data-status="carried_forward"' in html and 'data-status="published"' in html
    assert "required:last_name" in html and "trailing median" in html
    assert html.count('<svg class="chart"') == 2 * 16
    assert f"{D0}" in html  # carried forward from
    assert 'href="/dags/agency_justice/runs" target="_top"' in html  # to the body's runs, out of the frame
    assert "https://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_no_page_or_api_answer_holds_an_iin_or_a_name(world):
    client = _client(world)
    pages = [f"/osms/quality?day={D1}", f"/osms/quality?day={D0}", f"/osms/package?day={D1}",
             f"/osms/api/quality/{D1}", f"/osms/api/package/{D1}", "/osms/api/days", f"/osms/docs/{D1}/"]
    for url in pages:
        text = client.get(url, headers={USER_HEADER: "qa"}).text
        leaked = [s for s in world["secrets"] if s in text]
        assert not leaked, f"{url} shows personal data ({len(leaked)} values)"
        if "package" not in url:  # checksums are hex and may hold a run of 12 digits
            assert not re.search(r"(?<![0-9a-f])\d{12}(?![0-9a-f])", text), f"{url} shows a 12-digit number"


def test_package_page_shows_checks_chain_and_receipt(world):
    html = _client(world).get(f"/osms/package?day={D1}", headers={USER_HEADER: "qa"}).text
    assert 'data-verified="yes">verified' in html
    assert "RCPT-TEST" in html and "none: the first package of the chain" in html
    assert html.count('<span class="ok">matches</span>') == 3


def test_package_api_gives_the_manifest_receipt_and_chain_start_as_written(world):
    from osms.core.documents import MANIFEST, RECEIPT

    folder = layout.package_dir(world["root"], D1)

    api = _client(world).get(f"/osms/api/package/{D1}", headers={USER_HEADER: "qa"}).json()

    assert api["manifest"] == json.loads((folder / MANIFEST).read_bytes())
    assert api["receipt"] == json.loads((folder / RECEIPT).read_bytes())
    start = json.loads(layout.chain_start(world["root"]).read_bytes())
    assert api["chain_start"] == {k: start[k] for k in ("start", "set_by", "set_at")}
    assert [f["name"] for f in api["files"]] == [f["name"] for f in api["manifest"]["files"]]


def test_a_damaged_receipt_reads_as_no_receipt(world):
    (layout.package_dir(world["root"], D1) / "receipt.json").write_text('{"receipt_id": "RCPT-TEST"}')

    view = package_view(world["root"], D1, world["public"])

    assert view.exists and view.receipt is None and not view.problems


def test_package_page_and_api_show_the_chains_start(world):
    from osms.core import layout
    from osms.package.chain import chain_start, set_chain_start

    assert chain_start(world["root"]).start == D1  # the fixture's build wrote it: the first package built
    layout.chain_start(world["root"]).unlink()
    client = _client(world)
    before = client.get(f"/osms/package?day={D1}", headers={USER_HEADER: "qa"}).text
    assert "The delivery chain has no start yet" in before
    set_chain_start(world["root"], D1, set_by="the init")
    after = client.get(f"/osms/package?day={D1}", headers={USER_HEADER: "qa"}).text
    assert f"The delivery chain starts at <strong>{D1}</strong>" in after and "set by the init" in after
    api = client.get(f"/osms/api/package/{D1}", headers={USER_HEADER: "qa"}).json()
    assert api["chain_start"]["start"] == D1.isoformat()


def test_data_docs_are_served_with_local_assets_only(world):
    client = _client(world)
    r = client.get(f"/osms/docs/{D1}/", headers={USER_HEADER: "qa"})
    assert r.status_code == 200
    assert "maxcdn.bootstrapcdn.com" not in r.text and "/osms/static/vendor/" in r.text
    assert client.get(f"/osms/docs/{D1}/validations/v.html", headers={USER_HEADER: "qa"}).text.count("validation")
    redirect = client.get(f"/osms/docs/{D1}", headers={USER_HEADER: "qa"}, follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"] == f"/osms/docs/{D1}/"


def test_bad_days_are_refused_with_a_clear_message(world):
    client = _client(world)
    r = client.get("/osms/quality?day=yesterday", headers={USER_HEADER: "qa"})
    assert r.status_code == 400 and "YYYY-MM-DD" in r.json()["detail"]
    assert client.get("/osms/api/quality/2025-13-01", headers={USER_HEADER: "qa"}).status_code == 400
    assert client.get("/osms/api/package/2024-01-01", headers={USER_HEADER: "qa"}).status_code == 404


def test_a_day_before_the_decree_says_no_edition(world):
    html = _client(world).get("/osms/quality?day=2021-01-01", headers={USER_HEADER: "qa"}).text
    assert "no edition" in html.lower()


# --------------------------------------------------------------------------- guard and paths


def _concrete(path: str) -> str:
    return path.replace("{day}", D1.isoformat()).replace("{path:path}", "index.html")


def test_every_route_refuses_a_caller_without_credentials(world):
    # Arrange: every route the app has, whatever is added later
    client = _client(world)
    app = client.plugin  # the mounted plugin app
    assert {"/quality", "/package", "/static/{path:path}", "/docs/{day}/{path:path}"} <= {r.path for r in app.routes}

    # Act / Assert
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            r = client.request(method, f"/osms{_concrete(route.path)}", follow_redirects=False)
            assert r.status_code == 401, f"{method} /osms{route.path} answered {r.status_code} without credentials"
    for path in ("/docs", "/openapi.json", "/redoc", "/static/vendor/x.css", "/nope"):
        assert client.get(f"/osms{path}").status_code in (401, 404)
    assert client.get("/osms/openapi.json", headers={USER_HEADER: "qa"}).status_code == 404


def test_every_route_that_writes_is_a_decision(world):
    app = _client(world).plugin
    writers = {route.path for route in app.routes if isinstance(route, APIRoute) and route.methods - {"GET", "HEAD"}}
    assert writers == {"/decisions", "/api/decisions"}


@pytest.mark.parametrize("path", [
    "..%2F..%2F..%2Foutside.txt",
    "%2e%2e/%2e%2e/%2e%2e/outside.txt",
    "validations/..%2F..%2F..%2F..%2Foutside.txt",
    "%2Fetc%2Fpasswd",
    "..\\..\\outside.txt",
    "link/outside.txt",
])
def test_data_docs_paths_cannot_leave_the_days_folder(world, path):
    # Arrange: a symlink inside the docs folder that points outside it
    docs = world["root"] / "reports" / "data_docs" / D1.isoformat()
    link = docs / "link"
    if not link.exists():
        link.symlink_to(world["tmp"], target_is_directory=True)

    # Act
    r = _client(world).get(f"/osms/docs/{D1}/{path}", headers={USER_HEADER: "qa"})

    # Assert
    assert r.status_code in (400, 404), f"{path}: {r.status_code}"
    assert "secret outside" not in r.text


@pytest.mark.parametrize("path", ["..%2Fui.py", "vendor/..%2F..%2Fui.py", "%2Fetc%2Fpasswd", "..%2F..%2Fui_report.py"])
def test_static_paths_cannot_leave_the_static_folder(world, path):
    r = _client(world).get(f"/osms/static/{path}", headers={USER_HEADER: "qa"})
    assert r.status_code == 404 and "import" not in r.text


def test_the_navigation_entry_points_at_the_quality_page():
    view = external_view()
    assert view["href"] == "/osms/quality" and view["url_route"] == "data-quality"
    assert view["destination"] == "nav" and view["name"] == "Data quality"


# --------------------------------------------------------------------------- charts


def test_a_chart_breaks_its_line_at_gaps_and_labels_every_point():
    points = [(D0 - dt.timedelta(days=2), 3.0), (D0 - dt.timedelta(days=1), None), (D0, 5.0), (D1, 7.0)]
    svg = line_chart(points, title="unemployed: rows in")
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3
    assert 'data-points="3"' in svg and "2025-06-01: 7" in svg


def test_an_empty_chart_says_no_data():
    svg = line_chart([(D0, None), (D1, None)], title="x", kind="rate")
    assert "no data" in svg and "<polyline" not in svg


def test_chart_titles_are_escaped():
    assert "<script>" not in line_chart([(D1, 1.0)], title="<script>alert(1)</script>")


def test_quality_json_api_has_trends(world):
    doc = _client(world).get(f"/osms/api/quality/{D1}", headers={USER_HEADER: "qa"}).json()
    assert doc["categories"]["children"]["status"] == "carried_forward"
    assert doc["trends"]["unemployed"][-1] == {"day": D1.isoformat(), "rows_in": 5, "rows_quarantined": 2}
    assert json.dumps(doc)  # plain JSON
