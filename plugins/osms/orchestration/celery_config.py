"""The Celery workers' configuration: Airflow's own, plus the pipeline's libraries loaded once per worker.

``[celery] celery_config_options`` points here (``config/distributed.env``). A Celery
worker imports :data:`CELERY_CONFIG`'s ``imports`` in its main process before it forks
its pool, and Airflow forks each task's process from there: pandas, pyarrow, DuckDB and
Great Expectations are then loaded once per worker, not once per task (about four
CPU-seconds a task on this machine), as Airflow itself preloads its operators. The
scheduler reads the same configuration but never imports a worker's ``imports``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

__all__ = ["CELERY_CONFIG"]

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": [*DEFAULT_CELERY_CONFIG.get("imports", ()), "osms.orchestration.celery_preload"],
}
