"""A failed DAG run is heard within a minute: real Airflow, the project's notifier, a webhook that refuses twice.

Real Airflow on 127.0.0.1 with embedded SQLite (API server, scheduler, DAG processor: the DAG
processor runs a DAG's failure callbacks) and a webhook on 127.0.0.1 given as
``AIRFLOW_CONN_OSMS_ALERT_WEBHOOK``, which answers 503 to the first two POSTs and 200 after.
The DAG is a probe whose one task fails at once (no retries), with the failure callbacks the
project's DAGs use (``osms.orchestration.notices.failure_notifiers``): the agency DAGs' tasks
retry for minutes before their run fails, which is not what this test measures.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pendulum
import pytest

from osms.dev.airflow_local import HOST, AirflowLocalError, LocalAirflow

pytestmark = pytest.mark.integration

DAG_ID = "osms_notice_probe"
TOKEN = "notice-webhook-token"
HEARD_WITHIN = 60  # seconds from the run's end to the notice the webhook accepted
PROBE = textwrap.dedent(f'''
    """A DAG whose one task fails at once, with the failure callbacks of the OSMS DAGs."""
    import pendulum
    from airflow.sdk import DAG, task
    from airflow.sdk.exceptions import AirflowFailException

    from osms.orchestration.notices import failure_notifiers

    with DAG(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="Asia/Almaty"),
             catchup=False, on_failure_callback=failure_notifiers("package_run_failed")):

        @task(retries=0)
        def fail_now():
            raise AirflowFailException("the probe fails on purpose")

        fail_now()
''')


class RefusingWebhook:
    """A webhook on 127.0.0.1 that answers 503 to the first ``refusals`` POSTs, then 200; records each (and when)."""

    def __init__(self, refusals: int = 2) -> None:
        self.posts: list[dict[str, Any]] = []
        posts, lock = self.posts, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    status = 503 if len(posts) < refusals else 200
                    posts.append({"at": time.time(), "status": status, "body": json.loads(body),
                                  "authorization": self.headers.get("Authorization")})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def connection(self) -> str:
        return json.dumps({"conn_type": "http", "host": HOST, "port": self.server.server_address[1],
                           "schema": "http", "password": TOKEN, "extra": {"endpoint": "/notices"}})

    def accepted(self) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["status"] == 200]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[RefusingWebhook]:
    hook = RefusingWebhook(refusals=2)
    yield hook
    hook.stop()


def test_a_failed_run_is_heard_within_a_minute_by_a_webhook_that_refuses_twice(webhook: RefusingWebhook,
                                                                              tmp_path: Path) -> None:
    # Arrange: the probe DAG in a DAGs folder of its own, real Airflow around it
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(PROBE)
    data = tmp_path / "data"
    af = LocalAirflow(tmp_path / "airflow", dags_folder=dags, use_job_schedule=False, parallelism=2,
                      extra_env={"OSMS_DATA_DIR": str(data), "AIRFLOW_CONN_OSMS_ALERT_WEBHOOK": webhook.connection()})
    try:
        af.start(("api-server", "scheduler", "dag-processor"))
        af.wait_for_dag(DAG_ID)
        af.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

        # Act
        run = af.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                     json={"logical_date": pendulum.now("UTC").subtract(minutes=1).isoformat()})
        try:
            ended = af.poll(lambda: next((r for r in af.dag_runs(DAG_ID) if r["dag_run_id"] == run["dag_run_id"]
                                          and r["state"] in ("failed", "success")), None),
                            timeout=300, interval=1, what="the probe's run to end")
            af.poll(webhook.accepted, timeout=HEARD_WITHIN + 30, interval=0.5, what="the notice to be accepted")
        except AirflowLocalError as exc:
            pytest.fail(f"{exc}\nposts: {webhook.posts}\n{af.logs_tail(60, ['dag-processor', 'scheduler'])}")
    finally:
        killed = af.stop()
    assert not killed, f"had to SIGKILL: {killed}"

    # Assert: refused twice, then accepted once, within a minute of the run's end; marked sent only then
    assert ended["state"] == "failed"
    assert [p["status"] for p in webhook.posts] == [503, 503, 200]
    [notice] = webhook.accepted()
    ended_at = pendulum.parse(ended["end_date"]).timestamp()
    assert notice["at"] - ended_at < HEARD_WITHIN, f"heard {notice['at'] - ended_at:.0f} s after the run ended"
    body = notice["body"]
    assert (body["kind"], body["dag_id"], body["run_id"]) == ("package_run_failed", DAG_ID, run["dag_run_id"])
    assert notice["authorization"] == f"Bearer {TOKEN}" and set(body["messages"]) == {"en", "kk", "ru"}
    outbox = data / "alerts"
    assert len(list(outbox.glob("*/*.sent"))) == 1 and not list((outbox / "pending").iterdir())
