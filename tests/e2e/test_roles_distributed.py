"""The three people on the distributed shape (FAB), as they would work, in a real browser and over REST.

One native cluster for the module (``osms.dev.cluster.Cluster``: PostgreSQL, Redis, the
mocks, the init, API server, scheduler, DAG processor, triggerer, Celery workers, FAB's
auth manager), as ``make cluster`` starts it. Every person logs in through FAB's login form.

(a) every line of README's role table, as REST calls made as each person
    (``tests/support/roles.py``): refused ones answer 403, allowed ones succeed;
(b) the FAB roles hold the QA-decision permission as the table says;
(c) the operator starts a backfill in the Trigger → Backfill dialog, but the connections
    are refused to them: the page shows the refusal and an edit sent from their session
    answers 403; operator and QA find Data quality in the navigation;
(d) the engineer edits a connection in the UI's Edit Connection dialog;
(e) a manual run with a wait outside its Param's bounds is refused before it starts.
Screenshots go to test-artifacts/e2e/.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osms.core.dates import logical_date
from osms.dev.cluster import PG_BINDIR, Cluster
from tests.support import roles

from .conftest import TIMEZONE

_MISSING = [name for name, found in (("PostgreSQL 15", (PG_BINDIR / "postgres").exists()),
                                     ("Redis", shutil.which("redis-server"))) if not found]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed: run `make servers`"),
]

BACKFILL_DAG = "agency_courts"
BACKFILL_DAYS = (dt.date(2026, 11, 1), dt.date(2026, 11, 2))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    from osms.dev.airflow_local import free_port

    # PostgreSQL runs as its own user when the tests run as root: a data root it can reach (pytest's tmp is 0700)
    root = Path(tempfile.mkdtemp(prefix="osms-roles-"))
    root.chmod(0o755)
    running = Cluster(root / "data", port=free_port(), use_job_schedule=False, say=lambda _: None)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def probe_run(cluster: Cluster) -> str:
    return roles.prepare(cluster.airflow)


def fab_login(browser: Any, cluster: Cluster, user: str) -> Any:
    """A fresh browser context logged in as ``user`` through FAB's login form; returns its page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id=TIMEZONE)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{cluster.url}/")
    page.wait_for_url(re.compile(r".*/auth/login/.*"))
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(cluster.airflow.passwords()[user])
    page.locator("input[type=submit], button[type=submit]").first.click()
    page.wait_for_url(re.compile(rf"^{re.escape(cluster.url)}/?(\?.*)?$"))
    return page


def _shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=False)


# --------------------------------------------------------------------------- (a), (b) the role table over REST


@pytest.mark.parametrize("role", roles.ROLES)
def test_a_each_role_may_do_what_the_table_says_and_nothing_more(cluster: Cluster, probe_run: str, role: str) -> None:
    wrong = roles.probe(cluster.url, cluster.airflow.token(role), role, "distributed", probe_run)
    assert not wrong, "\n".join(wrong)


def test_a_the_receivers_connection_kept_its_place(cluster: Cluster, probe_run: str) -> None:
    """Whatever the probes tried, only the engineer's description reached the receiver's connection."""
    conn = cluster.airflow.api("GET", f"/api/v2/connections/{roles.RECEIVER_CONNECTION}")
    assert conn["host"] == "127.0.0.1" and conn["password"] == "***", conn


def test_b_the_fab_roles_hold_the_permission_lines_as_the_table_says(cluster: Cluster) -> None:
    for row in (r for r in roles.ROWS if r.permission):
        action, resource = row.permission
        for role in roles.ROLES:
            held = cluster.airflow.api("GET", f"/auth/fab/v1/roles/{role}")["actions"]
            has = any(p["action"]["name"] == action and p["resource"]["name"] == resource for p in held)
            assert has == row.of("distributed", role), (row.what, role)


# --------------------------------------------------------------------------- (c) the operator


