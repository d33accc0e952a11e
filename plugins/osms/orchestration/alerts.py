"""Deadline alert of the daily package: D's package is due at the State Corporation by D+1 07:00 Almaty.

For operators: the package for D must reach the State Corporation by 07:00 Asia/Almaty on D+1.
If a run of ``osms_daily_package`` has not delivered it by then (still waiting for bodies, retrying
the delivery, or failed), Airflow marks the run's deadline missed and the triggerer raises the
alert: one ERROR line in the triggerer's log (DAG, run, D, deadline; no personal data) and a JSON
POST ``{dag_id, run_id, day, deadline, message}`` to the Airflow HTTP connection
``osms_alert_webhook``, for example ``AIRFLOW_CONN_OSMS_ALERT_WEBHOOK='{"conn_type": "http",
"host": "https://alerts.example.kz/hooks/osms", "password": "<token>"}'`` (the password, if any, is
sent as a bearer token; ``host``, ``port``, ``schema`` and an extra ``endpoint`` path work too). To
use another connection, set the Airflow variable ``osms_alert_webhook_conn`` to its id. Without the
connection the alert is only logged, with a warning that the webhook is not configured. The POST is
tried up to 4 times as the pipeline's HTTP client's policy says (server errors, 408, 429 after its
Retry-After, connection errors and timeouts); a POST that still fails is logged with the connection
id and the HTTP status, never the token or the URL. Backfill runs never alert, nor
does a run for a D whose package already has a receipt received by the deadline (e.g. a manual
rerun of a delivered day). The triggerer must be running (the status sensors need it too) with the
same ``OSMS_DATA_DIR`` as the workers; if it cannot see the receipt, it alerts.

How (for engineers): the DAG carries one ``DeadlineAlert`` (Airflow's deadline feature) whose
reference is ``PackageDue`` below, a custom deadline reference registered by the project's plugin
(``plugins/osms_ui_plugin.py``): when Airflow creates a run it asks the reference for the run's
deadline, and it answers D+1 07:00 Almaty by the calendar, so the deadline holds across Almaty's
offset change (+06:00 before 2024-03-01, +05:00 since), and no deadline at all for a backfill run.
D is the run's date as every task reads it (``osms.orchestration.dag_factory.run_day``), so a manual run for D
is due when the scheduled one is. Airflow drops the deadline when the run succeeds before it, and
otherwise hands the callback below to the triggerer once it has passed; the callback checks the
run type too (runs created before this reference had interval deadlines, backfills included). The
connection id is read when the alert fires, so changing the variable needs no redeploy. Runs of
``airflow dags test`` (``osms run``) carry no deadline (the reference answers none for them): the
engineer running one watches it, and a scheduler sharing the database must not alert on it later.
``dag.test()`` of Airflow 3.3 cannot finish a DAG that has a deadline at all; the plugin mends that
(``osms.orchestration.compat``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from airflow.sdk.definitions.deadline import BaseDeadlineReference

from osms.core.dates import almaty

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "osms_alert_webhook"
CONN_ID_VARIABLE = "osms_alert_webhook_conn"
# Airflow's DagRunType.BACKFILL_JOB, as the run appears in the callback's context
BACKFILL = "backfill"
# Airflow's DagRunTriggeredByType.TEST: a run of dag.test(), which `airflow dags test` and `osms run` use
TEST = "test"
# D's package is due at the State Corporation on D+1 at this Almaty wall-clock time
DUE_DAYS_AFTER = 1
DUE_TIME = dt.time(7, 0)
# A chat or paging webhook answers within seconds; 4 tries over ~14 s (2, 4, 8 s apart) ride
# out a restart of the receiver without holding the triggerer's attention for long; a Retry-After
# is honoured up to POST_BACKOFF_MAX.
POST_ATTEMPTS = 4
POST_BACKOFF = 2.0
POST_BACKOFF_MAX = 30.0
POST_TIMEOUT = 10.0


def package_due(moment: dt.datetime | None, run_type: str, triggered_by: str | None = None) -> dt.datetime | None:
    """When the package of the run whose logical date is ``moment`` is due (UTC); None for a backfill or test run."""
    from osms.core.dates import run_day

    if moment is None or getattr(run_type, "value", run_type) == BACKFILL:
        return None
    if str(getattr(triggered_by, "value", triggered_by)).lower() == TEST:  # the enum, or its stored name
        return None  # dag.test() / `airflow dags test`: the engineer running it watches it, no scheduler does
    day = run_day({"logical_date": _aware(moment)})
    due = dt.datetime.combine(day + dt.timedelta(days=DUE_DAYS_AFTER), DUE_TIME, tzinfo=almaty())
    return due.astimezone(dt.UTC)


class PackageDue(BaseDeadlineReference):
    """Deadline reference of the package DAG: D+1 07:00 Almaty for the run's D; none for a backfill run.

    Airflow evaluates it (``_evaluate_with``) in the scheduler or the API server when it creates a
    run, and adds the DeadlineAlert's interval (zero here) to the answer; None means no deadline:
    for a backfill run, and for a run of ``dag.test()`` (``airflow dags test``, ``osms run``), which
    the engineer running it watches and no scheduler may alert on later.
    Registered through the plugin's ``deadline_references`` so Airflow can read it back from the
    serialized DAG.
    """

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Any, dag_id: str, run_id: str, **_: Any) -> dt.datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.logical_date, DagRun.data_interval_start, DagRun.run_type, DagRun.triggered_by)
            .where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one_or_none()
        if row is None:
            return None
        logical_date, interval_start, run_type, triggered_by = row
        return package_due(logical_date or interval_start, run_type, triggered_by)


class AlertNotPosted(RuntimeError):
    """The webhook did not take the alert; the message names the connection and the status, never the token."""


@dataclass(frozen=True)
class MissedDeadline:
    """A package run whose deadline passed: what the alert says."""

    dag_id: str
    run_id: str
    run_type: str
    day: dt.date
    deadline: dt.datetime  # aware, in Almaty

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> MissedDeadline:
        """Read the context Airflow gives a deadline callback (the run as the REST API shows it, the deadline)."""
        from osms.core.dates import run_day

        run = context["dag_run"]
        moments = {k: _aware(run[k]) for k in ("logical_date", "data_interval_start") if run.get(k)}
        return cls(
            dag_id=run["dag_id"],
            run_id=run["dag_run_id"],
            run_type=str(run.get("run_type") or ""),
            day=run_day(moments),
            deadline=_aware(context["deadline"]["deadline_time"]).astimezone(almaty()),
        )

    @property
    def message(self) -> str:
        """One line for people: which package, which deadline, which run."""
        return (f"package for {self.day.isoformat()} not delivered to the State Corporation by its deadline"
                f" {self.deadline.isoformat()} ({self.dag_id}, run {self.run_id})")

    def as_json(self) -> dict[str, str]:
        """The webhook's body."""
        return {"dag_id": self.dag_id, "run_id": self.run_id, "day": self.day.isoformat(),
                "deadline": self.deadline.isoformat(), "message": self.message}


