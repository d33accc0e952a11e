"""Airflow plugin: every task's wall time, CPU time and peak memory (see ``osms.orchestration.task_metrics``)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from osms.orchestration import task_metrics


class OsmsTaskMetricsPlugin(AirflowPlugin):
    """Records what each task cost, for the run summary and ``make bench-national``."""

    name = "osms_task_metrics"
    listeners = [task_metrics]
