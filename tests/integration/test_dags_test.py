"""`airflow dags test` as an engineer runs it, in the environment `make airflow` gives: every DAG runs to the end.

The package DAG has a deadline alert (Airflow's ``DeadlineAlert``). Airflow 3.3's ``dag.test()``
failed such a DAG after its tasks had all succeeded and the package was delivered ("'dict'
object has no attribute 'hex'"); ``osms run`` used to switch deadlines off to get by. Here
the deadline is on, as in every shape, and the command must exit 0 with the package
delivered; the run, a test run, gets no deadline that a scheduler could alert on later.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from osms.core.dates import logical_date
from osms.dev.ui_stack import stack_airflow
from osms.orchestration.assets import package_asset, status_asset
from osms.orchestration.package_dag import DAG_ID, PREVIOUS_WAIT_CONF, START_CHAIN_CONF, STATUS_WAIT_CONF

pytestmark = pytest.mark.integration

DAY = dt.date(2025, 6, 1)
BODY_DAG = "agency_courts"


def test_airflow_dags_test_runs_an_agency_dag_and_the_package_dag_to_the_end(start, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              signing_keys) -> None:
    # Arrange: make airflow's Airflow (not started: `dags test` needs only its database), its mocks, its key
    monkeypatch.setenv("OSMS_KEY_DIR", str(signing_keys[0].parent))
    mocks = start()
    data = tmp_path / "data"
    af = stack_airflow(data, mocks)
    af.migrate()

    # Act: one body, then the package without waiting for the bodies that did not run, starting the chain at D
    body = af.cli("dags", "test", BODY_DAG, logical_date(DAY), timeout=600, check=False)
    package = af.cli("dags", "test", DAG_ID, logical_date(DAY), "--conf",
                     json.dumps({STATUS_WAIT_CONF: 0, PREVIOUS_WAIT_CONF: 0, START_CHAIN_CONF: True}), timeout=600, check=False)

    # Assert
    assert body.returncode == 0, body.stdout[-4000:]
    assert package.returncode == 0, package.stdout[-4000:]
    assert "'hex'" not in package.stdout
    assert "state=success" in package.stdout.replace("DagRunState.SUCCESS", "state=success"), package.stdout[-3000:]
    receipt = json.loads((data / "packages" / DAY.isoformat() / "receipt.json").read_text())
    assert receipt["package_id"], receipt
    with sqlite3.connect(af.home / "airflow.db") as db:
        runs = db.execute("SELECT run_id, state, triggered_by FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchall()
        deadlines = db.execute("SELECT COUNT(*) FROM deadline").fetchone()[0]
        events = db.execute("SELECT a.name FROM asset_event e JOIN asset a ON a.id = e.asset_id").fetchall()
    assert [(state, by.lower()) for _, state, by in runs] == [("success", "test")], runs
    assert deadlines == 0, "a test run got a deadline a scheduler on this database would alert on"
    # the run updated the assets the Assets view links: the body's status and the delivered package
    assert {name for (name,) in events} >= {status_asset("courts").name, package_asset().name}, events
