"""Operators and QA in the Airflow UI, in a real browser.

(a) ``operator`` creates a two-day backfill of ``agency_courts`` in Airflow's
    Trigger → Backfill dialog and watches both runs succeed on the Runs tab;
(b) ``qa`` opens Data quality from the navigation: statuses and trend charts render,
    the GX Data Docs open, no IIN or name of the persons just extracted appears in
    any page's text, and no page reaches beyond 127.0.0.1;
(c) ``qa`` cannot trigger a run: the dialog's request is refused and no run exists;
(d) without Airflow credentials every plugin route is refused, and paths that try
    to leave their folder are refused with them.
Screenshots of each step are written to test-artifacts/e2e/.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pendulum
import pyarrow.parquet as pq
import pytest

from osms.core.dates import ALMATY, logical_date
from osms.core.registry import default_registry

from .conftest import login

pytestmark = pytest.mark.e2e

DAG_ID = "agency_courts"
BODY = "courts"
DAYS = (dt.date(2026, 11, 1), dt.date(2026, 11, 2))
RUN_TIMEOUT_S = 420
PERSONAL_COLUMNS = ("iin", "last_name", "first_name", "patronymic", "child_iin", "parent_iin", "cared_iin")


def _shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=False)


def _run_day(run: dict) -> dt.date:
    return pendulum.parse(run["logical_date"]).in_timezone(ALMATY).date()


def _backfill_runs(stack: Any) -> list[dict]:
    return stack.airflow.dag_runs(DAG_ID, run_type="backfill")


def _pick(page: Any, dialog: Any, day: dt.date) -> None:
    """Fill one of the dialog's date-time pickers with 00:30 on ``day`` (the browser is in Almaty time)."""
    dialog.get_by_text("Select date and time").first.click()
    popover = page.locator("[data-part=content]:visible").last
    popover.get_by_placeholder("YYYY/MM/DD").fill(day.strftime("%Y/%m/%d"))
    popover.get_by_placeholder("HH:mm").fill("00:30")
    dialog.get_by_role("heading").first.click()  # closes the picker


def _ensure_backfilled(stack: Any) -> None:
    """The two days of courts data test (b) reads; created over the REST API when (a) did not run first."""
    if all(stack.data_dir.joinpath("status", d.isoformat(), f"{BODY}.json").is_file() for d in DAYS):
        return
    if not _backfill_runs(stack):
        stack.airflow.api("POST", "/api/v2/backfills", ok=(200, 201), json={
            "dag_id": DAG_ID, "from_date": logical_date(DAYS[0]), "to_date": logical_date(DAYS[-1]),
            "max_active_runs": 1, "reprocess_behavior": "none"})
    stack.airflow.poll(lambda: len(_backfill_runs(stack)) == 2
                       and all(r["state"] == "success" for r in _backfill_runs(stack)),
                       timeout=RUN_TIMEOUT_S, interval=2, what="the courts backfill")


def _personal_values(data_dir: Path) -> set[str]:
    """Every IIN and name in the landing and validated files of the test's days."""
    values: set[str] = set()
    for kind in ("landing", "validated", "quarantine"):
        for day in DAYS:
            for path in sorted((data_dir / kind / day.isoformat()).rglob("*.parquet")):
                table = pq.read_table(path)
                for col in PERSONAL_COLUMNS:
                    if col in table.column_names:
                        values |= {v for v in table.column(col).to_pylist() if isinstance(v, str) and len(v) >= 3}
    return values


# --------------------------------------------------------------------------- (a) operator backfills


