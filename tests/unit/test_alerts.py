"""The package deadline alert without a network: the DAG's deadline, the callback, the webhook client.

The webhook is answered by a requests transport adapter (the HTTP client's seam); connections and
variables are given as ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*``, as in production. The real scheduler
and triggerer firing the callback are exercised in ``tests/integration/test_deadline.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pendulum
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from osms.orchestration import alerts
from osms.orchestration.package_dag import DAG_ID, build_package_dag

pytestmark = pytest.mark.unit

ALMATY = ZoneInfo("Asia/Almaty")
TOKEN = "alert-webhook-token-4711"
RUN_ID = "manual__2025-06-01T00:45:00+05:00"
DAY = dt.date(2025, 6, 1)
DEADLINE = dt.datetime(2025, 6, 2, 7, 0, tzinfo=ALMATY)


@pytest.fixture(scope="module")
def dag():
    return build_package_dag()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No alert connection or variable unless a test gives one; an empty data directory."""
    monkeypatch.delenv("AIRFLOW_CONN_OSMS_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_OSMS_ALERT_WEBHOOK_CONN", raising=False)
    monkeypatch.setenv("OSMS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = "osms_alert_webhook", **fields: Any) -> None:
    conn = {"conn_type": "http", "host": "alerts.test", "port": 8443, "schema": "https", "password": TOKEN,
            "extra": {"endpoint": "/hooks/osms"}} | fields
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _context(run_type: str = "manual", run_id: str = RUN_ID, deadline: Any = None) -> dict[str, Any]:
    """What Deadline.handle_miss gives the callback: the run as the REST API shows it, and the deadline."""
    logical = dt.datetime(2025, 6, 1, 0, 45, tzinfo=ALMATY).astimezone(dt.UTC)
    return {
        "dag_run": {
            "dag_run_id": run_id, "dag_id": DAG_ID, "run_type": run_type, "state": "running",
            "logical_date": logical.isoformat().replace("+00:00", "Z"),
            "data_interval_start": logical.isoformat().replace("+00:00", "Z"),
            "data_interval_end": (logical + dt.timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            "conf": {},
        },
        "deadline": {"id": "0196d7a4-0000-7000-8000-000000000001",
                     "deadline_time": deadline or DEADLINE.astimezone(dt.UTC)},
    }


class Seen:
    """A request as the webhook received it."""

    def __init__(self, request: requests.PreparedRequest) -> None:
        self.method, self.url = request.method, request.url
        self.headers = CaseInsensitiveDict(request.headers)
        body = request.body or b""
        self.content = body.encode() if isinstance(body, str) else body


class Webhook(BaseAdapter):
    """Records the requests; answers each with the next scripted status (or raises the scripted error)."""

    def __init__(self, *answers: int | Callable[[Seen], Any]) -> None:
        super().__init__()
        self.answers = list(answers) or [200]
        self.requests: list[Seen] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        seen = Seen(request)
        self.requests.append(seen)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if callable(answer):
            answer(seen)
        response = requests.Response()
        response.status_code = answer if isinstance(answer, int) else 200
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.raw = io.BytesIO(b'{"ok": true}')
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass

    @property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount("http://", self)
        session.mount("https://", self)
        return session


def _run(context: dict[str, Any], webhook: Webhook) -> str:
    return asyncio.run(alerts.handle_missed_deadline(context, session=webhook.session, backoff=0))


def _write_receipt(data: Path, day: dt.date, received_at: str) -> None:
    package = data / "packages" / day.isoformat()
    package.mkdir(parents=True)
    (package / "receipt.json").write_text(json.dumps({
        "receipt_id": "r-1", "package_id": f"osms-{day}", "manifest_sha256": "a" * 64,
        "logical_date": day.isoformat(), "received_at": received_at, "files": 4}))


# ----------------------------------------------------------------------------- the DAG's deadline


def _stored_alert(dag):
    """The DAG's deadline alert, as the DAG processor stores it (JSON), and as the scheduler reads it back."""
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.encoders import encode_deadline_alert

    [alert] = dag.deadline
    stored = json.loads(json.dumps(encode_deadline_alert(alert)))
    return alert, stored, decode_deadline_alert(stored)


def test_dag_has_one_deadline_alert_that_serializes(dag) -> None:
    from airflow.sdk import AsyncCallback

    # act: what the DAG processor stores and the scheduler reads back (the plugin registers the reference)
    alert, stored, read = _stored_alert(dag)
    # assert
    assert isinstance(alert.reference, alerts.PackageDue)
    assert isinstance(alert.callback, AsyncCallback)  # runs in the triggerer, on any executor
    assert alert.callback.path == "osms.orchestration.alerts.package_deadline_missed" and alert.callback.kwargs == {}
    assert json.dumps(stored).count("osms.orchestration.alerts.PackageDue") == 1  # the reference's class path
    assert isinstance(read.reference.inner_ref, alerts.PackageDue)
    assert read.interval == dt.timedelta(0)


def test_reference_needs_the_plugin() -> None:
    """Without the plugin's registration Airflow refuses to read the reference back: the plugin lists it."""
    from airflow import plugins_manager

    assert plugins_manager.get_deadline_references_plugins()["osms.orchestration.alerts.PackageDue"] is alerts.PackageDue


def _scheduled_logical_date(dag, day: dt.date) -> dt.datetime:
    """The logical date of the scheduled run for D, as the scheduler computes it."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    earliest = pendulum.datetime(day.year, day.month, day.day, tz="Asia/Almaty")
    info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=earliest, latest=None, catchup=True))
    return info.logical_date


class _Session:
    """Answers the reference's one query with the given run row, as the metadata database would."""

    def __init__(self, row: tuple | None) -> None:
        self.row = row
        self.statements: list[Any] = []

    def execute(self, statement: Any) -> Any:
        self.statements.append(statement)
        row = self.row

        class Result:
            def one_or_none(self) -> tuple | None:
                return row

        return Result()


def _deadline(dag, logical: dt.datetime | None, run_type: str, interval_start: dt.datetime | None = None):
    """The deadline Airflow creates for a run (reference evaluated through the serialized DAG, plus interval)."""
    _, _, stored = _stored_alert(dag)
    session = _Session((logical, interval_start or logical, run_type))
    deadline = stored.reference.evaluate_with(session=session, interval=stored.interval,
                                              dag_id=DAG_ID, run_id="r1")
    assert len(session.statements) == 1
    return deadline


@pytest.mark.parametrize(("day", "utc_hour"), [
    (dt.date(2022, 9, 26), 1),   # the first day, UTC+6
    (dt.date(2024, 2, 28), 1),   # UTC+6 at both ends
    (dt.date(2024, 2, 29), 2),   # the night Almaty moved from UTC+6 to UTC+5: still 07:00 local
    (dt.date(2024, 3, 1), 2),    # UTC+5 since 2024-03-01 00:00
    (dt.date(2025, 6, 1), 2),
    (dt.date(2026, 12, 31), 2),  # across a year end
])
def test_deadline_is_next_day_seven_in_almaty(dag, day: dt.date, utc_hour: int) -> None:
    from osms.orchestration.dag_factory import run_day

    # arrange
    logical = _scheduled_logical_date(dag, day)
    # act
    deadline = _deadline(dag, logical, "scheduled")
    # assert
    assert run_day({"logical_date": logical}) == day
    local = deadline.astimezone(ALMATY)
    assert (local.date(), local.time()) == (day + dt.timedelta(days=1), dt.time(7, 0))
    assert deadline.astimezone(dt.UTC).hour == utc_hour  # one local time, two UTC offsets


def test_manual_run_is_due_when_the_scheduled_run_of_its_day_is(dag) -> None:
    # a manual run for D keeps the logical date the operator typed, any time of D in Almaty
    for local_time in (dt.time(0, 0), dt.time(0, 45), dt.time(23, 59)):
        logical = dt.datetime.combine(DAY, local_time, tzinfo=ALMATY).astimezone(dt.UTC)
        assert _deadline(dag, logical, "manual") == DEADLINE


def test_backfill_and_dateless_runs_get_no_deadline(dag) -> None:
    logical = _scheduled_logical_date(dag, DAY)
    assert _deadline(dag, logical, "backfill") is None
    assert _deadline(dag, None, "asset_triggered", interval_start=None) is None
    # a run the database no longer has
    _, _, stored = _stored_alert(dag)
    assert stored.reference.evaluate_with(session=_Session(None), interval=stored.interval,
                                          dag_id=DAG_ID, run_id="gone") is None


def test_reference_requires_the_run() -> None:
    with pytest.raises(ValueError, match="missing required parameters"):
        from airflow.serialization.definitions.deadline import SerializedReferenceModels

        SerializedReferenceModels.SerializedCustomReference(alerts.PackageDue()).evaluate_with(
            session=_Session(None), interval=dt.timedelta(0), dag_id=DAG_ID)


def test_no_deadline_where_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``osms run`` runs ``dag.test()``, where Airflow 3.3.2 fails a succeeded run with a deadline: its settings say off."""
    from osms.dev.local_run import airflow_env

    monkeypatch.setenv("OSMS_DEADLINE_ALERTS", airflow_env(Path("/tmp/osms-test"), {})["OSMS_DEADLINE_ALERTS"])
    assert not build_package_dag().deadline
    monkeypatch.delenv("OSMS_DEADLINE_ALERTS")
    assert len(build_package_dag().deadline) == 1


# ----------------------------------------------------------------------------- the callback


def test_alert_is_logged_and_posted(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # arrange
    _connection(monkeypatch)
    webhook = Webhook(200)
    # act
    with caplog.at_level(logging.INFO, logger="osms.orchestration.alerts"):
        result = _run(_context(), webhook)
    # assert
    assert result == "alert posted to connection osms_alert_webhook (HTTP 200)"
    [request] = webhook.requests
    assert request.method == "POST" and str(request.url) == "https://alerts.test:8443/hooks/osms"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert body == {
        "dag_id": DAG_ID,
        "run_id": RUN_ID,
        "day": "2025-06-01",
        "deadline": "2025-06-02T07:00:00+05:00",
        "message": f"package for 2025-06-01 not delivered to the State Corporation by its deadline"
                   f" 2025-06-02T07:00:00+05:00 ({DAG_ID}, run {RUN_ID})",
    }
    [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(s in line.getMessage() for s in (DAG_ID, RUN_ID, "2025-06-01", "2025-06-02T07:00:00+05:00"))
    assert TOKEN not in caplog.text


def test_whole_url_in_host_and_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, host="https://hooks.chat.test/services/T0/B1/XYZ", port=None, schema=None,
                password=None, extra=None)
    webhook = Webhook(200)
    _run(_context(), webhook)
    [request] = webhook.requests
    assert str(request.url) == "https://hooks.chat.test/services/T0/B1/XYZ"
    assert "authorization" not in request.headers


def test_variable_names_another_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch)  # the default one exists, but the variable points elsewhere
    _connection(monkeypatch, conn_id="ops_pager", host="pager.test", schema="http", port=8080,
                extra={"endpoint": "alerts", "allow_plain_http": True})  # plain http to another host: said so
    monkeypatch.setenv("AIRFLOW_VAR_OSMS_ALERT_WEBHOOK_CONN", "ops_pager")
    webhook = Webhook(202)
    assert _run(_context(), webhook) == "alert posted to connection ops_pager (HTTP 202)"
    assert str(webhook.requests[0].url) == "http://pager.test:8080/alerts"


def test_missing_connection_logs_the_alert_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # arrange: no AIRFLOW_CONN_OSMS_ALERT_WEBHOOK (autouse fixture)
    webhook = Webhook(200)
    # act
    with caplog.at_level(logging.INFO, logger="osms.orchestration.alerts"):
        result = _run(_context(), webhook)
    # assert
    assert result == "alert logged, not posted: connection osms_alert_webhook not defined"
    assert webhook.requests == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1 and RUN_ID in errors[0]
    assert len(warnings) == 1 and "webhook not configured" in warnings[0] and "osms_alert_webhook" in warnings[0]


def test_backfill_run_does_not_alert(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from airflow.utils.types import DagRunType

    _connection(monkeypatch)
    webhook = Webhook(200)
    with caplog.at_level(logging.INFO, logger="osms.orchestration.alerts"):
        result = _run(_context(run_type=DagRunType.BACKFILL_JOB.value, run_id="backfill__2025-06-01"), webhook)
    assert result == "no alert: backfill run"
    assert webhook.requests == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_package_delivered_by_the_deadline_does_not_alert(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    """E.g. a run that delivered and then failed in its report, or a manual rerun of a delivered day."""
    _connection(monkeypatch)
    _write_receipt(isolated, DAY, "2025-06-01T20:12:03.456Z")  # 01:12 Almaty on D+1
    webhook = Webhook(200)
    assert _run(_context(), webhook) == "no alert: delivered at 2025-06-01T20:12:03.456000+00:00"
    assert webhook.requests == []


def test_package_delivered_after_the_deadline_alerts(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    _connection(monkeypatch)
    _write_receipt(isolated, DAY, "2025-06-02T02:00:00.001Z")  # 07:00:00.001 Almaty on D+1
    webhook = Webhook(200)
    assert _run(_context(), webhook).startswith("alert posted")


def test_deadline_given_as_text_is_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch)
    webhook = Webhook(200)
    _run(_context(deadline="2025-06-02T02:00:00+00:00"), webhook)
    assert json.loads(webhook.requests[0].content)["deadline"] == "2025-06-02T07:00:00+05:00"


# ----------------------------------------------------------------------------- the webhook client


def test_server_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch)
    webhook = Webhook(503, 502, 200)
    assert _run(_context(), webhook).startswith("alert posted")
    assert len(webhook.requests) == 3
    assert len({r.content for r in webhook.requests}) == 1  # the same alert each time


def test_connection_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: Seen) -> None:
        raise requests.ConnectionError("connection refused")

    _connection(monkeypatch)
    webhook = Webhook(refuse, 200)
    assert _run(_context(), webhook).startswith("alert posted")
    assert len(webhook.requests) == 2


def test_failed_post_is_logged_with_connection_and_status_not_token(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # arrange
    _connection(monkeypatch)
    webhook = Webhook(503)
    # act
    with caplog.at_level(logging.INFO, logger="osms.orchestration.alerts"), pytest.raises(alerts.AlertNotPosted) as raised:
        _run(_context(), webhook)
    # assert
    assert len(webhook.requests) == alerts.POST_ATTEMPTS
    assert "osms_alert_webhook" in str(raised.value) and "HTTP 503" in str(raised.value)
    failed = [r.getMessage() for r in caplog.records if "not posted" in r.getMessage()]
    assert len(failed) == 1 and "osms_alert_webhook" in failed[0] and "HTTP 503" in failed[0]
    assert TOKEN not in caplog.text and TOKEN not in str(raised.value)
    assert "alerts.test" not in caplog.text  # nor the URL, which for some webhooks is the secret


def test_client_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch)
    webhook = Webhook(401)
    with pytest.raises(alerts.AlertNotPosted, match="HTTP 401"):
        _run(_context(), webhook)
    assert len(webhook.requests) == 1


def test_webhook_repr_hides_the_url_and_token() -> None:
    hook = alerts.Webhook(conn_id="c", url="https://hooks.chat.test/T0/secret", token=TOKEN)
    assert "secret" not in repr(hook) and TOKEN not in repr(hook)
