"""Mends for defects of the installed Airflow, each with the test that says when it can go.

**dag.test() and deadlines** (Airflow 3.3.2). ``dag.test()``, which ``airflow dags test`` and
``osms run`` run, builds its in-memory DAG by serializing and reading back the parsed DAG;
that DAG's ``deadline`` then holds each DeadlineAlert's *definition* (a dict), where a DAG read
from the metadata database holds the ids of the stored alerts (the DAG processor and
``sync_bag_to_db`` give them). When the run ends in success, ``DagRun.update_state`` looks each
of them up with ``DeadlineAlert.get_by_id``, which binds the dict as a UUID and fails: "'dict'
object has no attribute 'hex'", after every task succeeded. It is so for any DAG with a deadline
(a built-in reference too), not for ours only. :func:`accept_deadline_definitions` lets
``get_by_id`` answer a definition with an unsaved ``DeadlineAlert`` of that definition: all the
caller reads is which kind of reference it has (to drop the run's deadlines, which a test run
does not get: ``osms.orchestration.alerts.PackageDue``). An id is looked up as before.
``tests/unit/test_compat.py`` fails once Airflow hands ids to ``dag.test()`` itself: then drop this.

Installed by the project's plugin (``plugins/osms_ui_plugin.py``), which Airflow loads in its
components and in ``airflow dags test`` before the run is created (the package DAG's deadline
reference is registered there).
"""

from __future__ import annotations

from typing import Any

_MARK = "_osms_accepts_definitions"


def accept_deadline_definitions() -> bool:
    """Let ``DeadlineAlert.get_by_id`` take a deadline alert's definition as ``dag.test()`` gives it; idempotent.

    Returns whether the mend is in place (False where Airflow's core is not installed: nothing to mend).
    """
    try:
        from airflow.models.deadline_alert import DeadlineAlert
        from airflow.serialization.definitions.deadline import DeadlineAlertFields
        from airflow.serialization.enums import Encoding
    except ImportError:  # a Task SDK-only process: it never runs dag.test()
        return False
    original = DeadlineAlert.__dict__["get_by_id"]
    if getattr(original.__func__, _MARK, False):
        return True
    look_up = original.__func__

    def get_by_id(cls: type[DeadlineAlert], deadline_alert_id: Any, **kwargs: Any) -> DeadlineAlert:
        if isinstance(deadline_alert_id, dict):
            data = deadline_alert_id.get(Encoding.VAR, deadline_alert_id)
            return cls(name=data.get(DeadlineAlertFields.NAME), reference=data[DeadlineAlertFields.REFERENCE],
                       interval=data[DeadlineAlertFields.INTERVAL], callback_def=data[DeadlineAlertFields.CALLBACK])
        return look_up(cls, deadline_alert_id, **kwargs)

    setattr(get_by_id, _MARK, True)
    get_by_id.__doc__ = look_up.__doc__
    DeadlineAlert.get_by_id = classmethod(get_by_id)  # type: ignore[method-assign, assignment]
    return True