def test_c_operator_starts_a_backfill_but_is_refused_the_connections(cluster: Cluster, browser: Any,
                                                                      artifacts: Path) -> None:
    from .test_airflow_ui import _pick

    af = cluster.airflow
    page = fab_login(browser, cluster, "operator")

    # Act: Trigger → Backfill over two days, as in the embedded shape
    page.goto(f"{cluster.url}/dags/{BACKFILL_DAG}")
    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Backfill", exact=True).click()
    for day in BACKFILL_DAYS:
        _pick(page, dialog, day)
    dialog.get_by_text("2 runs will be triggered").wait_for()
    _shot(page, artifacts, "fab-c1-operator-backfill-dialog")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/v2/backfills")) as made:
        dialog.get_by_role("button", name="Run Backfill").click()
    dialog.wait_for(state="hidden")

    # Assert: the backfill is the operator's, over the two days
    assert made.value.status == 200, made.value.text()[:500]
    backfill = made.value.json()
    assert backfill["dag_id"] == BACKFILL_DAG
    runs = af.poll(lambda: af.dag_runs(BACKFILL_DAG, run_type="backfill"), timeout=60, what="the backfill's runs")
    assert {r["triggering_user_name"] for r in runs} == {"operator"}
    af.api("PUT", f"/api/v2/backfills/{backfill['id']}/cancel")  # its runs are not what this test is about

    # Act: the connections, from the address bar (their menu entry is not shown to operators)
    with page.expect_response(lambda r: r.request.method == "GET" and "/api/v2/connections" in r.url) as listed:
        page.goto(f"{cluster.url}/connections")
    page.get_by_text("Forbidden").first.wait_for()
    _shot(page, artifacts, "fab-c2-operator-connections-refused")
    # an edit sent from the operator's own browser session, as the Edit Connection dialog would send it
    edit = page.request.patch(f"{cluster.url}/api/v2/connections/{roles.RECEIVER_CONNECTION}",
                              data={"connection_id": roles.RECEIVER_CONNECTION, "conn_type": "http",
                                    "host": "exfiltrate.example"})

    # Assert
    assert listed.value.status == 403
    assert edit.status == 403, edit.text()[:300]
    assert af.api("GET", f"/api/v2/connections/{roles.RECEIVER_CONNECTION}")["host"] == "127.0.0.1"
    menus = page.request.get(f"{cluster.url}/ui/auth/menus").json()["authorized_menu_items"]  # what the UI shows
    assert "Dags" in menus and not {"Connections", "Variables", "Config"} & set(menus), menus
    page.get_by_role("link", name="Data quality").wait_for()  # while the Data quality pages are theirs


def test_c_qa_finds_data_quality_in_the_navigation(cluster: Cluster, browser: Any, artifacts: Path) -> None:
    page = fab_login(browser, cluster, "qa")
    page.get_by_role("link", name="Data quality").click()
    page.wait_for_url(re.compile(r".*/plugin/data-quality"))
    # the plugin's page, in the frame, behind QA's own login (an empty data root: no day yet)
    page.frame_locator("iframe").first.locator("h1", has_text="OSMS data").wait_for()
    _shot(page, artifacts, "fab-c3-qa-data-quality")


# --------------------------------------------------------------------------- (d) the engineer


def test_d_engineer_edits_a_connection_in_the_ui(cluster: Cluster, browser: Any, artifacts: Path,
                                                probe_run: str) -> None:
    af = cluster.airflow
    page = fab_login(browser, cluster, "engineer")

    # Act: Admin → Connections, the probe connection's Edit Connection dialog, a new host, Save
    assert "Connections" in page.request.get(f"{cluster.url}/ui/auth/menus").json()["authorized_menu_items"]
    page.goto(f"{cluster.url}/connections")
    row = page.locator("tr", has_text=roles.PROBE_CONNECTION).first
    row.wait_for()
    row.get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Host").fill("127.0.0.7")
    _shot(page, artifacts, "fab-d1-engineer-edits-a-connection")
    with page.expect_response(lambda r: r.request.method == "PATCH" and "/api/v2/connections/" in r.url) as saved:
        dialog.get_by_role("button", name="Save").click()

    # Assert
    assert saved.value.status == 200, saved.value.text()[:300]
    conn = af.api("GET", f"/api/v2/connections/{roles.PROBE_CONNECTION}")
    assert conn["host"] == "127.0.0.7" and conn["password"] == "***"  # the password kept, never shown


# --------------------------------------------------------------------------- (e) params


def test_e_a_wait_outside_its_bounds_is_refused_before_the_run_starts(cluster: Cluster) -> None:
    import httpx

    from osms.orchestration.package_dag import DAG_ID

    before = cluster.airflow.dag_runs(DAG_ID)
    r = httpx.post(f"{cluster.url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30,
                   headers={"Authorization": f"Bearer {cluster.airflow.token('operator')}"},
                   json={"logical_date": logical_date(dt.date(2022, 1, 5)), "conf": {"status_wait_minutes": -5}})
    assert r.status_code == 400 and "status_wait_minutes" in r.text, r.text[:500]
    assert cluster.airflow.dag_runs(DAG_ID) == before
