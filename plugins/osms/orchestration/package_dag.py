"""Builds the daily package DAG: wait for the 8 statuses, build, sign, deliver, report.

Time-scheduled (not asset-triggered) like the agency DAGs, so operators can
backfill any range of dates and get the same packages as the scheduled runs.
A body whose status does not arrive by the cutoff counts as failed: its
categories are carried forward, never read as removals. The statuses it reads
and the package it delivers are Airflow assets, so the Assets view traces the
package back to the bodies' DAGs; they never schedule it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import (
    DAG,
    AsyncCallback,
    BaseSensorOperator,
    CronDataIntervalTimetable,
    DeadlineAlert,
    Param,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from osms.core import layout, settings
from osms.orchestration.alerts import PackageDue, package_deadline_missed
from osms.orchestration.assets import package_asset, status_asset
from osms.orchestration.dag_factory import OWNER, START_DATE
from osms.core.dates import ALMATY, run_day
from osms.core.registry import NoEditionInForce, default_registry
from osms.orchestration.notices import failure_notifiers

DAG_ID = "osms_daily_package"
# After the agency DAGs (00:30): the package for D is built once they have reported.
SCHEDULE = "45 0 * * *"
# Bodies report within minutes normally; wait up to 5 hours, so that the package
# is still delivered before the 07:00 deadline when one body is late.
STATUS_WAIT = timedelta(hours=5)
# A run's params may change the wait (minutes; 0: a body without a status has failed, now).
STATUS_WAIT_CONF = "status_wait_minutes"
# ... and the wait for D-1's delivery (0: if D-1 is not delivered, the run fails now, saying so).
PREVIOUS_WAIT_CONF = "previous_wait_minutes"
# D-1 late by days is for operators to fix; the deadline alert has said so long before.
PREVIOUS_WAIT = timedelta(days=2)
# A manual run may write the chain's start (when none is written) only if its conf says so: what `osms run`
# passes. Scheduled and backfill runs may: they come in date order, so their first day is the chain's first.
START_CHAIN_CONF = "start_chain"
STARTING_RUN_TYPES = ("scheduled", "backfill")
# What a manual run may set, in the trigger form: typed and bounded, so a bad value is refused
# before the run starts (Airflow validates a run's conf against these when it is created).
PARAMS = {
    STATUS_WAIT_CONF: Param(
        int(STATUS_WAIT.total_seconds() // 60), type="integer", minimum=0, maximum=24 * 60,
        title="Wait for the bodies' statuses (minutes)",
        description="How long each wait_for_<body> waits for the body's status of D; a body without one by"
                    " then counts as failed and is carried forward. 0: do not wait (every agency DAG has"
                    " ended). At most a day.",
    ),
    PREVIOUS_WAIT_CONF: Param(
        int(PREVIOUS_WAIT.total_seconds() // 60), type="integer", minimum=0, maximum=2 * 24 * 60,
        title="Wait for D-1's package to be delivered (minutes)",
        description="How long previous_package_delivered waits for the package of D-1 to have a receipt (D is"
                    " chained on it). 0: look once and fail at once, saying which day to deliver. At most 2 days.",
    ),
    START_CHAIN_CONF: Param(
        False, type="boolean", title="Start the delivery chain at this day",
        description="Only when no chain start is written yet (a first delivery): this run's day becomes the"
                    " chain's first, which needs no predecessor. Otherwise ignored; `osms chain start` says"
                    " where it starts.",
    ),
}
RECEIVER_CONN_ID = "osms_state_corp"
BUILD_TIMEOUT = timedelta(hours=2)  # the national package builds in about a minute
# retries of the sensors for a worker lost under them (never for their own timeout: see the DAG)
SENSOR_RETRIES = 2
SENSOR_RETRY_DELAY = timedelta(seconds=30)
DELIVER_TIMEOUT = timedelta(hours=1)
# a name Airflow's secrets masker hides ("private_key"): the key never shows in the UI or a log
SIGNING_KEY_VARIABLE = "osms_signing_private_key"


class BodyStatusSensor(BaseSensorOperator):
    """Waits for a body's status file for D; deferrable, so waiting holds no worker slot."""

    template_fields = ()

    def __init__(self, *, body: str, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body = body
        self.deferrable = deferrable

    def _path(self, context: Any) -> Any:
        return layout.status(layout.data_dir(), run_day(context), self.body)

    def poke(self, context: Any) -> bool:
        """Whether the body's status for D has been written."""
        return self._path(context).exists()

    def execute(self, context: Any) -> None:
        day = run_day(context)
        try:
            edition = default_registry().edition_on(day)
        except NoEditionInForce as exc:
            raise AirflowSkipException(str(exc)) from None
        if self.body not in {b.code for b in edition.bodies}:
            raise AirflowSkipException(f"{self.body} is not a responsible body on {day} (edition {edition.code})")
        if self.poke(context):
            return None
        wait = self._wait(context)
        if wait <= timedelta(0):
            # The run was started knowing every body has finished (osms run, or an operator's
            # rerun of a late day): a body without a status has failed; nothing is worth waiting for.
            raise AirflowFailException(f"{self.body} wrote no status for {day}, and this run does not wait"
                                       f" ({STATUS_WAIT_CONF} = 0): it counts as failed")
        if not self.deferrable:
            self.timeout = wait.total_seconds()
            return super().execute(context)  # the usual poke loop
        # A body that never reports makes the wait time out: the sensor fails, and
        # build_package (all_done) counts the body as failed and carries it forward.
        from airflow.providers.standard.triggers.file import FileTrigger

        self.defer(
            trigger=FileTrigger(filepath=str(self._path(context)), poke_interval=30.0),
            method_name="execute_complete",
            timeout=wait,
        )

    def _wait(self, context: Any) -> timedelta:
        """How long to wait: the run's ``status_wait_minutes`` param (validated when the run was created)."""
        return _minutes_param(context, STATUS_WAIT_CONF, self.timeout)

    def execute_complete(self, context: Any, event: Any = None) -> None:
        """The status file appeared."""
        return None


def _minutes_param(context: Any, name: str, default: Any) -> timedelta:
    """A wait in minutes from the run's params; ``default`` (a timedelta or seconds) when the run has none."""
    value = (context.get("params") or {}).get(name)
    if value is None:
        return default if isinstance(default, timedelta) else timedelta(seconds=float(default))
    try:
        return timedelta(minutes=int(value))
    except (TypeError, ValueError):  # only a run created around the params' validation gets here
        raise AirflowFailException(f"{name} must be a whole number of minutes, not {value!r}") from None


def delivery_deadline() -> DeadlineAlert:
    """Not delivered by D+1 07:00 Almaty: alert (``osms.orchestration.alerts``; never for backfill or test runs)."""
    return DeadlineAlert(
        reference=PackageDue(),  # D+1 07:00 Almaty by the calendar; none for backfill and `dags test` runs
        interval=timedelta(0),
        callback=AsyncCallback(package_deadline_missed),
        name="package delivered by D+1 07:00 Asia/Almaty",
    )


def chain_starter(context: Any) -> tuple[bool, str]:
    """Whether this run may write the chain's start when none is written, and who it is, for the record."""
    run = context.get("dag_run")
    run_type = str(getattr(getattr(run, "run_type", None), "value", getattr(run, "run_type", "")) or "")
    conf = getattr(run, "conf", None) or {}
    if conf.get(START_CHAIN_CONF) is True:
        return True, f"the {run_type or 'manual'} run {context.get('run_id')} (conf {START_CHAIN_CONF})"
    return run_type in STARTING_RUN_TYPES, f"the first {run_type} run ({context.get('run_id')})"


class PreviousPackageSensor(BaseSensorOperator):
    """Waits until D-1's package is delivered (or D starts the chain): D's package is built only then.

    In reschedule mode: waiting holds no worker slot and burns no retry. A lost receipt
    of D-1 is recovered from the receiver here; a broken chain fails at once with the
    cause. The first time a run waits, a notice goes to the alert webhook.
    """

    template_fields = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mode="reschedule", **kwargs)

    def execute(self, context: Any) -> Any:
        wait = _minutes_param(context, PREVIOUS_WAIT_CONF, self.timeout)
        if wait <= timedelta(0):
            if not self.poke(context):  # the run was started not to wait: one look, then fail with the cause
                raise AirflowFailException(f"{self._waiting} (and this run does not wait: {PREVIOUS_WAIT_CONF} = 0)")
            return None
        self.timeout = wait.total_seconds()  # reschedule mode: measured from the first try's start
        return super().execute(context)

    def poke(self, context: Any) -> bool:
        """Whether D's package may be built now."""
        from osms.package.chain import ChainBroken, ChainWaiting, HttpReceiver, link
        from osms.orchestration.failures import task_errors

        day = run_day(context)
        may_start, started_by = chain_starter(context)
        try:
            with task_errors():
                found = link(layout.data_dir(), day, HttpReceiver.from_connection(RECEIVER_CONN_ID),
                             may_start=may_start, started_by=started_by)
        except ChainWaiting as exc:
            self._waiting = str(exc)
            self.log.info("waiting: %s", exc)
            from osms.orchestration.notices import notice_of, send_notice

            send_notice(notice_of("delivery_waiting", context, fields={"previous": (day - timedelta(days=1))
                                                                         .isoformat()}))
            return False
        except ChainBroken as exc:
            chain_refused(context, exc)
            raise
        self.log.info("package %s %s", day, found.how)
        return True


