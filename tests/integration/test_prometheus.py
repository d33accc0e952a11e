"""Prometheus, for real: it scrapes the pipeline's metrics with the scrape token, and a late package fires the alert.

Debian's ``prometheus`` (what ``make cluster`` starts, from ``osms.dev.prometheus``) on
127.0.0.1, with the committed rules ``config/prometheus/alerts.yml`` and intervals of a
second, scrapes the metrics app the Airflow plugin mounts (``osms.ui.metrics``), served
here on 127.0.0.1 over a data root whose chain started three days ago and delivered only
its first day: the oldest day owed is past its deadline, so the rule must fire. The rules'
own unit tests run through ``promtool test rules``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mocks.runner import serving
from osms.core import layout
from osms.core.dates import almaty
from osms.dev.airflow_local import free_port
from osms.dev.prometheus import PROMETHEUS, PrometheusServer, new_token, rules_file
from osms.package.chain import set_chain_start
from osms.ui.metrics import METRICS_PATH, URL_PREFIX, create_metrics_app

PROMTOOL = shutil.which("promtool") or str(PROMETHEUS.with_name("promtool"))
pytestmark = [
    pytest.mark.integration,
    # CI's `make test` installs it first (make servers); a bare `pytest` elsewhere may lack it
    pytest.mark.skipif(not PROMETHEUS.exists() or not Path(PROMTOOL).exists(),
                       reason="Debian's prometheus is not installed: run `make servers`"),
]
ALERT_TIMEOUT = 60  # seconds for the first scrapes and the rule's evaluation


def test_the_committed_rules_pass_their_promtool_tests() -> None:
    rules = rules_file()
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=rules.parent, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _late_chain(root: Path) -> dt.date:
    """A chain that started three days ago; only its first day is delivered: the second is past its deadline."""
    today = dt.datetime.now(dt.UTC).astimezone(almaty()).date()
    start = today - dt.timedelta(days=3)
    set_chain_start(root, start, set_by="the test")
    folder = layout.package_dir(root, start)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"files": [{"name": "records.parquet", "bytes": 10, "rows": 1}]}))
    (folder / "receipt.json").write_text(json.dumps({"receipt_id": "R-1", "received_at": f"{start}T21:00:00+00:00"}))
    return start


def _poll(what: str, check, timeout: float = ALERT_TIMEOUT):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_prometheus_scrapes_the_metrics_and_fires_the_alert_of_a_late_package(tmp_path: Path) -> None:
    # Arrange: the metrics app over a late chain, on 127.0.0.1; the token in a 0600 file both sides read
    root = tmp_path / "data"
    start = _late_chain(root)
    token_file = tmp_path / "metrics_token"
    token = new_token(token_file)
    app = create_metrics_app(root=lambda: root, token=lambda: token)
    from fastapi import FastAPI

    api_server = FastAPI()
    api_server.mount(URL_PREFIX, app)  # where the Airflow plugin mounts it

    with serving(api_server, name="metrics") as metrics:
        target = metrics.url.removeprefix("http://")
        assert target.startswith("127.0.0.1:")
        server = PrometheusServer(tmp_path / "prometheus", free_port(), target, token_file,
                                  metrics_path=METRICS_PATH, scrape_interval="1s", evaluation_interval="1s")
        with server.start():
            # Act / Assert: the scrape succeeds with the token, the figures are in Prometheus
            _poll("a successful scrape", lambda: [r for r in server.query('up{job="osms"}') if r["value"][1] == "1"])
            [owed] = _poll("the days undelivered", lambda: server.query("osms_package_days_undelivered"))
            assert owed["value"][1] == "2"  # the two days after the start, through yesterday
            [last] = server.query("osms_package_last_delivered_timestamp_seconds")
            assert float(last["value"][1]) == dt.datetime.combine(start, dt.time(0), tzinfo=almaty()).timestamp()

            # the rule of the late package fires; the rules of bodies and feeds have nothing to say
            firing = _poll("the late package's alert to fire", lambda: [
                a for a in server.alerts()
                if a["labels"]["alertname"] == "OsmsPackageNotDeliveredByDeadline" and a["state"] == "firing"])
            assert firing[0]["labels"]["severity"] == "critical"
            assert firing[0]["labels"]["day"] == str(start + dt.timedelta(days=1))  # the oldest day owed
            assert str(start + dt.timedelta(days=1)) in firing[0]["annotations"]["summary"]
            names = {a["labels"]["alertname"] for a in server.alerts()}
            assert not names & {"OsmsBodyFailedTwoDaysInARow", "OsmsFeedHeldBackThreeDaysInARow", "OsmsMetricsDown"}

            # delivered now: the alert resolves at the next evaluations
            for k in (1, 2):
                day = start + dt.timedelta(days=k)
                folder = layout.package_dir(root, day)
                folder.mkdir(parents=True)
                (folder / "manifest.json").write_text("{}")
                (folder / "receipt.json").write_text("{}")
            _poll("the alert to resolve", lambda: not [
                a for a in server.alerts() if a["labels"]["alertname"] == "OsmsPackageNotDeliveredByDeadline"])
    assert server.proc is not None and server.proc.poll() is not None  # stopped


def test_a_scrape_without_the_right_token_is_refused_and_seen_as_down(tmp_path: Path) -> None:
    root = tmp_path / "data"
    token_file = tmp_path / "metrics_token"
    token_file.write_text("not-the-token")
    app = create_metrics_app(root=lambda: root, token=lambda: "the-token")
    from fastapi import FastAPI

    api_server = FastAPI()
    api_server.mount(URL_PREFIX, app)
    with serving(api_server, name="metrics") as metrics:
        server = PrometheusServer(tmp_path / "prometheus", free_port(), metrics.url.removeprefix("http://"),
                                  token_file, metrics_path=METRICS_PATH, scrape_interval="1s",
                                  evaluation_interval="1s")
        with server.start():
            down = _poll("a failed scrape", lambda: [r for r in server.query('up{job="osms"}')
                                                     if r["value"][1] == "0"])
            assert down
            targets = server.api("targets")["activeTargets"]
            assert "401" in targets[0]["lastError"]