def test_a_operator_backfills_two_days_in_the_dialog_and_sees_them_complete(stack, browser, artifacts):
    # Arrange
    page = login(browser, stack, "operator")
    page.goto(f"{stack.url}/dags/{DAG_ID}")

    # Act: Trigger → Backfill, a two-day range, Run Backfill
    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Backfill", exact=True).click()
    for day in DAYS:
        _pick(page, dialog, day)
    dialog.get_by_text("2 runs will be triggered").wait_for()
    _shot(page, artifacts, "a1-operator-backfill-dialog")
    dialog.get_by_role("button", name="Run Backfill").click()
    dialog.wait_for(state="hidden")

    # Assert: the Runs tab shows both backfill runs succeeding
    page.goto(f"{stack.url}/dags/{DAG_ID}/runs")
    rows = page.locator("tbody tr", has_text="backfill__")
    deadline = dt.datetime.now() + dt.timedelta(seconds=RUN_TIMEOUT_S)
    while True:
        texts = [rows.nth(i).inner_text() for i in range(rows.count())]
        if len(texts) == 2 and all("Success" in t for t in texts):
            break
        if any("Failed" in t for t in texts):
            _shot(page, artifacts, "a2-operator-backfill-failed")
            pytest.fail(f"a backfill run failed: {texts}")
        if dt.datetime.now() > deadline:
            _shot(page, artifacts, "a2-operator-backfill-timeout")
            pytest.fail(f"backfill runs did not succeed in {RUN_TIMEOUT_S} s: {texts}")
        page.wait_for_timeout(3000)
        page.reload()
        rows.first.wait_for()
    _shot(page, artifacts, "a2-operator-backfill-succeeded")

    runs = _backfill_runs(stack)
    assert [_run_day(r) for r in runs] == list(DAYS), "the dialog's range gave other days"
    assert {r["triggering_user_name"] for r in runs} == {"operator"}
    for day in DAYS:  # the same outputs a scheduled run writes (tests/integration/test_backfill.py compares them)
        status = stack.data_dir / "status" / day.isoformat() / f"{BODY}.json"
        assert status.is_file(), f"no status of {BODY} for {day}"
        assert '"status": "published"' in status.read_text()


# --------------------------------------------------------------------------- (b) qa reads data quality


def test_b_qa_sees_statuses_charts_and_data_docs_without_personal_data(stack, browser, artifacts):
    # Arrange
    _ensure_backfilled(stack)
    secrets = _personal_values(stack.data_dir)
    assert len(secrets) >= 8, "the backfill extracted too few persons to look for"
    page = login(browser, stack, "qa")
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if urlparse(r.url).hostname not in ("127.0.0.1", None) and not r.url.startswith(("data:", "blob:"))
            else None)
    categories = [c.code for c in default_registry().edition_on(DAYS[-1]).categories_of(BODY)]

    # Act: Data quality from Airflow's navigation, then the last backfilled day
    page.get_by_role("link", name="Data quality").click()
    page.wait_for_url(re.compile(r".*/plugin/data-quality"))
    frame = page.frame_locator("iframe").first
    frame.locator("select#day").wait_for()
    embedded = next(f for f in page.frames if f.url.startswith(f"{stack.url}/osms/"))
    frame.locator("select#day").select_option(DAYS[-1].isoformat())  # submits the form in the frame
    embedded.wait_for_url(re.compile(rf".*/osms/quality\?day={DAYS[-1].isoformat()}$"))
    embedded.wait_for_load_state("load")
    frame.locator("h1", has_text=DAYS[-1].isoformat()).wait_for()
    frame.locator("#trends svg.chart").first.wait_for()
    _shot(page, artifacts, "b1-qa-data-quality")

    # Assert: per category statuses (courts published its part, bodies that did not run are missing),
    # two charts per category, drawn
    for code in categories:
        unit = frame.locator(f'tbody[data-category="{code}"] tr.unit[data-body="{BODY}"] [data-status]')
        assert unit.get_attribute("data-status") == "published", code
        verdict = frame.locator(f'tbody[data-category="{code}"] tr.cat [data-status]').get_attribute("data-status")
        assert verdict in ("published", "partial"), code
    assert frame.locator('tr.unit [data-status="missing"]').count() > 0, "bodies that never ran show as missing"
    all_categories = frame.locator("table#categories tbody[data-category]").count()
    assert all_categories == len(default_registry().edition_on(DAYS[-1]).categories)
    charts = frame.locator("#trends svg.chart")
    assert charts.count() == 2 * all_categories
    for code in categories:
        chart = frame.locator(f'#trends .chartbox[data-category="{code}"] svg.chart').first
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, f"chart of {code} is not drawn"
        assert int(chart.get_attribute("data-points")) == 2, f"chart of {code} should plot both days"
        assert chart.locator("polyline").count() == 1
    texts = [page.locator("body").inner_text(), frame.locator("body").inner_text(),
             frame.locator("html").inner_html()]

    # the day's GX Data Docs, inside the same frame
    frame.get_by_role("link", name="GX Data Docs").first.click()
    frame.get_by_text("Validation Results").first.wait_for()
    _shot(page, artifacts, "b2-qa-data-docs")
    texts += [frame.locator("body").inner_text(), frame.locator("html").inner_html()]

    leaked = sorted({s for s in secrets for t in texts if s in t})
    assert not leaked, f"{len(leaked)} personal values appear on the pages"
    assert not any(re.search(r"(?<![\w-])\d{12}(?![\w-])", t) for t in texts[:2]), "a 12-digit number is shown"
    assert not outside, f"pages reached beyond 127.0.0.1: {outside[:5]}"


