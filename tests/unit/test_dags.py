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


# ----------------------------------------------------------------------------- Airflow's own means


def test_a_manual_run_of_the_package_dag_sets_typed_bounded_described_params(dagbag) -> None:
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    from osms.orchestration.package_dag import PREVIOUS_WAIT_CONF, START_CHAIN_CONF, STATUS_WAIT_CONF

    dag = dagbag.dags["osms_daily_package"]
    # the trigger form shows each with its title, description and bounds
    for name, default, most in ((STATUS_WAIT_CONF, 300, 24 * 60), (PREVIOUS_WAIT_CONF, 2 * 24 * 60, 2 * 24 * 60)):
        spec = dag.params.get_param(name)
        assert spec.value == default
        assert spec.schema["type"] == "integer" and spec.schema["minimum"] == 0 and spec.schema["maximum"] == most
        assert spec.schema["title"] and len(spec.description or "") > 40
    # Airflow checks a run's conf against them when it creates the run (the DAG as the scheduler and
    # the API server read it): a bad value never starts one
    stored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    assert stored.params.deep_merge({STATUS_WAIT_CONF: 0, PREVIOUS_WAIT_CONF: 30}).validate() == {
        STATUS_WAIT_CONF: 0, PREVIOUS_WAIT_CONF: 30, START_CHAIN_CONF: False}
    assert dag.params.get_param(START_CHAIN_CONF).schema["type"] == "boolean"  # a check box, off unless ticked
    for bad in ({STATUS_WAIT_CONF: -1}, {STATUS_WAIT_CONF: "soon"}, {STATUS_WAIT_CONF: 2.5}, {START_CHAIN_CONF: "yes"},
                {STATUS_WAIT_CONF: 24 * 60 + 1}, {PREVIOUS_WAIT_CONF: None}, {PREVIOUS_WAIT_CONF: 10**6}):
        with pytest.raises(ParamValidationError):
            stored.params.deep_merge(bad).validate()
    # the agency DAGs read no conf: they offer nothing to set
    assert all(not dagbag.dags[d].params for d in dagbag.dag_ids if d.startswith("agency_"))


def test_the_waits_are_the_runs_params() -> None:
    import datetime as dt

    from osms.orchestration.package_dag import STATUS_WAIT, BodyStatusSensor, _minutes_param

    sensor = BodyStatusSensor(task_id="wait_for_courts", body="courts", timeout=STATUS_WAIT)
    assert sensor._wait({"params": {"status_wait_minutes": 30}}) == dt.timedelta(minutes=30)
    assert sensor._wait({"params": {"status_wait_minutes": 0}}) == dt.timedelta(0)
    assert sensor._wait({"params": {}}) == STATUS_WAIT  # a run created before the params: the sensor's own
    assert _minutes_param({"params": {"previous_wait_minutes": 5}}, "previous_wait_minutes", 60) == dt.timedelta(
        minutes=5)
    assert _minutes_param({}, "previous_wait_minutes", 60.0) == dt.timedelta(minutes=1)


def test_every_extract_runs_in_its_systems_pool(dagbag) -> None:
    from osms.orchestration.pools import source_pools

    reg = default_registry()
    pools = source_pools()
    for body in reg.all_bodies():
        for t in dagbag.dags[body.dag_id].tasks:
            if ".extract_" in t.task_id:
                system = t.task_id.split(".extract_", 1)[1]
                assert t.pool == f"osms_source_{system}" and t.pool in pools, t.task_id
            else:
                assert t.pool == "default_pool", t.task_id
    assert len(pools) == len(reg.all_systems()) and all(p.startswith("osms_source_") for p in pools)


def test_pool_size_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from osms.orchestration import pools

    monkeypatch.delenv(pools.POOL_SLOTS_ENV, raising=False)
    assert pools.pool_slots() == pools.DEFAULT_POOL_SLOTS == 2
    monkeypatch.setenv(pools.POOL_SLOTS_ENV, " 4 ")
    assert pools.pool_slots() == 4
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(pools.POOL_SLOTS_ENV, bad)
        with pytest.raises(ValueError, match=pools.POOL_SLOTS_ENV):
            pools.pool_slots()


def test_assets_link_the_bodies_statuses_to_the_package_while_the_schedule_stays_time(dagbag) -> None:
    from osms.orchestration.assets import package_asset, status_asset

    bodies = [b.code for b in default_registry().all_bodies()]
    for body in bodies:
        assert dagbag.dags[f"agency_{body}"].get_task("publish_status").outlets == [status_asset(body)]
    package = dagbag.dags["osms_daily_package"]
    for body in bodies:
        assert package.get_task(f"wait_for_{body}").inlets == [status_asset(body)]
    deliver = package.get_task("deliver")
    build = package.get_task("build_package")
    assert {a.name for a in build.inlets} == {status_asset(b).name for b in bodies}
    assert build.outlets == [package_asset()]
    assert deliver.inlets == [package_asset()]
    assert deliver.outlets == [package_asset()]
    assert type(package.timetable).__name__ == "CronDataIntervalTimetable"  # the assets never schedule it
    assert len({status_asset(b).uri for b in bodies} | {package_asset().uri}) == len(bodies) + 1
