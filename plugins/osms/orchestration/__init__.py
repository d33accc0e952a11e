"""Airflow: the agency and package DAG builders, alerts and notices, the sorting of
failures, and the task metrics listener."""
