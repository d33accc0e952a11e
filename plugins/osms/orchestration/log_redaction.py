"""IINs masked in every task's log, as a second line of defence (see :mod:`osms.core.redact`).

An Airflow listener (registered by ``plugins/osms_log_redaction_plugin.py``): at the start of
every task, in the process that runs it (a LocalExecutor or Celery task process, or
``dag.test()`` in ``osms run``'s warm workers), the logging filter goes on every handler and
the processor into structlog's chain, after Airflow has set up the task's logging. Messages
are written never to hold an IIN; this masks what a library may quote.
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Mask IINs in this task's log lines from now on."""
    from osms.core.redact import install_log_redaction

    install_log_redaction()
