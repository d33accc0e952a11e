"""The package deadline alert with real Airflow: a late run alerts once, a backfill run never.

Real Airflow on 127.0.0.1 with embedded SQLite (API server, scheduler, DAG processor and the
triggerer that runs the deadline callbacks; see ``osms.dev.airflow_local``) and a webhook receiver on
127.0.0.1 given as ``AIRFLOW_CONN_OSMS_ALERT_WEBHOOK``. Two runs of ``osms_daily_package`` for past
days, so their deadlines (D+1 07:00 Almaty) have passed when they are created and nothing was
delivered: a manual run, which must alert exactly once, and a backfill run, which must not (it gets
no deadline: the project's deadline reference, registered by its plugin, answers none for it).

The DAG stays paused, so both runs stay queued and never deliver: the deadline machinery (the
scheduler marks the deadline missed, the triggerer runs the callback) does not depend on tasks
running, and the test needs neither mocks nor task processes. That the callbacks have finished is
read from Airflow's metadata database (the ``callback`` row of the run's deadline), the one place
that records it. The backfill run's missing deadline is read there too: Airflow creates a run's
deadline in the transaction that creates the run, so "no alert for the backfill" is a fact rather
than a wait.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pendulum
import pytest

from osms.dev.airflow_local import ALL_COMPONENTS, HOST, AirflowLocalError, LocalAirflow
from tests.support.airflow import backfill_create

pytestmark = pytest.mark.integration

DAG_ID = "osms_daily_package"
LATE_DAY = dt.date(2025, 6, 1)      # manual run: due 2025-06-02 07:00 Almaty, long past
BACKFILL_DAY = dt.date(2025, 5, 20)
TOKEN = "alert-webhook-token-integration"
CALLBACKS_TIMEOUT = 60  # seconds for the late run's deadline to be missed and its callback to finish


class Receiver:
    """A webhook on 127.0.0.1 that records every POST (path, Authorization, JSON body) and answers 200."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                 "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def connection(self) -> str:
        """``AIRFLOW_CONN_OSMS_ALERT_WEBHOOK``: this receiver, path ``/alerts``, bearer token."""
        return json.dumps({"conn_type": "http", "host": HOST, "port": self.port, "schema": "http",
                           "password": TOKEN, "extra": {"endpoint": "/alerts"}})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def _logical_date(day: dt.date) -> str:
    """The logical date of D's scheduled run (00:45 Almaty on D), with its offset."""
    return pendulum.datetime(day.year, day.month, day.day, 0, 45, tz="Asia/Almaty").isoformat()


def _deadline_callbacks(af: LocalAirflow) -> dict[str, dict[str, Any]]:
    """Per run id: its deadline (time, missed) and its callback's state and output, from the metadata database."""
    db = sqlite3.connect(f"file:{af.home / 'airflow.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT r.run_id, r.run_type, d.deadline_time, d.missed, c.state, c.output FROM deadline d"
            " JOIN dag_run r ON r.id = d.dagrun_id JOIN callback c ON c.id = d.callback_id"
            " WHERE r.dag_id = ?", (DAG_ID,)).fetchall()
    finally:
        db.close()
    return {run_id: {"run_type": run_type, "deadline_time": deadline_time, "missed": bool(missed), "state": state,
                     "output": output} for run_id, run_type, deadline_time, missed, state, output in rows}


def test_late_run_alerts_once_backfill_never(receiver: Receiver, tmp_path: Path) -> None:
    af = LocalAirflow(
        tmp_path / "airflow",
        extra_env={"OSMS_DATA_DIR": str(tmp_path / "data"),
                   "AIRFLOW_CONN_OSMS_ALERT_WEBHOOK": receiver.connection()},
        parallelism=2,
        use_job_schedule=False,  # only the runs made here
    )
    try:
        af.start(ALL_COMPONENTS)
        foreign = [x for x in af.listening() if x[2] != HOST]
        assert not foreign, f"Airflow listens beyond 127.0.0.1: {foreign}"
        af.wait_for_dag(DAG_ID)
        alerts = af.api("GET", f"/ui/dags/{DAG_ID}/deadlineAlerts")["deadline_alerts"]
        assert [(a["reference_type"], a["interval"]) for a in alerts] == [("PackageDue", 0)]

        # act: a backfill run and a manual run, each for a past day whose package was never delivered
        backfill_create(af, DAG_ID, _logical_date(BACKFILL_DAY), _logical_date(BACKFILL_DAY))
        manual = af.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": _logical_date(LATE_DAY)})
        [backfill] = af.dag_runs(DAG_ID, run_type="backfill")

        def finished() -> dict[str, dict[str, Any]] | None:
            af.check_alive()
            callbacks = _deadline_callbacks(af)
            done = callbacks and all(c["state"] in ("success", "failed") for c in callbacks.values())
            return callbacks if done else None

        try:
            callbacks = af.poll(finished, timeout=CALLBACKS_TIMEOUT, interval=0.5,
                                what="the late run's deadline callback to finish")
        except AirflowLocalError as exc:
            pytest.fail(f"{exc}\ndeadlines: {_deadline_callbacks(af)}\n{af.logs_tail(60, ['triggerer'])}")
    finally:
        killed = af.stop()
        leftovers = af.leftovers()
    assert not leftovers, f"processes left running after stop: {leftovers}"
    assert not killed, f"had to SIGKILL: {killed}"

    # the manual run's deadline was created (D+1 07:00 Almaty), missed, and its callback ran without error;
    # the backfill run has none
    assert backfill["run_type"] == "backfill"
    assert set(callbacks) == {manual["dag_run_id"]}, callbacks
    late = callbacks[manual["dag_run_id"]]
    deadline = pendulum.parse(str(late["deadline_time"]), tz="UTC").in_timezone("Asia/Almaty")
    assert (deadline.date(), deadline.time()) == (LATE_DAY + dt.timedelta(days=1), dt.time(7, 0))
    assert late["missed"] and late["state"] == "success", late

    # exactly one alert: the late manual run's
    assert receiver.posts == [{
        "path": "/alerts",
        "authorization": f"Bearer {TOKEN}",
        "body": {
            "dag_id": DAG_ID,
            "run_id": manual["dag_run_id"],
            "day": "2025-06-01",
            "deadline": "2025-06-02T07:00:00+05:00",
            "message": f"package for 2025-06-01 not delivered to the State Corporation by its deadline"
                       f" 2025-06-02T07:00:00+05:00 ({DAG_ID}, run {manual['dag_run_id']})",
        },
    }]
