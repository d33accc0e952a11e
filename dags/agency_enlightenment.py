"""Airflow agency DAG of the body `enlightenment`: its feeds under Decree No. 660, built from the registry."""

from osms.orchestration.dag_factory import build_agency_dag

dag = build_agency_dag("enlightenment")
