"""Lineage: the status and package Assets on the tasks, and the OpenLineage transports of the two shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osms.dev import settings

pytestmark = pytest.mark.unit


def test_the_tasks_carry_the_status_and_package_assets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OSMS_DATA_DIR", str(tmp_path))
    from osms.core.registry import default_registry
    from osms.orchestration.dag_factory import build_agency_dag
    from osms.orchestration.package_dag import build_package_dag

    package = build_package_dag()
    tasks = {t.task_id: t for t in package.tasks}
    bodies = default_registry().all_bodies()
    statuses = {f"file://{tmp_path}/status/{b.code}" for b in bodies}
    assert {a.uri for a in tasks["build_package"].inlets} == statuses
    assert [a.uri for a in tasks["build_package"].outlets] == [f"file://{tmp_path}/packages"]
    assert [a.uri for a in tasks["deliver"].inlets] == [f"file://{tmp_path}/packages"]
    assert [a.uri for a in tasks["wait_for_labour"].inlets] == [f"file://{tmp_path}/status/labour"]
    agency = build_agency_dag("labour")
    publish = next(t for t in agency.tasks if t.task_id == "publish_status")
    assert [(a.name, a.uri) for a in publish.outlets] == [("osms.status.labour", f"file://{tmp_path}/status/labour")]


def test_the_embedded_shape_writes_lineage_to_files_the_distributed_one_only_where_configured() -> None:
    embedded = settings.read_settings("embedded")
    assert json.loads(embedded[settings.LINEAGE_TRANSPORT]) == {"type": "file",
                                                                "log_file_path": "$OSMS_DATA_DIR/lineage/event"}
    assert settings.LINEAGE_TRANSPORT not in settings.read_settings("distributed")  # lineage_http_transport's
    for shape in settings.SHAPES:
        values = settings.read_settings(shape)
        assert values["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "osms"
        assert values["AIRFLOW__OPENLINEAGE__DISABLE_SOURCE_CODE"] == "True"


def test_an_http_transport_for_a_lineage_server() -> None:
    env = settings.lineage_http_transport("http://127.0.0.1:5000/", api_key="k")
    assert json.loads(env[settings.LINEAGE_TRANSPORT]) == {
        "type": "http", "url": "http://127.0.0.1:5000", "endpoint": "api/v1/lineage", "timeout": 5.0,
        "auth": {"type": "api_key", "apiKey": "k"}}
    for bad in ("marquez:5000", "file:///etc/passwd", "http://"):
        with pytest.raises(settings.SettingsError, match="http"):
            settings.lineage_http_transport(bad)
