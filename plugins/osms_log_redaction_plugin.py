"""Airflow plugin: IINs masked in every task's log (see ``osms.orchestration.log_redaction``)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from osms.orchestration import log_redaction


class OsmsLogRedactionPlugin(AirflowPlugin):
    """A second line of defence: a 12-digit string that passes the IIN check never reaches a task log."""

    name = "osms_log_redaction"
    listeners = [log_redaction]
