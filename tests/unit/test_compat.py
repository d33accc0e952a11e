"""The mends for the installed Airflow (``osms.orchestration.compat``): still needed, and doing what they say.

``tests/integration/test_dags_test.py`` runs ``airflow dags test`` of the package DAG for real.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from osms.orchestration import compat
from osms.orchestration.package_dag import build_package_dag

pytestmark = pytest.mark.unit


def _test_dag_deadline() -> list[Any]:
    """The deadline of the in-memory DAG dag.test() builds (the parsed DAG serialized and read back)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return list(DagSerialization.deserialize_dag(DagSerialization.serialize_dag(build_package_dag())).deadline)


def test_dag_test_still_gets_definitions_not_ids() -> None:
    """When this fails, Airflow gives dag.test() the stored alerts' ids: drop accept_deadline_definitions."""
    deadline = _test_dag_deadline()
    assert len(deadline) == 1 and isinstance(deadline[0], dict)


def test_a_definition_is_answered_with_an_alert_of_that_definition() -> None:
    # arrange
    from airflow.models.deadline_alert import DeadlineAlert
    from airflow.serialization.definitions.deadline import SerializedReferenceModels

    assert compat.accept_deadline_definitions() and compat.accept_deadline_definitions()  # idempotent
    definition = _test_dag_deadline()[0]

    class NoSession:
        def scalar(self, statement: Any) -> Any:
            raise AssertionError("a definition needs no look-up")

    # act
    alert = DeadlineAlert.get_by_id(definition, session=NoSession())

    # assert: what DagRun.update_state reads to drop a succeeded run's deadlines
    assert alert.reference_class is SerializedReferenceModels.SerializedCustomReference
    assert alert.reference["__class_path"] == "osms.orchestration.alerts.PackageDue"
    assert alert.name == "package delivered by D+1 07:00 Asia/Almaty" and alert.id is None  # never stored


def test_an_id_is_still_looked_up() -> None:
    from airflow.models.deadline_alert import DeadlineAlert

    compat.accept_deadline_definitions()
    stored, asked = object(), []

    class Session:
        def scalar(self, statement: Any) -> Any:
            asked.append(statement)
            return stored

    wanted = uuid.uuid4()
    assert DeadlineAlert.get_by_id(str(wanted), session=Session()) is stored
    assert len(asked) == 1 and wanted in asked[0].compile().params.values()


def test_the_plugin_installs_the_mend() -> None:
    """In a fresh process (this one has it already): Airflow loading the plugin is what mends get_by_id."""
    import subprocess
    import sys

    code = ("from airflow.models.deadline_alert import DeadlineAlert as A\n"
            "mark = lambda: getattr(A.__dict__['get_by_id'].__func__, '_osms_accepts_definitions', False)\n"
            "before = mark()\n"
            "from airflow import plugins_manager\n"
            "plugins_manager.get_deadline_references_plugins()\n"
            "print(before, mark())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split()[-2:] == ["False", "True"], out.stdout[-500:] + out.stderr[-2000:]
