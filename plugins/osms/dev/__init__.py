"""The developer's and operator's stack, never loaded by the DAGs: the `osms` command, the local
runner (warm workers), the local Airflow, the native cluster, compose settings."""