@dataclass(frozen=True)
class Webhook:
    """Where the alert goes: URL and optional bearer token of an Airflow HTTP connection."""

    conn_id: str
    url: str
    token: str | None = None

    def __repr__(self) -> str:  # the URL of a chat webhook may carry its secret too
        return f"Webhook(conn_id={self.conn_id!r})"


async def package_deadline_missed(context: dict[str, Any]) -> str:
    """Deadline callback of the package DAG (runs in the triggerer): log and post the alert, unless not due."""
    return await handle_missed_deadline(context)


async def handle_missed_deadline(context: dict[str, Any], *, session: Any = None,
                                 backoff: float = POST_BACKOFF) -> str:
    """Alert for a missed package deadline; return the outcome in a few words (Airflow keeps it as text).

    ``session`` (a requests session, e.g. with a test adapter) and ``backoff`` are for tests.
    """
    # off the event loop: reading D imports the pipeline's date rules (and the triggerer runs other triggers)
    missed = await asyncio.to_thread(MissedDeadline.from_context, context)
    if missed.run_type == BACKFILL:
        log.info("deadline %s of %s run %s (D=%s) passed: a backfill run, no alert", missed.deadline.isoformat(),
                 missed.dag_id, missed.run_id, missed.day)
        return "no alert: backfill run"
    received_at = await asyncio.to_thread(delivered_at, missed.day)
    if received_at is not None and received_at <= missed.deadline:
        log.info("deadline %s of %s run %s (D=%s) passed, but the package was delivered at %s: no alert",
                 missed.deadline.isoformat(), missed.dag_id, missed.run_id, missed.day, received_at.isoformat())
        return f"no alert: delivered at {received_at.isoformat()}"

    log.error("DEADLINE MISSED: %s", missed.message)
    conn_id = await asyncio.to_thread(webhook_conn_id)
    webhook = await webhook_of(conn_id)
    if webhook is None:
        log.warning("alert webhook not configured: Airflow connection %r is not defined (set AIRFLOW_CONN_%s, or"
                    " the variable %s to another connection id); the alert for run %s is only in this log",
                    conn_id, conn_id.upper(), CONN_ID_VARIABLE, missed.run_id)
        return f"alert logged, not posted: connection {conn_id} not defined"
    try:
        status = await post_alert(webhook, missed.as_json(), session=session, backoff=backoff)
    except AlertNotPosted as exc:
        log.error("alert for run %s not posted: %s", missed.run_id, exc)
        raise
    log.info("alert for run %s posted to connection %s (HTTP %s)", missed.run_id, conn_id, status)
    return f"alert posted to connection {conn_id} (HTTP {status})"


