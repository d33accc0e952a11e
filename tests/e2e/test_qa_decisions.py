"""QA releases a held-back feed in the browser, and the next package holds its rows.

The main use case of QA's decisions: a real, lasting volume drop on D is held back by the
longitudinal rule, D's package goes out without it (carried forward), QA releases it the next
morning on the Data quality page, and D+1's package carries the feed again: the release
resets the feed's volume baseline, so D+1's run publishes it, and D's delivered package is
never touched or sent again.

The drop is arranged by giving the body three earlier days of a far larger volume (status
files only: what the volume check reads); D and D+1 are real runs of ``agency_health`` and
of the package DAG, on the stack ``make airflow`` starts, triggered as an operator would.
Also: the operator sees no decision form and is refused one; the page reads in Kazakh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from osms.core import layout
from osms.core.dates import almaty, logical_date
from osms.core.status import BodyStatus, CategoryStatus, read_status, write_status

from .conftest import login

pytestmark = pytest.mark.e2e

BODY, SYSTEM, CATEGORY = "health", "pregnancy_register", "pregnant"
FEED = f"{BODY}.{SYSTEM}.{CATEGORY}"
D = dt.date(2026, 10, 12)
NEXT = D + dt.timedelta(days=1)
EARLIER_VOLUME = 1_000_000  # three days at this volume: D's real volume is a drop
RUN_TIMEOUT_S = 420
PACKAGE_DAG = "osms_daily_package"
REASON = "The register was cleaned on 12 October: the lower volume is real"


def _shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=False)


def _run(stack: Any, dag_id: str, day: dt.date, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trigger the DAG for D (as the Trigger dialog does) and wait until the run ends."""
    when = logical_date(day) if dag_id != PACKAGE_DAG else \
        dt.datetime.combine(day, dt.time(0, 45), tzinfo=almaty()).isoformat()
    run = stack.airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": when, "conf": conf or {}})
    return stack.airflow.poll(
        lambda: next((r for r in stack.airflow.dag_runs(dag_id) if r["dag_run_id"] == run["dag_run_id"]
                      and r["state"] in ("success", "failed")), None),
        timeout=RUN_TIMEOUT_S, interval=2, what=f"{dag_id} for {day}")


def _package_day(stack: Any, day: dt.date, *, start_chain: bool = False) -> None:
    # the other bodies do not run here: they count as failed at once; the chain starts at D (this manual run says so)
    _run(stack, PACKAGE_DAG, day, {"status_wait_minutes": 0, "previous_wait_minutes": 0,
                                   **({"start_chain": True} if start_chain else {})})
    assert (layout.package_dir(stack.data_dir, day) / "receipt.json").is_file(), f"the package of {day} not delivered"


