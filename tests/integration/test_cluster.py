"""The distributed shape, natively (``make cluster``): backfills on Celery give ``osms run``'s packages, a worker's death included.

A real cluster on 127.0.0.1 (``osms.dev.cluster.Cluster``: PostgreSQL 15, Redis, the mocks,
FAB, the API server, scheduler, DAG processor, triggerer and two Celery workers),
configured from ``config/`` as docker-compose.yaml is. The operator starts two
consecutive days as the UI's backfill dialog does (``POST /api/v2/backfills``, max active
runs 1), every agency DAG and the package DAG. While the first tasks run, one Celery
worker is killed with SIGKILL, its task processes with it, as when its host dies: the
scheduler finds the task without heartbeat and its retry runs on the other worker. Then
each day's package must be byte for byte the one ``osms run`` builds for that day in a
data dir of its own (the receipt aside: the receivers differ).

How soon Airflow gives up on what the dead worker held is configuration (the DAGs are
unchanged): a running task without heartbeat after 20 s instead of 5 minutes
(``[scheduler] task_instance_heartbeat_timeout``), a task the worker had taken but not yet
started after 60 s in the queue instead of 10 minutes (``task_queued_timeout``; the
cluster queues no more tasks than its workers run, so no healthy task waits that long).
The retry waits the DAG's own delay (2 minutes): ``osms run`` builds its reference
packages meanwhile.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from osms.dev.airflow_local import AirflowLocalError, free_port
from osms.dev.cluster import PG_BINDIR, Cluster
from osms.core.dates import ALMATY
from tests.support.reference import PACKAGE_FILES, OsmsRuns

_MISSING = [name for name, found in (("PostgreSQL 15", (PG_BINDIR / "postgres").exists()),
                                     ("Redis", shutil.which("redis-server"))) if not found]
pytestmark = [
    pytest.mark.integration,
    # CI's `make test` installs both first (make servers); a bare `pytest` elsewhere may lack them
    pytest.mark.skipif(bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed: run `make servers`"),
]

DAYS = [dt.date(2025, 6, 1), dt.date(2025, 6, 2)]
RUNS_TIMEOUT = 900  # seconds for both days' runs, the retry of the killed task included (a ceiling against a hang)
TIMEOUTS = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20", "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One signing key pair for osms run and the cluster (the same key gives the same signature)."""
    key_dir = tmp_path_factory.mktemp("keys")
    previous = os.environ.get("OSMS_KEY_DIR")
    os.environ["OSMS_KEY_DIR"] = str(key_dir)
    yield key_dir
    if previous is None:
        os.environ.pop("OSMS_KEY_DIR", None)
    else:
        os.environ["OSMS_KEY_DIR"] = previous


@pytest.fixture
def cluster_data() -> Iterator[Path]:
    """A data root the cluster's PostgreSQL can reach when the tests run as root (pytest's own tmp is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="osms-cluster-"))
    root.chmod(0o755)
    yield root / "data"
    subprocess.run(["rm", "-rf", str(root)], check=False)


def _day(run: dict) -> dt.date:
    return pendulum.parse(run["logical_date"]).in_timezone(ALMATY).date()


def _backfill(cluster: Cluster, dag_id: str, run_time: dt.time) -> None:
    """The UI's backfill dialog: From and To as run moments in Almaty, max active runs 1, as the operator."""
    af = cluster.airflow
    moments = [pendulum.datetime(d.year, d.month, d.day, run_time.hour, run_time.minute, tz=ALMATY) for d in DAYS]
    import httpx

    r = httpx.post(f"{af.url}/api/v2/backfills", headers={"Authorization": f"Bearer {af.token('operator')}"},
                   json={"dag_id": dag_id, "from_date": moments[0].isoformat(), "to_date": moments[-1].isoformat(),
                         "max_active_runs": 1, "reprocess_behavior": "none", "run_backwards": False}, timeout=30)
    assert r.status_code == 200, f"the operator's backfill of {dag_id} answered {r.status_code}: {r.text[:500]}"


def _task_instances(cluster: Cluster) -> list[dict]:
    """Every task instance, page by page (the API gives at most ``[api] maximum_page_limit``, 100, at once)."""
    found: list[dict] = []
    while True:
        answer = cluster.airflow.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances",
                                     params={"limit": 100, "offset": len(found), "order_by": "id"})
        page = list(answer["task_instances"])
        found += page
        if not page or len(found) >= int(answer["total_entries"]):
            return found


def _kill_a_worker_mid_task(cluster: Cluster) -> tuple[str, list[dict]]:
    """Wait for a task the API reports running in a worker's process, then SIGKILL that worker and everything under it.

    A task process exists a moment before its task instance is ``running`` (the Task SDK
    asks the API server first), so the worker is chosen by the task instances' pids.
    """
    af = cluster.airflow

    def running_on_a_worker() -> tuple[str, list[dict]] | None:
        cluster.check_alive()
        pids = {w: set(af.task_processes(w)) for w in cluster.worker_names}
        if not any(pids.values()):
            return None
        running = [t for t in _task_instances(cluster) if t["state"] == "running"]
        for worker in cluster.worker_names:
            mine = [t for t in running if t.get("pid") in pids[worker]]
            if mine:
                return worker, mine
        return None

    worker, running = af.poll(running_on_a_worker, timeout=120, interval=0.2,
                              what="a task running in a Celery worker's process")
    killed = set(af.kill(worker))
    interrupted = [t for t in running if t.get("pid") in killed]
    assert interrupted, f"no running task had a process under {worker}: {[(t['task_id'], t['pid']) for t in running]}"
    return worker, interrupted


