"""The three people on the embedded shape (``make airflow``: the simple auth manager), over REST.

One stack for the module, started as ``make airflow`` starts it (``tests/e2e/conftest.py``).
Every line of README's role table is called as each person (``tests/support/roles.py``):
refused ones answer 403, allowed ones succeed; and a manual run with a wait outside its
Param's bounds is refused before it starts. The browser tests of this shape are in
``test_airflow_ui.py``; the distributed shape's in ``test_roles_distributed.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from osms.core.dates import logical_date
from tests.support import roles

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def probe_run(stack: Any) -> str:
    return roles.prepare(stack.airflow)


@pytest.mark.parametrize("role", roles.ROLES)
def test_each_role_may_do_what_the_table_says_and_nothing_more(stack: Any, probe_run: str, role: str) -> None:
    wrong = roles.probe(stack.url, stack.airflow.token(role), role, "embedded", probe_run)
    assert not wrong, "\n".join(wrong)


def test_the_receivers_connection_kept_its_place(stack: Any, probe_run: str) -> None:
    """The receiver's connection is an environment variable here: no role reaches it through the API."""
    assert stack.airflow.api("GET", f"/api/v2/connections/{roles.RECEIVER_CONNECTION}") is None  # 404: not in the DB


def test_a_wait_outside_its_bounds_is_refused_before_the_run_starts(stack: Any) -> None:
    from osms.orchestration.package_dag import DAG_ID

    before = stack.airflow.dag_runs(DAG_ID)
    for conf in ({"status_wait_minutes": -5}, {"previous_wait_minutes": "later"}):
        r = httpx.post(f"{stack.url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30,
                       headers={"Authorization": f"Bearer {stack.airflow.token('operator')}"},
                       json={"logical_date": logical_date(dt.date(2022, 1, 5)), "conf": conf})
        assert r.status_code == 400 and next(iter(conf)) in r.text, r.text[:500]
    assert stack.airflow.dag_runs(DAG_ID) == before
