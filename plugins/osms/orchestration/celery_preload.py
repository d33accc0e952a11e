"""Imported by each Celery worker before it forks (see :mod:`osms.orchestration.celery_config`).

Only imports: no connection, thread or GX context is created here, so forking after it is safe.
"""

import duckdb  # noqa: F401
import great_expectations  # noqa: F401
import pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401

# the OpenLineage listener emits twice per task (start, end): its modules loaded once per worker, not per task
import airflow.providers.openlineage.plugins.adapter  # noqa: F401
import airflow.providers.openlineage.plugins.listener  # noqa: F401

import osms.package.build  # noqa: F401
import osms.quality.validate  # noqa: F401
import osms.sources.extract  # noqa: F401
