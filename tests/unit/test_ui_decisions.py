"""QA decides on the Data quality page: who may, what is recorded and shown, what is refused; the page's languages.

The plugin app runs in-process with stand-ins for Airflow's login and for the decision
permission (Airflow's own checks are exercised by the browser tests).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from osms.core import layout
from osms.core.status import BodyStatus, CategoryStatus, write_status
from osms.ui.app import create_app
from tests.unit.test_ui import _validated

pytestmark = pytest.mark.unit

D = dt.date(2025, 6, 2)
NOW = dt.datetime(2025, 6, 3, 3, 15, tzinfo=dt.UTC)
USER, DECIDER = "x-test-user", "x-test-decider"


def _held(root: Path, body: str, category: str, systems: dict[str, str]) -> None:
    """A status of D where each of ``systems`` has its verdict (validated files hold their rows)."""
    feeds = {}
    for system, verdict in systems.items():
        reason = None if verdict == "published" else "volume 40 % of trailing median 10 (minimum 80 %)"
        feeds[system] = {"status": verdict, "rows_in": 4, "rows_published": 4, "rows_quarantined": 0, "reason": reason}
    verdicts = list(systems.values())
    status = "held_back" if all(v == "held_back" for v in verdicts) else (
        "partial" if "held_back" in verdicts else "published")
    write_status(root, BodyStatus(body=body, as_of=D, edition="2022", categories=(CategoryStatus(
        category, status, rows_in=4 * len(systems), rows_published=4 * len(systems), feeds=feeds),)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _validated(root, D, "enlightenment", "children", "nedb", 4)
    _held(root, "enlightenment", "children", {"nedb": "held_back", "orphans": "held_back"})
    _validated(root, D, "labour", "unemployed", "labour_market", 3)
    _held(root, "labour", "unemployed", {"labour_market": "published"})
    return root


def client(root: Path) -> TestClient:
    def authorize(request: Request) -> str:
        if not request.headers.get(USER):
            raise HTTPException(status_code=401, detail="Not authenticated")
        return request.headers[USER]

    def decider(request: Request) -> str | None:
        return request.headers.get(DECIDER)

    app = FastAPI()
    app.mount("/osms", create_app(authorize, root=lambda: root, key=lambda: None, decider=decider, clock=lambda: NOW))
    return TestClient(app)


QA = {USER: "qa", DECIDER: "qa"}
OPERATOR = {USER: "operator"}


def _form(**fields: str) -> dict[str, str]:
    return {"day": D.isoformat(), "category": "children", "body": "enlightenment", "system": "nedb",
            "action": "release", "reason": "a register was cleaned: the drop is real", **fields}


def test_qa_sees_the_forms_and_an_operator_does_not(root):
    page = client(root).get(f"/osms/quality?day={D}", headers=QA).text
    assert page.count('<form class="decide"') == 3  # each held-back feed, and the category's two at once
    assert 'data-system="nedb"' in page
    assert '<form class="decide"' not in client(root).get(f"/osms/quality?day={D}", headers=OPERATOR).text


def test_a_release_is_recorded_with_who_and_when_and_shown(root):
    # Act
    r = client(root).post("/osms/decisions", data=_form(), headers=QA, follow_redirects=False)

    # Assert: recorded, then the page shows it
    assert r.status_code == 303 and r.headers["location"] == f"/osms/quality?day={D}&done=1#category-children"
    [decision] = json.loads(layout.decisions(root, D, "enlightenment").read_text())["decisions"]
    assert decision == {"feed": "enlightenment.nedb.children", "day": "2025-06-02", "action": "release",
                        "reason": "a register was cleaned: the drop is real", "by": "qa",
                        "at": "2025-06-03T03:15:00Z", "applies_from": "2025-06-02"}
    page = client(root).get(r.headers["location"], headers=QA).text
    assert 'id="flash"' in page and "Decisions recorded: 1" in page
    assert re.search(r'data-system="nedb">.*?data-status="released"', page, re.S)
    assert "released by qa at 2025-06-03 03:15 UTC, for the packages from 2025-06-02 on" in page
    api = client(root).get(f"/osms/api/quality/{D}", headers=QA).json()
    feed = api["categories"]["children"]["bodies"]["enlightenment"]["feeds"]["nedb"]
    assert feed["status"] == "released" and feed["decision"]["by"] == "qa"


def test_the_category_form_decides_every_held_back_feed_of_it(root):
    r = client(root).post("/osms/decisions", data=_form(body="", system="", action="hold"), headers=QA,
                          follow_redirects=False)

    assert r.status_code == 303 and "done=2" in r.headers["location"]
    made = json.loads(layout.decisions(root, D, "enlightenment").read_text())["decisions"]
    assert sorted(d["feed"] for d in made) == ["enlightenment.nedb.children", "enlightenment.orphans.children"]


def test_someone_without_the_permission_is_refused(root):
    r = client(root).post("/osms/decisions", data=_form(), headers=OPERATOR)
    assert r.status_code == 403
    assert client(root).post("/osms/api/decisions", json=_form(), headers=OPERATOR).status_code == 403
    assert client(root).post("/osms/decisions", data=_form()).status_code == 401
    assert not layout.decisions(root, D, "enlightenment").exists()


@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}])
def test_a_form_sent_from_another_site_is_refused(root, headers):
    r = client(root).post("/osms/decisions", data=_form(), headers={**QA, **headers})
    assert r.status_code == 403
    assert not layout.decisions(root, D, "enlightenment").exists()


def test_a_form_from_the_page_itself_is_taken(root):
    r = client(root).post("/osms/decisions", data=_form(), follow_redirects=False,
                          headers={**QA, "origin": "http://testserver", "sec-fetch-site": "same-origin"})
    assert r.status_code == 303


def test_a_refused_decision_says_why_in_the_readers_language(root):
    r = client(root).post("/osms/decisions", data=_form(reason="moved: 791028302728"),
                          headers={**QA, "cookie": "osms_lang=ru"})
    assert r.status_code == 409
    assert "В причине есть 12-значное число (ИИН?)" in r.text and "791028302728" not in r.text
    r = client(root).post("/osms/decisions", data=_form(category="unemployed", body="labour",
                                                        system="labour_market"), headers=QA)
    assert r.status_code == 409 and "Nothing held back on 2025-06-02 matches the decision." in r.text
    assert not layout.decisions(root, D, "enlightenment").exists()


def test_the_json_api_records_and_refuses(root):
    ok = client(root).post("/osms/api/decisions", json=_form(action="hold"), headers=QA)
    assert ok.status_code == 201 and ok.json()["decisions"][0]["action"] == "hold"
    refused = client(root).post("/osms/api/decisions", json=_form(reason=""), headers=QA)
    assert refused.status_code == 409 and refused.json()["code"] == "reason_empty"
    form = client(root).post("/osms/api/decisions", data=_form(), headers=QA)
    assert form.status_code == 415


def test_an_oversized_form_is_refused(root):
    r = client(root).post("/osms/decisions", data=_form(reason="x" * 9000), headers=QA)
    assert r.status_code == 413


def test_the_page_speaks_kazakh_when_asked_and_remembers_it(root):
    c = client(root)
    r = c.get(f"/osms/quality?day={D}&lang=kk", headers=QA)
    assert r.status_code == 200 and '<html lang="kk">' in r.text
    assert "Деректер сапасы" in r.text and "Ұстауды растау" in r.text and "ұсталды" in r.text
    assert "Қазақстан Республикасының Оқу-ағарту министрлігі" in r.text  # the registry's name of the body
    assert "көлемі соңғы күндер медианасының (10) 40 %-ы (ең азы 80 %)" in r.text  # the reason, translated
    assert r.cookies.get("osms_lang") == "kk"
    assert '<html lang="kk">' in c.get(f"/osms/package?day={D}", headers=QA).text  # the cookie is kept


def test_the_browser_language_decides_without_a_choice_and_english_is_the_default(root):
    ru = client(root).get(f"/osms/quality?day={D}", headers={**QA, "accept-language": "ru-RU,ru;q=0.9"}).text
    assert '<html lang="ru">' in ru and "Качество данных" in ru and "Разрешить публикацию" in ru
    assert "Министерство просвещения Республики Казахстан" in ru
    en = client(root).get(f"/osms/quality?day={D}", headers={**QA, "accept-language": "de-DE"}).text
    assert '<html lang="en">' in en and "Confirm the hold" in en and "Ministry of Enlightenment" in en
