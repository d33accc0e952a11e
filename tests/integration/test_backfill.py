"""A backfill as operators run it gives the same outputs as running each date on its own.

Real Airflow on 127.0.0.1 with embedded SQLite (API server, scheduler with the
LocalExecutor, DAG processor; see ``osms.dev.airflow_local``) backfills ``agency_courts``
for three dates against clean mocks; the same three dates then run one by one with
``airflow dags test`` (what ``osms run`` does) into a second data directory. Per date
the status files must be byte-identical and the landing, validated and quarantine
Parquet files must hold equal tables.

How the dates must be given: the DAG runs at 00:30 Asia/Almaty and a run's D is its
logical date in Almaty, while ``airflow backfill create`` reads a bare date as midnight
in ``[core] default_timezone`` and keeps runs whose logical date lies within
[from, to]. Bare dates therefore drop a day (with default_timezone Asia/Almaty,
``--from-date 2025-06-01 --to-date 2025-06-03`` gives D = 06-01 and 06-02; with UTC,
06-02 and 06-03). Give the run moments with their offset instead:
``--from-date 2025-06-01T00:30:00+05:00 --to-date 2025-06-03T00:30:00+05:00``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pendulum
import pyarrow.parquet as pq
import pytest

from mocks.service import MockServices
from osms.dev.airflow_local import AirflowLocalError, LocalAirflow, tail
from osms.core.dates import ALMATY, logical_date
from osms.dev.local_run import airflow_env, migrate, run_dag
from tests.support.airflow import backfill_create

pytestmark = pytest.mark.integration

DAG_ID = "agency_courts"
BODY = "courts"
DAYS = [dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)]
RUNS_TIMEOUT = 300  # seconds for the three backfill runs to finish


def _run_day(run: dict) -> dt.date:
    return pendulum.parse(run["logical_date"]).in_timezone(ALMATY).date()


def _runs_summary(af: LocalAirflow) -> str:
    lines = []
    for run in af.dag_runs(DAG_ID):
        lines.append(f"{run['dag_run_id']} ({run['run_type']}, D={_run_day(run)}): {run['state']}")
        for ti in af.task_instances(DAG_ID, run["dag_run_id"]):
            lines.append(f"    {ti['task_id']}: {ti['state']} (try {ti.get('try_number')})")
            if ti["state"] in ("failed", "up_for_retry"):
                logs = sorted((af.home / "logs").glob(f"dag_id={DAG_ID}/run_id={run['dag_run_id']}"
                                                      f"/task_id={ti['task_id']}/*.log"))
                for log in logs[-1:]:
                    lines.append(f"    --- {log} ---\n{tail(log, 30)}")
    return "\n".join(lines)


def _wait_for_backfill(af: LocalAirflow) -> list[dict]:
    """Poll the REST API until the backfill's runs succeed; fail fast on a failed run or task."""
    def finished() -> list[dict] | None:
        af.check_alive()
        runs = af.dag_runs(DAG_ID, run_type="backfill")
        tis = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances", params={"limit": 100})
        bad = [t for t in tis["task_instances"] if t["state"] in ("failed", "up_for_retry", "upstream_failed")]
        if bad or any(r["state"] == "failed" for r in runs):
            pytest.fail(f"backfill run or task failed:\n{_runs_summary(af)}\n{af.logs_tail(30, ['scheduler'])}")
        return runs if len(runs) == len(DAYS) and all(r["state"] == "success" for r in runs) else None

    try:
        return af.poll(finished, timeout=RUNS_TIMEOUT, interval=1, what=f"{len(DAYS)} backfill runs to succeed")
    except AirflowLocalError as exc:
        pytest.fail(f"{exc}\nruns:\n{_runs_summary(af)}")


def _files(root: Path, kind: str, day: dt.date) -> dict[str, Path]:
    base = root / kind / day.isoformat()
    return {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*.parquet"))}


def test_backfill_equals_dags_test_per_date(clean_mocks: MockServices, tmp_path: Path) -> None:
    backfill_data, single_data = tmp_path / "backfill", tmp_path / "single"
    af = LocalAirflow(
        tmp_path / "airflow",
        extra_env={**clean_mocks.airflow_env(), "OSMS_DATA_DIR": str(backfill_data)},
        executor="LocalExecutor",
        parallelism=2,
        use_job_schedule=False,  # only the backfill's runs: no run for "yesterday" when the DAG is unpaused
    )
    try:
        af.start()
        foreign = [x for x in af.listening() if x[2] != "127.0.0.1"]
        assert not foreign, f"Airflow listens beyond 127.0.0.1: {foreign}"

        af.wait_for_dag(DAG_ID)
        # tasks of a paused DAG are never queued, backfill runs included: unpause as an operator would
        assert af.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})["is_paused"] is False

        # the run moments with their offset (00:30 Almaty), see the module docstring
        backfill_create(af, DAG_ID, logical_date(DAYS[0]), logical_date(DAYS[-1]))
        runs = _wait_for_backfill(af)
        assert [_run_day(r) for r in runs] == DAYS
        assert all(pendulum.parse(r["logical_date"]).in_timezone(ALMATY).time() == dt.time(0, 30) for r in runs)
        assert {r["run_type"] for r in runs} == {"backfill"}
        assert [r["dag_run_id"] for r in af.dag_runs(DAG_ID)] == [r["dag_run_id"] for r in runs], "only backfill runs"
        af.wait_tasks_finished()  # stop only after the last task process has exited on its own
    finally:
        killed = af.stop()
        leftovers = af.leftovers()
    assert not leftovers, f"processes left running after stop: {leftovers}"
    assert not killed, f"had to SIGKILL: {killed}"

    # the same dates one by one, as `osms run` does, into a second data directory
    env = airflow_env(single_data, {**clean_mocks.airflow_env(), "AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
    migrate(env)
    for day in DAYS:
        result = run_dag(DAG_ID, day, env, single_data / "airflow" / "logs" / f"run-{day.isoformat()}")
        assert result.ok, f"airflow dags test {DAG_ID} {day} failed:\n{tail(result.log, 60)}"

    for day in DAYS:
        status_b = backfill_data / "status" / day.isoformat() / f"{BODY}.json"
        status_s = single_data / "status" / day.isoformat() / f"{BODY}.json"
        assert status_b.is_file() and status_s.is_file(), f"status missing for {day}"
        assert status_b.read_bytes() == status_s.read_bytes(), (
            f"status of {day} differs:\nbackfill: {status_b.read_text()}\nsingle: {status_s.read_text()}")
        for kind in ("landing", "validated", "quarantine"):
            files_b, files_s = _files(backfill_data, kind, day), _files(single_data, kind, day)
            assert files_b.keys() == files_s.keys(), f"{kind} files of {day}: {list(files_b)} vs {list(files_s)}"
            if kind != "quarantine":  # clean data: quarantine files may be empty or absent, never these
                assert files_b, f"no {kind} files for {day}"
            for name in files_b:
                table_b, table_s = pq.read_table(files_b[name]), pq.read_table(files_s[name])
                if kind != "quarantine":
                    assert table_b.num_rows > 0, f"{kind}/{day}/{name} is empty"
                assert table_b.equals(table_s), f"{kind}/{day}/{name} differs between backfill and dags test"