def signing_key_pem(variable: str | None) -> bytes:
    """The key the package is signed with: the variable's PEM, else the file ``OSMS_SIGNING_KEY_FILE`` names (0600).

    The distributed shape (an executor other than the embedded LocalExecutor) refuses the
    development key unless ``OSMS_DEMO`` is true (:func:`osms.core.keys.check_signing_key`).
    """
    from osms.core.keys import KEY_FILE_ENV, check_signing_key, read_key_file
    from osms.package.build import PackageError

    if variable:
        pem, where = variable.encode(), f"the variable {SIGNING_KEY_VARIABLE}"
    elif (key_file := settings.current().signing_key_file) is not None:
        path = key_file
        try:
            pem = read_key_file(path)
        except FileNotFoundError:
            raise PackageError(f"the signing key file {path} ({KEY_FILE_ENV}) does not exist") from None
        where = f"{KEY_FILE_ENV} ({path})"
    else:
        raise PackageError(f"no signing key: set the variable {SIGNING_KEY_VARIABLE} (osms deploy init does) or,"
                           f" on one machine, {KEY_FILE_ENV} to the key file's path")
    if distributed():
        check_signing_key(pem, where=where)
    return pem


def distributed() -> bool:
    """Whether this Airflow runs in the distributed shape: an executor other than the embedded LocalExecutor."""
    from airflow.configuration import conf

    # "CeleryExecutor", "airflow.providers.celery...CeleryExecutor" or "alias:module.Class", comma-separated
    executors = [e.strip().split(":")[-1].rsplit(".", 1)[-1] for e in conf.get("core", "executor", fallback="").split(",")]
    return any(e and e not in ("LocalExecutor", "SequentialExecutor") for e in executors)