def _feed(stack: Any, day: dt.date) -> dict[str, Any]:
    return dict(read_status(stack.data_dir, day, BODY).category(CATEGORY).feeds[SYSTEM])


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_qa_releases_a_held_back_drop_and_the_next_package_holds_the_feed(stack, browser, artifacts):
    # Arrange: a volume drop on D, held back; D's package delivered without the feed
    root = stack.data_dir
    for k in (3, 2, 1):
        earlier = D - dt.timedelta(days=k)
        write_status(root, BodyStatus(body=BODY, as_of=earlier, edition="2026", categories=(CategoryStatus(
            CATEGORY, "published", rows_in=EARLIER_VOLUME, rows_published=EARLIER_VOLUME,
            feeds={SYSTEM: {"status": "published", "rows_in": EARLIER_VOLUME, "rows_published": EARLIER_VOLUME,
                            "rows_quarantined": 0}}),)))
    assert _run(stack, f"agency_{BODY}", D)["state"] == "success"
    held = _feed(stack, D)
    assert held["status"] == "held_back" and "trailing median" in held["reason"], held
    _package_day(stack, D, start_chain=True)
    delivered = _hashes(layout.package_dir(root, D))
    quality_d = json.loads((layout.package_dir(root, D) / "quality.json").read_text())
    assert quality_d["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]["rows_used"] == 0

    # Act 1: the operator may look, not decide
    operator = login(browser, stack, "operator")
    operator.goto(f"{stack.url}/osms/quality?day={D}")
    operator.locator(f'tr.feed[data-body="{BODY}"][data-system="{SYSTEM}"]').wait_for()
    assert operator.locator("form.decide").count() == 0
    refused = httpx.post(f"{stack.url}/osms/api/decisions", timeout=10, json={
        "day": D.isoformat(), "category": CATEGORY, "body": BODY, "system": SYSTEM, "action": "release",
        "reason": REASON}, headers={"Authorization": f"Bearer {stack.airflow.token('operator')}"})
    assert refused.status_code == 403

    # Act 2: QA opens Data quality from the navigation, finds the held-back feed and releases it
    page = login(browser, stack, "qa")
    page.get_by_role("link", name="Data quality").click()
    page.wait_for_url(re.compile(r".*/plugin/data-quality"))
    frame = page.frame_locator("iframe").first
    frame.locator("select#day").wait_for()
    embedded = next(f for f in page.frames if f.url.startswith(f"{stack.url}/osms/"))
    frame.locator("select#day").select_option(D.isoformat())
    embedded.wait_for_url(re.compile(rf".*/osms/quality\?day={D.isoformat()}$"))
    row = frame.locator(f'tr.feed[data-body="{BODY}"][data-system="{SYSTEM}"]')
    assert row.locator("[data-status]").first.get_attribute("data-status") == "held_back"
    form = row.locator("form.decide")
    form.get_by_placeholder("Reason (no personal data)").fill(REASON)
    _shot(page, artifacts, "q1-qa-held-back-feed")
    form.get_by_role("button", name="Release").click()

    # Assert 2: recorded with who and when; it shapes the next package, D's was delivered
    frame.locator("#flash", has_text="Decisions recorded: 1").wait_for()
    decision = frame.locator(f'tr.feed[data-body="{BODY}"][data-system="{SYSTEM}"] li.decision')
    assert "released by qa at" in decision.inner_text()
    assert f"for the packages from {NEXT.isoformat()} on: {REASON}" in decision.inner_text()
    _shot(page, artifacts, "q2-qa-released")
    [made] = json.loads(layout.decisions(root, D, BODY).read_text())["decisions"]
    assert (made["feed"], made["action"], made["by"], made["applies_from"]) == (FEED, "release", "qa",
                                                                                 NEXT.isoformat())
    frame.get_by_role("link", name="Қазақша").click()
    frame.locator("html[lang=kk]").wait_for()
    assert "жариялауға рұқсат етілді" in frame.locator(f'tr.feed[data-system="{SYSTEM}"] li.decision').inner_text()
    assert "Қазақстан Республикасының Денсаулық сақтау министрлігі" in frame.locator("table#categories").inner_text()
    _shot(page, artifacts, "q3-qa-kazakh")

    # Act 3: the next day runs as every day
    assert _run(stack, f"agency_{BODY}", NEXT)["state"] == "success"
    _package_day(stack, NEXT)

    # Assert 3: D+1's feed is published again (its baseline starts at D) and its rows are in D+1's package,
    # which names the decision; D's delivered package is untouched
    assert _feed(stack, NEXT)["status"] == "published", _feed(stack, NEXT)
    package = layout.package_dir(root, NEXT)
    records = pq.read_table(package / "records.parquet", columns=["category", "systems"]).to_pylist()
    ours = [r for r in records if r["category"] == CATEGORY and SYSTEM in r["systems"]]
    quality = json.loads((package / "quality.json").read_text())
    feed = quality["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]
    assert len(ours) > 0 and feed["rows_used"] == len(ours) and feed["status"] == "published"
    assert [(d["feed"], d["action"], d["by"], d["day"]) for d in quality["decisions"]] == [
        (FEED, "release", "qa", D.isoformat())]
    assert _hashes(layout.package_dir(root, D)) == delivered, "the delivered package changed"