def delivered_at(day: dt.date) -> dt.datetime | None:
    """When the State Corporation received D's package, by its receipt under ``OSMS_DATA_DIR`` (None: no receipt)."""
    from osms.core import layout
    from osms.package.deliver import read_receipt

    receipt = read_receipt(layout.package_dir(layout.data_dir(), day))
    if receipt is None:
        return None
    try:
        return _aware(receipt.received_at)
    except ValueError:
        return None  # a receipt that does not say when cannot show the deadline was met


def webhook_conn_id() -> str:
    """The alert connection's id: the variable ``osms_alert_webhook_conn`` if set, else ``osms_alert_webhook``."""
    from airflow.sdk import Variable

    try:
        name = Variable.get(CONN_ID_VARIABLE, default=None)
    except Exception as exc:  # the alert must still go out: to the default connection
        log.warning("variable %s not readable (%s): posting to connection %s", CONN_ID_VARIABLE,
                    type(exc).__name__, DEFAULT_CONN_ID)
        return DEFAULT_CONN_ID
    return (name or "").strip() or DEFAULT_CONN_ID


async def webhook_of(conn_id: str) -> Webhook | None:
    """The webhook of an Airflow HTTP connection, or None when the connection is not defined."""
    from osms.sources.connections import read_connection_async

    conn = await read_connection_async(conn_id)
    return None if conn is None else Webhook(conn_id=conn_id, url=conn.url, token=conn.token)


async def post_alert(webhook: Webhook, body: dict[str, str], *, session: Any = None,
                     attempts: int = POST_ATTEMPTS, backoff: float = POST_BACKOFF) -> int:
    """POST the alert (off the event loop) as the HTTP client's policy says; return the HTTP status."""
    return await asyncio.to_thread(send_alert, webhook, body, session=session, attempts=attempts, backoff=backoff)


def send_alert(webhook: Webhook, body: dict[str, str], *, session: Any = None, attempts: int = POST_ATTEMPTS,
               backoff: float = POST_BACKOFF) -> int:
    """POST the alert through the pipeline's HTTP client; AlertNotPosted naming connection and status otherwise."""
    from osms.sources.http_client import HttpClient, Refused, RetryPolicy, Transient

    policy = RetryPolicy(attempts=attempts, backoff_base=backoff, backoff_max=POST_BACKOFF_MAX)
    # shown_as=None: the URL of a chat webhook is its secret, so a failure names the connection only
    client = HttpClient(token=webhook.token, timeout=POST_TIMEOUT, policy=policy, session=session, log=log)
    try:
        answer = client.request("POST", webhook.url, what=f"alert POST to connection {webhook.conn_id}",
                                ok=range(200, 300), json=body, allow_redirects=False)
    except Transient as exc:
        raise AlertNotPosted(f"connection {webhook.conn_id}: {_cause(exc)} after {exc.attempts} tries") from None
    except Refused as exc:
        raise AlertNotPosted(f"connection {webhook.conn_id}: HTTP {exc.status} (not retried)") from None
    finally:
        if session is None:
            client.close()
    return answer.status


def _cause(exc: BaseException | None) -> str:
    """The status, or the kind of failure; never an endpoint's text (it could name the URL)."""
    from osms.sources.http_client import Transient

    if isinstance(exc, Transient):
        return f"HTTP {exc.status}" if exc.status is not None else exc.cause
    return type(exc).__name__ if exc is not None else "unknown"


def _aware(value: Any) -> dt.datetime:
    """A datetime from the callback's context or a receipt (ISO text or datetime); naive counts as UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