@task(task_id="build_package", trigger_rule=TriggerRule.ALL_DONE, execution_timeout=BUILD_TIMEOUT)
def build(**context: Any) -> dict[str, Any]:
    """Consolidate the validated data of D (carrying forward what is missing), gate it, sign it."""
    from airflow.sdk import Variable

    import osms
    from osms.package.chain import HttpReceiver
    from osms.orchestration.failures import task_errors
    from osms.core.run import Run
    from osms.package.build import build_package

    day = run_day(context)
    may_start, started_by = chain_starter(context)
    with task_errors(), chain_refusals(context):
        key = signing_key_pem(Variable.get(SIGNING_KEY_VARIABLE, default=None))
        result = build_package(Run.of(day), signing_key_pem=key,
                               producer_version=osms.__version__,
                               receiver=HttpReceiver.from_connection(RECEIVER_CONN_ID), may_start=may_start,
                               started_by=started_by)
    undecided = undecided_holds(result.categories)
    if undecided:
        # the package went out without waiting for QA: say which holds wait for a decision
        from osms.orchestration.notices import notice_of, send_notice

        send_notice(notice_of("qa_decision_waiting", context, feeds=undecided))
    return {
        "package_id": result.package_id,
        "path": str(result.path),
        "manifest_sha256": result.manifest_sha256,
        "rows": result.rows,
        "categories": {code: {k: v for k, v in c.items() if k in ("status", "rows")} for code, c in
                       result.categories.items()},
    }


@task(task_id="data_docs", trigger_rule=TriggerRule.ALL_DONE, execution_timeout=timedelta(minutes=30))
def data_docs(**context: Any) -> dict[str, Any]:
    """Render the day's GX Data Docs from every body's scrubbed reports: once a day, once the bodies reported.

    Never fails the run: a page that cannot be rendered is logged (by type only) and
    the reports it would show stay on disk for the next render.
    """
    from osms.quality.docs import render_day

    day = run_day(context)
    return {"index": str(render_day(layout.data_dir(), day))}


@task(task_id="deliver", retries=6, retry_delay=timedelta(minutes=5), retry_exponential_backoff=0,
      execution_timeout=DELIVER_TIMEOUT, outlets=[package_asset()])
