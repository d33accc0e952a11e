"""Notices: what people must hear within a minute, posted through an Airflow notifier and never lost silently.

Kinds (one notice per run and kind; :data:`KINDS`):

=======================  ====================================================  ===========================
kind                     when                                                  sent by
=======================  ====================================================  ===========================
``agency_run_failed``    a body's DAG run failed                               the DAG's failure callback
``package_run_failed``   a run of the package DAG failed                       the DAG's failure callback
``chain_refused``        D's package cannot be chained (``ChainBroken``, 409)  the package task that saw it
``delivery_waiting``     D's package waits for D-1's delivery                  ``previous_package_delivered``
``feeds_not_published``  a body's feeds held back or failed on D               ``publish_status``
``qa_decision_waiting``  D's package went out with held-back feeds undecided   ``build_package``
=======================  ====================================================  ===========================

:class:`OsmsNotifier` is an Airflow notifier (``BaseNotifier``): the DAGs use it as their
``on_failure_callback``, beside Airflow's own ``SmtpNotifier`` when ``OSMS_ALERT_EMAIL``
names recipients (:func:`failure_notifiers`); tasks call :func:`send_notice`.

A notice goes to the webhook connection ``osms_alert_webhook`` (or the one the variable
``osms_alert_webhook_conn`` names) as JSON: ``kind``, ``dag_id``, ``run_id``, ``day``,
``message`` (in the language of the variable ``osms_notice_language``: ``en``, ``kk`` or
``ru``; English by default), ``messages`` (all three), ``language`` and ``details``
(names and counts, as a JSON string). It carries counts and the codes and names of bodies,
systems, categories and feeds only: never a record.

Delivery, so that a notice is neither lost nor repeated: the notice is first written to
the outbox, ``alerts/D/<dag_id>.<kind>.<run_id>.json``, created exclusively (a second
notice of the same run and kind is a duplicate, and is dropped), and listed in
``alerts/pending/``; it is marked sent (``.sent`` beside it) and leaves the list only once
the webhook answered 2xx. The POST runs in a thread the
caller waits for at most :data:`WAIT_SECONDS` (a task is never held longer, and never
fails because of a notice), retried with backoff by the pipeline's HTTP client (4 tries,
2, 4, 8 s apart: a webhook that refuses twice still gets it in seconds). A notice still
unsent is retried by every later send and by the package DAG's ``report`` task, each
time a little later (1, 2, 4 ... minutes, at most an hour apart), for
:data:`GIVE_UP_AFTER`; then it is dropped with an error in the log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier

from osms.core import layout, settings
from osms.core.i18n import DEFAULT, LANGUAGES, N_, STATUS_LABELS, gettext_for, local_name

__all__ = ["KINDS", "Notice", "OsmsNotifier", "failure_notifiers", "flush_outbox", "notice_of", "run_of",
           "send_notice"]

log = logging.getLogger(__name__)

LANGUAGE_VARIABLE = "osms_notice_language"
EMAIL_ENV = "OSMS_ALERT_EMAIL"  # comma-separated recipients of Airflow's SmtpNotifier (failed runs)
SMTP_CONN_ENV = "OSMS_ALERT_SMTP_CONN"  # its SMTP connection (default smtp_default)
# How long a caller waits for its notice's POST (the client's 4 tries take ~14 s plus answers)
WAIT_SECONDS = 30.0
# Later tries of a notice still unsent: 1, 2, 4 ... minutes apart, at most an hour; dropped after 3 days
RETRY_FIRST = dt.timedelta(minutes=1)
RETRY_MAX = dt.timedelta(hours=1)
GIVE_UP_AFTER = dt.timedelta(days=3)
PENDING = layout.ALERTS_PENDING  # alerts/pending/<D>__<notice>: a link to each notice not done yet
OUTBOX_BATCH = 20  # notices retried per send, oldest first: a send stays bounded

# The message of each kind, with named fields; {body} and {feeds} are given in the reader's language
KINDS: dict[str, str] = {
    "agency_run_failed": N_("The run of {dag_id} for {day} failed: the data of {body} that it could not publish is"
                            " carried forward (see the run in Airflow)."),
    "package_run_failed": N_("The run of {dag_id} for {day} failed: {outcome} (see the run in Airflow)."),
    "chain_refused": N_("The delivery chain refuses the package of {day}: deliver the days the task log names"
                        " first."),
    "delivery_waiting": N_("The package of {day} waits until the package of {previous} is delivered."),
    "feeds_not_published": N_("{body} on {day}: feeds not published: {count} ({feeds})."),
    "qa_decision_waiting": N_("The package of {day} carries forward feeds held back on {day} that QA has not"
                              " decided on: {count} ({feeds}). Release them or confirm the hold on the Data"
                              " quality page."),
}


# what a failed package run left, by whether D's package has a receipt
OUTCOMES = {False: N_("the package of {day} is not delivered"),
            True: N_("the package of {day} was delivered, but a task of the run failed")}


@dataclass(frozen=True)
class Notice:
    """One notice: its kind, run, day and fields (codes, dates, counts: nothing personal)."""

    kind: str
    dag_id: str
    run_id: str
    day: dt.date
    fields: Mapping[str, Any] = field(default_factory=dict)  # the message's named fields, as codes
    feeds: Mapping[str, str] = field(default_factory=dict)  # feed (category.system) -> verdict
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r}; known: {', '.join(KINDS)}")

    def message(self, language: str) -> str:
        """The notice in one language, with the registry's names of the body in it."""
        _ = gettext_for(language)
        values = {"dag_id": self.dag_id, "day": self.day.isoformat(), "count": len(self.feeds), **self.fields}
        if "body" in self.fields:
            values["body"] = _body_name(str(self.fields["body"]), language)
        values["feeds"] = ", ".join(f"{feed} {_(STATUS_LABELS.get(v, v))}" for feed, v in sorted(self.feeds.items()))
        values["outcome"] = _(OUTCOMES[bool(self.fields.get("delivered"))]).format(day=values["day"])
        return _(KINDS[self.kind]).format(**values)

    def messages(self) -> dict[str, str]:
        """The notice in every language offered."""
        return {language: self.message(language) for language in sorted(LANGUAGES)}

    def as_json(self, language: str = DEFAULT) -> dict[str, Any]:
        """The webhook's body."""
        return {"kind": self.kind, "dag_id": self.dag_id, "run_id": self.run_id, "day": self.day.isoformat(),
                "language": language, "message": self.message(language), "messages": self.messages(),
                "details": json.dumps({**self.details, **({"feeds": dict(self.feeds)} if self.feeds else {})},
                                      sort_keys=True, ensure_ascii=False)}


