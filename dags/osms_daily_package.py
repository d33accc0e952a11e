"""Airflow DAG of the consolidated daily package (Decree No. 660): built from plugins/osms/orchestration/package_dag.py."""

from osms.orchestration.package_dag import build_package_dag

dag = build_package_dag()