# --------------------------------------------------------------------------- (c) qa cannot trigger


def test_c_qa_cannot_trigger_a_run(stack, browser, artifacts):
    # Arrange
    page = login(browser, stack, "qa")
    page.goto(f"{stack.url}/dags/{DAG_ID}")
    before = {r["dag_run_id"] for r in stack.airflow.dag_runs(DAG_ID)}

    # Act: the dialog opens for everyone; the request behind its Trigger button is what counts
    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    with page.expect_response(lambda r: r.request.method == "POST" and "/dagRuns" in r.url) as answer:
        dialog.get_by_role("button", name="Trigger").last.click()

    # Assert
    assert answer.value.status == 403
    page.get_by_text(re.compile("Access Denied|403 Forbidden")).first.wait_for()
    _shot(page, artifacts, "c1-qa-trigger-refused")
    assert {r["dag_run_id"] for r in stack.airflow.dag_runs(DAG_ID)} == before, "a run was created for qa"
    qa = {"Authorization": f"Bearer {stack.airflow.token('qa')}"}
    refused = httpx.post(f"{stack.url}/api/v2/backfills", headers=qa, timeout=10, json={
        "dag_id": DAG_ID, "from_date": logical_date(DAYS[0]), "to_date": logical_date(DAYS[0])})
    assert refused.status_code == 403


# --------------------------------------------------------------------------- (d) the plugin's routes at the real server


def test_d_every_plugin_route_needs_airflow_credentials_and_paths_stay_inside(stack):
    from osms.ui.app import URL_PREFIX, create_app

    day = DAYS[0].isoformat()
    routes = sorted({(method, r.path.replace("{day}", day).replace("{path:path}", "index.html"))
                     for r in create_app(lambda: None).routes for method in (getattr(r, "methods", None) or {"GET"})
                     if method != "HEAD"})
    assert len(routes) >= 11
    qa = {"Authorization": f"Bearer {stack.airflow.token('qa')}"}
    with httpx.Client(base_url=stack.url, timeout=10, follow_redirects=False) as client:
        for method, path in routes:
            url = f"{URL_PREFIX}{path}"
            assert client.request(method, url).status_code == 401, f"{method} {url} answered without credentials"
            assert client.request(method, url, headers={"Authorization": "Bearer not-a-jwt"}).status_code in (
                401, 403), url
            with httpx.Client(base_url=stack.url, timeout=10, cookies={"_token": "not-a-jwt"}) as forged:
                assert forged.request(method, url).status_code in (401, 403), url
        assert client.get(f"{URL_PREFIX}/quality", headers=qa).status_code == 200
        assert client.get(f"{URL_PREFIX}/openapi.json", headers=qa).status_code == 404
        for attempt in (f"/docs/{day}/..%2F..%2F..%2Fairflow%2Fsimple_auth_manager_passwords.json",
                        f"/docs/{day}/%2e%2e/%2e%2e/%2e%2e/mocks/state/tokens.json",
                        "/static/..%2F..%2Fui.py", "/static/vendor/..%2F..%2F..%2Fkeys.py",
                        "/docs/..%2F..%2Fstatus/index.html", "/static/%2Fetc%2Fpasswd"):
            r = client.get(f"{URL_PREFIX}{attempt}", headers=qa)
            assert r.status_code in (400, 404), f"{attempt} answered {r.status_code}"
            assert "password" not in r.text.lower() and "token" not in r.text.lower()