def _summary(cluster: Cluster) -> str:
    lines = []
    for t in sorted(_task_instances(cluster), key=lambda t: (t["dag_id"], t["logical_date"] or "", t["task_id"])):
        if t["state"] != "success":
            lines.append(f"{t['dag_id']} {t['dag_run_id']} {t['task_id']}: {t['state']} (try {t['try_number']})")
    return "\n".join(lines) + "\n" + cluster.airflow.logs_tail(20, ["scheduler", *cluster.worker_names])


def test_backfills_on_celery_equal_osms_run_with_a_worker_killed(cluster_data: Path, keys: Path,
                                                                  tmp_path: Path) -> None:
    from osms.core.registry import default_registry
    from osms.orchestration.package_dag import DAG_ID as PACKAGE_DAG

    agency_dags = sorted({b.dag_id for d in DAYS for b in default_registry().edition_on(d).bodies})
    timings: dict[str, float] = {}
    started = time.monotonic()
    cluster = Cluster(cluster_data, port=free_port(), use_job_schedule=False, say=lambda _: None,
                      extra_env=TIMEOUTS, scrape_interval="2s")
    reference = OsmsRuns(tmp_path / "osms-run", DAYS)
    try:
        cluster.start()
        timings["start"] = time.monotonic() - started
        af = cluster.airflow

        # healthy, both workers answering, and nothing listening beyond 127.0.0.1
        health = af.health()
        assert all(health[k]["status"] == "healthy" for k in ("metadatabase", "scheduler", "triggerer",
                                                               "dag_processor")), health
        assert af.celery_workers() == cluster.worker_names
        listening = cluster.listening()
        assert {what for what, *_ in listening} >= {"api-server", "postgres", "redis", "mocks", "prometheus"}, listening
        foreign = [x for x in listening if x[2] != "127.0.0.1"]
        assert not foreign, f"the cluster listens beyond 127.0.0.1: {foreign}"

        # the operator backfills both days: every agency DAG, and the package DAG (its sensors wait for them)
        for dag_id in agency_dags:
            _backfill(cluster, dag_id, dt.time(0, 30))
        _backfill(cluster, PACKAGE_DAG, dt.time(0, 45))

        worker, interrupted = _kill_a_worker_mid_task(cluster)
        timings["killed"] = time.monotonic() - started
        reference.start()  # while the cluster waits on the dead worker's tasks
        survivor = next(w for w in cluster.worker_names if w != worker)
        assert af.celery_workers() == [survivor]

        def all_done() -> bool:
            cluster.check_alive()
            runs = af.api("GET", "/api/v2/dags/~/dagRuns", params={"limit": 100, "run_type": "backfill"})["dag_runs"]
            failed = [r for r in runs if r["state"] == "failed"]
            if failed:
                pytest.fail(f"backfill runs failed: {[(r['dag_id'], _day(r)) for r in failed]}\n{_summary(cluster)}")
            return len(runs) == len(DAYS) * (len(agency_dags) + 1) and all(r["state"] == "success" for r in runs)

        try:
            af.poll(all_done, timeout=RUNS_TIMEOUT, interval=2, what="both days' backfill runs to succeed")
        except AirflowLocalError as exc:
            pytest.fail(f"{exc}\n{_summary(cluster)}")
        timings["runs"] = time.monotonic() - started

        # the killed worker's tasks ran again, on the survivor, and succeeded
        after = {(t["dag_id"], t["dag_run_id"], t["task_id"], t["map_index"]): t for t in _task_instances(cluster)}
        for t in interrupted:
            now = after[(t["dag_id"], t["dag_run_id"], t["task_id"], t["map_index"])]
            assert now["state"] == "success" and now["try_number"] > t["try_number"], (t, now)
            retried = (f"task_id='{t['task_id']}', dag_id='{t['dag_id']}', run_id='{t['dag_run_id']}',"
                       f" try_number={now['try_number']}")
            assert retried in (af.log_dir / f"{survivor}.log").read_text(errors="replace"), (
                f"{survivor} did not run {retried}")
        af.wait_tasks_finished()

        # Prometheus scraped the pipeline's figures from the API server: both days delivered, nothing owed since
        prometheus = cluster.prometheus
        assert prometheus is not None

        def delivered() -> bool:
            up = prometheus.query('up{job="osms"}')
            found = {r["metric"].get("day"): r["value"][1] for r in prometheus.query("osms_package_delivered")}
            return bool(up) and up[0]["value"][1] == "1" and all(found.get(str(d)) == "1" for d in DAYS)

        af.poll(delivered, timeout=60, interval=2, what="Prometheus to scrape both days' packages as delivered")
        assert prometheus.query("osms_chain_start_timestamp_seconds"), "the chain's start is not in Prometheus"
    finally:
        killed = cluster.stop()
        timings["stopped"] = time.monotonic() - started
        print(f"\ncluster test timings (s from start): {timings}")
    assert not killed, f"had to SIGKILL at stop: {killed}"
    assert not af.leftovers(), f"processes left running: {af.leftovers()}"

    # each day's package is byte for byte osms run's
    reference_data = reference.wait()
    print(f"osms run for both days done at {time.monotonic() - started:.0f} s")
    for day in DAYS:
        ours, theirs = cluster_data / "packages" / day.isoformat(), reference_data / "packages" / day.isoformat()
        assert (ours / "receipt.json").is_file(), f"no receipt for {day}: the package was not delivered"
        for name in PACKAGE_FILES:
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), (
                f"{day}/{name} differs between the cluster's backfill and osms run")
