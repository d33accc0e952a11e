"""Notices through the Airflow notifier: marked sent only once accepted, retried, never repeated, never blocking.

The webhook is the requests adapter of test_alerts (the HTTP client's seam); connections and
variables are given as ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*``. A real scheduler and DAG processor
posting a failed run's notice are in ``tests/integration/test_notices_http.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from osms.orchestration import notices
from osms.orchestration.notices import KINDS, Notice, OsmsNotifier, failure_notifiers, flush_outbox, send_notice
from tests.unit.test_alerts import TOKEN, Webhook, _connection

pytestmark = pytest.mark.unit

DAY = dt.date(2025, 6, 1)
RUN = "scheduled__2025-05-31T19:30:00+00:00"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("AIRFLOW_CONN_OSMS_ALERT_WEBHOOK", "AIRFLOW_VAR_OSMS_ALERT_WEBHOOK_CONN",
                 "AIRFLOW_VAR_OSMS_NOTICE_LANGUAGE", "OSMS_ALERT_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OSMS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def held(kind: str = "feeds_not_published", run_id: str = RUN) -> Notice:
    return Notice(kind=kind, dag_id="agency_science", run_id=run_id, day=DAY, fields={"body": "science"},
                  feeds={"students.egov_portal": "held_back", "students.nedb": "failed"})


def outbox(data: Path) -> dict[str, list[str]]:
    folder = data / "alerts" / DAY.isoformat()
    return {suffix: sorted(p.name for p in folder.glob(f"*{suffix}")) for suffix in (".json", ".sent", ".tries")}


def test_a_notice_is_posted_and_marked_sent_once_accepted(monkeypatch, isolated):
    _connection(monkeypatch)
    hook = Webhook(200)

    said = send_notice(held(), session=hook.session, backoff=0)

    assert said == "posted to connection osms_alert_webhook (HTTP 200)"
    [seen] = hook.requests
    assert seen.url == "https://alerts.test:8443/hooks/osms" and seen.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(seen.content)
    assert body["kind"] == "feeds_not_published" and body["run_id"] == RUN and body["day"] == "2025-06-01"
    assert body["message"] == ("Ministry of Science and Higher Education on 2025-06-01: feeds not published: 2"
                               " (students.egov_portal held back, students.nedb failed).")
    assert body["messages"]["ru"].startswith("Министерство науки и высшего образования Республики Казахстан")
    assert body["messages"]["kk"].startswith("Қазақстан Республикасының Ғылым және жоғары білім министрлігі")
    assert json.loads(body["details"])["feeds"] == {"students.egov_portal": "held_back", "students.nedb": "failed"}
    assert len(outbox(isolated)[".sent"]) == 1


def test_a_webhook_that_refuses_twice_still_gets_the_notice(monkeypatch, isolated):
    _connection(monkeypatch)
    hook = Webhook(503, 503, 200)

    said = send_notice(held(), session=hook.session, backoff=0)

    assert said.endswith("(HTTP 200)") and len(hook.requests) == 3
    assert len(outbox(isolated)[".sent"]) == 1


def test_a_notice_not_accepted_is_kept_and_sent_by_a_later_try(monkeypatch, isolated):
    # Arrange: the webhook is down for the whole first try
    _connection(monkeypatch)
    down = Webhook(503)
    first = send_notice(held(), session=down.session, backoff=0)
    assert first.startswith("not accepted yet") and len(down.requests) == 4
    assert outbox(isolated)[".sent"] == [] and len(outbox(isolated)[".tries"]) == 1

    # Act: an immediate retry waits its turn; one after the backoff posts it
    up = Webhook(200)
    flush_outbox(session=up.session, backoff=0)
    assert up.requests == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    monkeypatch.setattr(notices, "_now", lambda: later)
    flush_outbox(session=up.session, backoff=0)

    # Assert
    assert len(up.requests) == 1 and json.loads(up.requests[0].content)["run_id"] == RUN
    assert len(outbox(isolated)[".sent"]) == 1


def test_a_second_notice_of_the_same_run_and_kind_is_a_duplicate(monkeypatch, isolated):
    _connection(monkeypatch)
    hook = Webhook(200)

    send_notice(held(), session=hook.session, backoff=0)
    again = send_notice(held(), session=hook.session, backoff=0)
    other_run = send_notice(held(run_id="manual__2025-06-01"), session=hook.session, backoff=0)
    other_kind = send_notice(held(kind="agency_run_failed"), session=hook.session, backoff=0)

    assert again == "already noticed for this run"
    assert other_run.endswith("(HTTP 200)") and other_kind.endswith("(HTTP 200)")
    assert len(hook.requests) == 3


def test_a_refused_notice_is_not_retried_at_once_nor_marked_sent(monkeypatch, isolated):
    _connection(monkeypatch)
    hook = Webhook(403)

    said = send_notice(held(), session=hook.session, backoff=0)

    assert "HTTP 403" in said and len(hook.requests) == 1
    assert outbox(isolated)[".sent"] == []


def test_a_notice_never_fails_nor_holds_the_task(monkeypatch, isolated):
    _connection(monkeypatch)

    def slow(_seen):
        time.sleep(3)

    hook = Webhook(slow)
    t0 = time.perf_counter()
    said = send_notice(held(), session=hook.session, backoff=0, wait=0.5)
    assert time.perf_counter() - t0 < 2.5
    assert said == "sending (kept in the outbox until accepted)"

    def broken(_seen):
        raise requests.ConnectionError("refused")

    assert send_notice(held(kind="chain_refused"), session=Webhook(broken).session, backoff=0).startswith(
        "not accepted yet")


def test_without_the_connection_the_notice_is_only_logged(isolated, caplog):
    said = send_notice(held())

    assert said == "logged, not posted: connection osms_alert_webhook not defined"
    assert "NOTICE feeds_not_published" in caplog.text and "not configured" in caplog.text


def test_the_notice_language_variable_chooses_the_message(monkeypatch, isolated):
    _connection(monkeypatch)
    monkeypatch.setenv("AIRFLOW_VAR_OSMS_NOTICE_LANGUAGE", "ru")
    hook = Webhook(200)

    send_notice(Notice(kind="delivery_waiting", dag_id="osms_daily_package", run_id=RUN, day=DAY,
                       fields={"previous": "2025-05-31"}), session=hook.session, backoff=0)

    body = json.loads(hook.requests[0].content)
    assert body["language"] == "ru"
    assert body["message"] == "Пакет за 2025-06-01 ждёт, пока не будет доставлен пакет за 2025-05-31."


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("language", ["en", "kk", "ru"])
def test_every_kind_reads_in_every_language(kind, language):
    notice = Notice(kind=kind, dag_id="agency_labour", run_id=RUN, day=DAY,
                    fields={"body": "labour", "previous": "2025-05-31"},
                    feeds={"labour.payments.pensioners": "held_back"})
    text = notice.message(language)
    assert "2025-06-01" in text and "{" not in text


def test_the_failure_callback_of_the_dag_processor_posts_the_run(monkeypatch, isolated):
    hook, run = _callback_of(monkeypatch, "agency_labour")

    OsmsNotifier("agency_run_failed").notify({"dag_run": run, "reason": "task_failure"})

    body = json.loads(hook.requests[0].content)
    assert (body["kind"], body["dag_id"], body["day"]) == ("agency_run_failed", "agency_labour", "2025-06-01")
    assert "Ministry of Labour" in body["message"]


def test_the_notifier_posts_when_airflow_hands_it_a_serialized_dag(monkeypatch, isolated):
    # airflow dags test and dag.test() call DAG callbacks with a SerializedDAG, which has no template environment
    hook, run = _callback_of(monkeypatch, "osms_daily_package")

    OsmsNotifier("package_run_failed")({"dag_run": run, "dag": SimpleNamespace(dag_id="osms_daily_package")})

    assert json.loads(hook.requests[0].content)["kind"] == "package_run_failed"


def _callback_of(monkeypatch, dag_id, minute=30):
    """A webhook that accepts, posted to through the notifier, and a run of ``dag_id`` for 2025-06-01."""
    _connection(monkeypatch)
    hook = Webhook(200)
    monkeypatch.setattr(notices, "_post_one", _with_session(notices._post_one, hook.session))
    run = SimpleNamespace(dag_id=dag_id, run_id=RUN, data_interval_start=None,
                          logical_date=dt.datetime(2025, 5, 31, 19, minute, tzinfo=dt.UTC))
    return hook, run


def _with_session(post_one, session):
    def post(*args, **kwargs):
        return post_one(*args, **{**kwargs, "session": session, "backoff": 0})
    return post


def test_the_dags_fail_loudly_through_the_notifier_and_smtp_beside_it(monkeypatch):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from osms.orchestration.dag_factory import build_agency_dag
    from osms.orchestration.package_dag import build_package_dag

    [agency] = build_agency_dag("courts").on_failure_callback
    [package] = build_package_dag().on_failure_callback
    assert (type(agency), agency.kind) == (OsmsNotifier, "agency_run_failed")
    assert (type(package), package.kind) == (OsmsNotifier, "package_run_failed")
    monkeypatch.setenv("OSMS_ALERT_EMAIL", "duty@osms.invalid, qa@osms.invalid")
    ours, mail = failure_notifiers("package_run_failed")
    assert isinstance(ours, OsmsNotifier) and isinstance(mail, SmtpNotifier)
    assert mail.to == ["duty@osms.invalid", "qa@osms.invalid"]


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown notice kind"):
        Notice(kind="something", dag_id="d", run_id="r", day=DAY)


def test_a_failed_package_run_says_whether_its_package_was_delivered(monkeypatch, isolated):
    hook, run = _callback_of(monkeypatch, "osms_daily_package", minute=45)
    (isolated / "packages" / "2025-06-01").mkdir(parents=True)
    (isolated / "packages" / "2025-06-01" / "receipt.json").write_text("{}")

    OsmsNotifier("package_run_failed").notify({"dag_run": run})

    body = json.loads(hook.requests[0].content)
    assert body["message"] == ("The run of osms_daily_package for 2025-06-01 failed: the package of 2025-06-01 was"
                               " delivered, but a task of the run failed (see the run in Airflow).")
    assert "пакет за 2025-06-01 доставлен" in body["messages"]["ru"]