def _body_name(code: str, language: str) -> str:
    from osms.core.registry import default_registry

    body = next((b for b in default_registry().all_bodies() if b.code == code), None)
    return local_name(body, language) if body is not None else code


# --------------------------------------------------------------------------- the notifier


class OsmsNotifier(BaseNotifier):
    """Airflow notifier of the OSMS notices: a DAG's ``on_failure_callback`` (kind ``*_run_failed``)."""

    template_fields = ()

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown notice kind {kind!r}")
        self.kind = kind

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render. (Airflow's own would ask the DAG for a template environment, which the
        ``SerializedDAG`` that ``airflow dags test`` and ``dag.test()`` hand DAG callbacks lacks.)"""

    def notify(self, context: Any) -> None:
        """Post the notice of a failed run (names only), once per run; never raises."""
        from osms.core.documents import RECEIPT
        from osms.core.redact import quote

        dag_id, run_id, day = run_of(context)
        fields: dict[str, Any] = {}
        if dag_id.startswith("agency_"):
            fields["body"] = dag_id.removeprefix("agency_")
        if self.kind == "package_run_failed":  # a sensor may fail a run whose package was delivered
            fields["delivered"] = (layout.paths().package_dir(day) / RECEIPT).is_file()
        send_notice(Notice(kind=self.kind, dag_id=dag_id, run_id=run_id, day=day, fields=fields,
                           details={"reason": quote(context.get("reason") or "", 200)}))


def failure_notifiers(kind: str) -> list[BaseNotifier]:
    """A DAG's failure callbacks: the OSMS notice, and Airflow's SmtpNotifier when ``OSMS_ALERT_EMAIL`` is set."""
    notifiers: list[BaseNotifier] = [OsmsNotifier(kind)]
    recipients = list(settings.current().alert_email)
    if recipients:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifiers.append(SmtpNotifier(
            to=recipients, smtp_conn_id=settings.current().alert_smtp_conn,
            subject="OSMS: {{ dag.dag_id }} failed ({{ run_id }})",
            html_content="<p>{{ dag.dag_id }}: the run {{ run_id }} failed. See it in Airflow; the OSMS notice"
                         " webhook has the details.</p>"))
    return notifiers


def run_of(context: Mapping[str, Any]) -> tuple[str, str, dt.date]:
    """(dag_id, run_id, D) of a callback's or a task's context (the run as an object or as the API's dict)."""
    from osms.core.dates import run_day

    run = context.get("dag_run")

    def attr(name: str, *alternatives: str) -> Any:
        for key in (name, *alternatives):
            value = run.get(key) if isinstance(run, Mapping) else getattr(run, key, None)
            if value is not None:
                return value
        return None

    dag = context.get("dag")
    dag_id = str(attr("dag_id") or getattr(dag, "dag_id", "") or "")
    run_id = str(attr("run_id", "dag_run_id") or context.get("run_id") or "")
    moments = {k: attr(k) for k in ("logical_date", "data_interval_start") if attr(k) is not None}
    if not moments and context.get("logical_date") is not None:
        moments = {"logical_date": context["logical_date"]}
    moments = {k: dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")) if isinstance(v, str) else v
               for k, v in moments.items()}
    return dag_id, run_id, run_day(moments)


# --------------------------------------------------------------------------- sending


def send_notice(notice: Notice, *, session: Any = None, wait: float = WAIT_SECONDS,
                backoff: float | None = None) -> str:
    """Post a notice once per run and kind, marking it sent only once the webhook accepted it; never raises.

    Returns what happened, in a few words. ``session`` and ``backoff`` are for tests.
    """
    try:
        root = layout.data_dir()
        path = _outbox_path(root, notice)
        if not _enqueue(path, notice):
            return "already noticed for this run"
        log.warning("NOTICE %s: %s", notice.kind, notice.message(DEFAULT))
        return _deliver_soon(root, first=path, session=session, wait=wait, backoff=backoff)
    except Exception as exc:  # noqa: BLE001: a notice never fails the work it reports on
        log.error("notice %s for run %s not sent: %s", notice.kind, notice.run_id, type(exc).__name__)
        return f"not sent: {type(exc).__name__}"


def flush_outbox(*, session: Any = None, wait: float = WAIT_SECONDS, backoff: float | None = None) -> str:
    """Try again the notices not accepted yet (those due); never raises."""
    try:
        return _deliver_soon(layout.data_dir(), first=None, session=session, wait=wait, backoff=backoff)
    except Exception as exc:  # noqa: BLE001
        log.error("notices not retried: %s", type(exc).__name__)
        return f"not retried: {type(exc).__name__}"


def _outbox_path(root: Path, notice: Notice) -> Path:
    name = f"{notice.dag_id}.{notice.kind}.{_safe(notice.run_id)}.json"
    return layout.Paths(root).alert(notice.day, name)


def _enqueue(path: Path, notice: Notice) -> bool:
    """Write the notice to the outbox unless this run's notice of this kind is there: False for a duplicate."""
    import tempfile

    from osms.core.files import private_dir

    private_dir(path.parent)
    record = {"notice": {"kind": notice.kind, "dag_id": notice.dag_id, "run_id": notice.run_id,
                         "day": notice.day.isoformat(), "fields": dict(notice.fields), "feeds": dict(notice.feeds),
                         "details": dict(notice.details)},
              "queued_at": _now().isoformat()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # whole, and only if absent: two tries of one run cannot both queue it
        private_dir(_pending_entry(path).parent)
        os.link(path, _pending_entry(path))  # what later sends look through
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def _deliver_soon(root: Path, *, first: Path | None, session: Any, wait: float, backoff: float | None) -> str:
    """Post ``first`` (if any) and the notices due, in a thread; wait for it at most ``wait`` seconds."""
    from osms.orchestration.alerts import CONN_ID_VARIABLE

    # read in the caller's thread: a task reads connections and variables through its supervisor
    conn_id = _variable(CONN_ID_VARIABLE, "osms_alert_webhook")
    language = _variable(LANGUAGE_VARIABLE, DEFAULT)
    language = language if language in LANGUAGES else DEFAULT
    webhook = _webhook(conn_id)
    outcome: dict[str, str] = {}

    def work() -> None:
        outcome["first"] = _post_due(root, first, webhook, conn_id, language, session=session, backoff=backoff)

    worker = threading.Thread(target=work, name="osms-notices", daemon=True)
    worker.start()
    worker.join(wait)
    if worker.is_alive():
        return "sending (kept in the outbox until accepted)"
    return outcome.get("first", "sent")


def _post_due(root: Path, first: Path | None, webhook: Any, conn_id: str, language: str, *, session: Any,
              backoff: float | None) -> str:
    """Post ``first``, then the other notices due (oldest first, a bounded batch); what happened to ``first``."""
    now = _now()
    pending = [p for p in _pending(root) if p != first]
    said = "nothing to send"
    for path in ([first] if first is not None else []) + pending[:OUTBOX_BATCH]:
        result = _post_one(path, webhook, conn_id, language, now, session=session, backoff=backoff,
                           due_only=path != first)
        if path == first:
            said = result
    return said


def _pending(root: Path) -> list[Path]:
    """Notices not accepted, dropped or skipped yet (listed in ``alerts/pending/``), oldest first."""
    out = []
    for entry, path in layout.Paths(root).pending_alerts():
        if path.is_file():
            out.append(path)
        else:
            entry.unlink(missing_ok=True)  # its notice is gone: nothing to send
    return sorted(out, key=lambda p: p.stat().st_mtime)


def _pending_entry(path: Path) -> Path:
    return layout.Paths.alert_pending_entry(path)


def _post_one(path: Path, webhook: Any, conn_id: str, language: str, now: dt.datetime, *, session: Any,
              backoff: float | None, due_only: bool) -> str:
    """One try (with the client's retries) of one notice, under a lock so that two senders never both post it."""
    from osms.core.files import locked
    from osms.orchestration.alerts import AlertNotPosted, send_alert

    with locked(path, wait=False, create=False) as held:  # the notice's own file: it exists, and is never created
        if not held:
            return "being sent by another process"
        if layout.Paths.alert_mark(path, ".sent").exists():
            return "already sent"
        record = json.loads(path.read_bytes())
        state = _read_json(layout.Paths.alert_mark(path, ".tries")) or {"attempts": 0}
        queued = dt.datetime.fromisoformat(record["queued_at"])
        if due_only and state.get("next") and dt.datetime.fromisoformat(state["next"]) > now:
            return "not due yet"
        n = record["notice"]
        notice = Notice(kind=n["kind"], dag_id=n["dag_id"], run_id=n["run_id"], day=dt.date.fromisoformat(n["day"]),
                        fields=n["fields"], feeds=n["feeds"], details=n["details"])
        if webhook is None:
            _mark(path, ".skipped", {"conn_id": conn_id, "why": "connection not defined"})
            log.warning("notice webhook not configured: Airflow connection %r is not defined (set AIRFLOW_CONN_%s,"
                        " or the variable osms_alert_webhook_conn); the %s notice of run %s is only in the log",
                        conn_id, conn_id.upper(), notice.kind, notice.run_id)
            return f"logged, not posted: connection {conn_id} not defined"
        try:
            status = send_alert(webhook, notice.as_json(language), session=session,
                                **({"backoff": backoff} if backoff is not None else {}))
        except AlertNotPosted as exc:
            attempts = int(state.get("attempts", 0)) + 1
            if now - queued > GIVE_UP_AFTER:
                _mark(path, ".dropped", {"attempts": attempts})
                log.error("notice %s of run %s dropped after %d tries over %s: %s", notice.kind, notice.run_id,
                          attempts, GIVE_UP_AFTER, exc)
                return "dropped"
            delay = min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_MAX)
            _write_json(layout.Paths.alert_mark(path, ".tries"),
                        {"attempts": attempts, "next": (now + delay).isoformat()})
            log.error("notice %s of run %s not accepted (%s); kept, tried again from %s on", notice.kind,
                      notice.run_id, exc, (now + delay).isoformat())
            return f"not accepted yet: {exc}"
        _mark(path, ".sent", {"status": status, "conn_id": conn_id})
        log.info("notice %s of run %s accepted by connection %s (HTTP %s)", notice.kind, notice.run_id, conn_id,
                 status)
        return f"posted to connection {conn_id} (HTTP {status})"


def _mark(path: Path, suffix: str, what: dict[str, Any]) -> None:
    """Mark a notice done (sent, dropped or skipped): it leaves the pending list."""
    _write_json(layout.Paths.alert_mark(path, suffix), {**what, "at": _now().isoformat()})
    _pending_entry(path).unlink(missing_ok=True)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    from osms.core.files import write_bytes_atomic

    write_bytes_atomic(json.dumps(doc, sort_keys=True).encode(), path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _variable(name: str, default: str) -> str:
    from airflow.sdk import Variable

    try:
        value = Variable.get(name, default=None)
    except Exception as exc:  # noqa: BLE001: the notice must still go out, with the default
        log.warning("variable %s not readable (%s): using %r", name, type(exc).__name__, default)
        return default
    return (value or "").strip() or default


def _webhook(conn_id: str) -> Any:
    """The webhook of the connection, or None when it is not defined."""
    from osms.orchestration.alerts import Webhook
    from osms.sources.connections import read_connection

    try:
        conn = read_connection(conn_id)
    except Exception as exc:  # noqa: BLE001: not defined (AirflowNotFoundException) or unreadable
        if type(exc).__name__ not in ("AirflowNotFoundException", "AirflowNotFoundError"):
            log.warning("connection %s not readable (%s)", conn_id, type(exc).__name__)
        return None
    return Webhook(conn_id=conn_id, url=conn.url, token=conn.token)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:120]


# for callers that build a notice from a task's context
def notice_of(kind: str, context: Mapping[str, Any], *, fields: Mapping[str, Any] | None = None,
              feeds: Mapping[str, str] | None = None, details: Mapping[str, Any] | None = None) -> Notice:
    """A notice of the run a task's context names."""
    dag_id, run_id, day = run_of(context)
    return Notice(kind=kind, dag_id=dag_id, run_id=run_id, day=day, fields=dict(fields or {}),
                  feeds=dict(feeds or {}), details=dict(details or {}))

