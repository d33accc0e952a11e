"""DAG integrity: the agency DAGs load, match the registry, and parse light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from osms.core.registry import default_registry

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_one_dag_per_body(dagbag) -> None:
    bodies = {b.code for b in default_registry().all_bodies()}
    agency = {d for d in dagbag.dag_ids if d.startswith("agency_")}
    assert agency == {f"agency_{b}" for b in bodies} and len(agency) == 8


def test_dag_shape_follows_the_registry(dagbag) -> None:
    reg = default_registry()
    for body in reg.all_bodies():
        dag = dagbag.dags[body.dag_id]
        feeds = {(f.system, f.category) for e in reg.editions for f in e.feeds if f.body == body.code}
        extracts = {t.task_id for t in dag.tasks if ".extract_" in t.task_id}
        assert extracts == {f"{c}.extract_{s}" for s, c in feeds}
        validates = {t.task_id for t in dag.tasks if t.task_id.endswith(".validate")}
        assert validates == {f"{c}.validate" for _, c in feeds}
        publish = dag.get_task("publish_status")
        assert publish.upstream_task_ids == validates
        assert publish.trigger_rule == "all_done"


def test_dag_settings(dagbag) -> None:
    for dag_id in (d for d in dagbag.dag_ids if d.startswith("agency_")):
        dag = dagbag.dags[dag_id]
        assert str(dag.timezone.name) == "Asia/Almaty"
        import pendulum

        local = pendulum.instance(dag.start_date).in_timezone("Asia/Almaty")
        assert local.naive().isoformat() == "2022-09-26T00:00:00"  # Almaty was UTC+6 then, +5 since 2024
        assert dag.catchup is False
        assert "osms" in dag.tags and dag.doc_md and "| row |" in dag.doc_md
        assert dag.default_args["retries"] >= 1 and dag.default_args["owner"]


def test_labour_dag_reads_well(dagbag) -> None:
    dag = dagbag.dags["agency_labour"]
    groups = {t.task_id.split(".")[0] for t in dag.tasks if "." in t.task_id}
    assert len(groups) == 14  # 13 rows of 2022 + the 2026 category
    assert "crisis_nonworking.extract_labour_unnamed" in dag.task_ids


def test_parsing_is_fast_and_light() -> None:
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "t0 = time.perf_counter()\n"
        f"bag = DagBag({str(ROOT / 'dags')!r})\n"
        "print(json.dumps({'seconds': time.perf_counter() - t0, 'dags': len(bag.dag_ids),"
        " 'heavy': sorted(m for m in ('pandas', 'great_expectations', 'pyarrow', 'numpy') if m in sys.modules),"
        " 'osms': sorted(m for m in sys.modules if m.split('.')[0] in ('osms', 'mocks'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["dags"] >= 8
    assert doc["heavy"] == [m for m in doc["heavy"] if m == "numpy"]  # numpy may come with Airflow; never pandas/GX/pyarrow
    assert doc["seconds"] < 10
    # the DAGs load the core and the orchestration only: never the mocks, the dev stack, the UI or the heavy stages
    assert {m.split(".")[1] for m in doc["osms"] if "." in m} <= {"core", "orchestration"}, doc["osms"]
    assert not [m for m in doc["osms"] if m.startswith("mocks")]


def test_package_dag_shape(dagbag) -> None:
    dag = dagbag.dags["osms_daily_package"]
    bodies = {b.code for b in default_registry().all_bodies()}
    waits = {t.task_id for t in dag.tasks if t.task_id.startswith("wait_for_")}
    assert waits == {f"wait_for_{b}" for b in bodies}
    build = dag.get_task("build_package")
    # after every body's status, and after D-1's package is delivered (the chain)
    assert build.upstream_task_ids == waits | {"previous_package_delivered"} and build.trigger_rule == "all_done"
    assert dag.get_task("previous_package_delivered").mode == "reschedule"  # waits without a slot or a retry
    assert dag.get_task("deliver").upstream_task_ids == {"build_package"}
    assert dag.get_task("report").upstream_task_ids == {"build_package", "deliver"}
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"  # time-scheduled: backfillable
    sensor = dag.get_task("wait_for_labour")
    assert sensor.deferrable is True
