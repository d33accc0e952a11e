"""Airflow plugin: the OSMS "Data quality" pages in Airflow's navigation (see ``osms.ui.app``), the pipeline's
Prometheus metrics (``osms.ui.metrics``), and the package DAG's deadline reference (``osms.orchestration.alerts``)."""

from __future__ import annotations

from functools import cached_property

from airflow.plugins_manager import AirflowPlugin

from osms.orchestration.alerts import PackageDue


class OsmsDataQualityPlugin(AirflowPlugin):
    """Data quality, trends, Data Docs and package checks for operators and QA, behind Airflow's login."""

    name = "osms_data_quality"
    # The package DAG's deadline (D+1 07:00 Almaty, none for backfills): Airflow reads it back from the
    # serialized DAG only if a plugin registers it. A light import: no FastAPI, no pipeline.
    deadline_references = [PackageDue]

    # Built on first use, once per process: only the API server asks for the app, so
    # schedulers, DAG processors and task processes never import FastAPI or Jinja for it.

    @cached_property
    def fastapi_apps(self) -> list[dict]:  # type: ignore[override]
        from osms.ui import metrics
        from osms.ui.app import URL_PREFIX, create_app

        # the metrics have a guard of their own (a scrape token, not a person's login): an app of their own
        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "OSMS data quality"},
                {"app": metrics.create_metrics_app(), "url_prefix": metrics.URL_PREFIX, "name": "OSMS metrics"}]

    @cached_property
    def external_views(self) -> list[dict]:  # type: ignore[override]
        from osms.ui.app import external_view

        return [external_view()]