def deliver(built: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Upload and commit the package to the State Corporation; keep the receipt beside it.

    Safe to retry: a delivered package is recognised by its receipt and never sent
    twice. A receiver that is down for a whole try is tried again later; one that
    refuses the package (a checksum, the signature, the chain) fails the run at once.
    """
    from pathlib import Path

    from osms.package.deliver import deliver_package, endpoint_from_connection
    from osms.orchestration.failures import task_errors
    from osms.package.build import package_lock

    with task_errors(), chain_refusals(context), package_lock(layout.data_dir(), run_day(context)):
        receipt, new = deliver_package(Path(built["path"]), endpoint_from_connection(RECEIVER_CONN_ID),
                                       data_dir=layout.data_dir())
    # the asset event names the day and the receipt (never a record): the Assets view lists the deliveries
    context["outlet_events"][package_asset()].extra = {"day": run_day(context).isoformat(),
                                                       "package_id": receipt.package_id}
    return {"receipt_id": receipt.receipt_id, "package_id": receipt.package_id, "newly_delivered": new}


@task(task_id="report")
def report(built: dict[str, Any], receipt: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Log the day's outcome (counts only) for the run's log and the UI."""
    import logging

    log = logging.getLogger(__name__)
    day = run_day(context)
    for code, c in sorted(built["categories"].items()):
        log.info("%s %s: %s, %s rows", day, code, c["status"], c["rows"])
    log.info("package %s (%s rows) receipt %s%s", built["package_id"], built["rows"], receipt["receipt_id"],
             "" if receipt["newly_delivered"] else " (already delivered earlier)")
    from osms.orchestration.notices import flush_outbox

    log.info("notices not accepted before: %s", flush_outbox())  # once a day at least, they are tried again
    return {"package_id": built["package_id"], "receipt_id": receipt["receipt_id"]}


def undecided_holds(categories: dict[str, Any]) -> dict[str, str]:
    """Feeds (``body.system.category``) held back on D with no QA decision, from the package's categories."""
    return {f"{body}.{system}.{code}": "held_back"
            for code, c in sorted(categories.items()) for body, b in sorted(c.get("bodies", {}).items())
            for system, f in sorted(b.get("feeds", {}).items())
            if f.get("status") == "held_back" and not f.get("decision")}


def chain_refused(context: Any, exc: BaseException) -> None:
    """Notice: the delivery chain refuses D's package (names the day; the task log says which days to deliver)."""
    from osms.orchestration.notices import notice_of, send_notice

    send_notice(notice_of("chain_refused", context, details={"cause": type(exc).__name__}))


@contextmanager
def chain_refusals(context: Any) -> Iterator[None]:
    """Send the ``chain_refused`` notice when the chain, or the receiver, refuses D's place in it."""
    from osms.package.chain import ChainBroken
    from osms.package.deliver import DeliveryWaiting

    try:
        yield
    except ChainBroken as exc:
        chain_refused(context, exc)
        raise
    except DeliveryWaiting as exc:
        if exc.code == "out_of_order":  # the receiver's chain and ours differ: no retry mends it
            chain_refused(context, exc)
        raise


def build_package_dag() -> DAG:
    """The daily package DAG."""
    bodies = default_registry().all_bodies()
    with DAG(
        dag_id=DAG_ID,
        description="One consolidated, signed package a day for the State Corporation (Decree No. 660)",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone=ALMATY),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # packages form a chain: one date at a time, in order
        default_args={"owner": OWNER, "retries": 2, "retry_delay": timedelta(minutes=2)},
        tags=["osms", "package"],
        params=PARAMS,
        deadline=delivery_deadline(),
        on_failure_callback=failure_notifiers("package_run_failed"),  # a notice within a minute
        doc_md=__doc__ + "\n\nSigning key: Airflow variable `osms_signing_private_key` (PEM, masked). Receiver: connection"
        " `osms_state_corp`. Deadline alert (package not delivered by D+1 07:00 Almaty): webhook connection"
        " `osms_alert_webhook`, or the one named by the variable `osms_alert_webhook_conn`.",
    ) as dag:
        # lineage (OpenLineage, through these inlets and outlets): every body's status -> the package.
        # A sensor's own end is never retried (its wait timing out raises AirflowSensorTimeout, a run that does
        # not wait AirflowFailException); its retries are for the worker lost while it looked (a killed worker
        # would otherwise make a body that did report count as failed, and carry it forward). A retried wait
        # starts its wait again.
        statuses = [status_asset(b.code) for b in bodies]
        waits = [
            BodyStatusSensor(task_id=f"wait_for_{b.code}", body=b.code, timeout=STATUS_WAIT, poke_interval=60,
                             retries=SENSOR_RETRIES, retry_delay=SENSOR_RETRY_DELAY, inlets=[status])
            for b, status in zip(bodies, statuses, strict=True)
        ]
        previous = PreviousPackageSensor(task_id="previous_package_delivered", timeout=PREVIOUS_WAIT,
                                         poke_interval=300, retries=SENSOR_RETRIES, retry_delay=SENSOR_RETRY_DELAY,
                                         inlets=[package_asset()])
        built = build.override(inlets=statuses, outlets=[package_asset()])()
        waits >> built
        previous >> built
        waits >> data_docs()
        report(built, deliver.override(inlets=[package_asset()])(built))
    return dag
