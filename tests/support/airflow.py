"""Helpers for tests that drive a real Airflow (``osms.dev.airflow_local.LocalAirflow``)."""

from __future__ import annotations

import pytest

from osms.dev.airflow_local import LocalAirflow


def backfill_create(af: LocalAirflow, dag_id: str, from_date: str, to_date: str) -> None:
    """``airflow backfill create`` as an operator types it; retried only if SQLite was busy.

    The CLI writes the metadata database directly while the scheduler and the DAG processor
    use it too; on a lock error it removes its partial backfill, so trying again is safe.
    """
    args = ("backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date)
    for attempt in range(3):
        out = af.cli(*args, check=False)
        if out.returncode == 0:
            return
        if "database is locked" not in out.stdout or attempt == 2:
            pytest.fail(f"`airflow {' '.join(args)}` failed ({out.returncode}):\n{out.stdout[-3000:]}")
