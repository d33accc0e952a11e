"""What each OSMS role may do, in each shape: README's role table as data, and the REST calls that prove it.

One row per thing people do; per shape (``distributed``: FAB's auth manager, ``make cluster`` and
docker-compose; ``embedded``: Airflow's simple auth manager, ``make airflow``) and role whether
it is allowed (``True``), refused (``False``) or does not exist there (``None``). Each row names
the REST calls that do it (:class:`Probe`): for an allowed role every one must answer one of its
``ok`` statuses, for a refused role every one must answer 403. ``tests/unit/test_readme_roles.py``
keeps README's table equal to :data:`ROWS`; ``tests/e2e/test_roles_distributed.py`` and
``tests/e2e/test_roles_embedded.py`` run the probes against real servers.

The probes leave nothing that matters behind: runs are triggered for days of their own of the
smallest body (courts: a few seconds each), clears and backfills are dry runs, what a role
creates it deletes, and what is edited is the probes' own connection, variable and pool (the
receiver's connection only by its description).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("engineer", "operator", "qa")
SHAPES = ("distributed", "embedded")
PROBE_DAG = "agency_courts"
# days no other test runs (a run needs a day from the DAG's start, 2022-09-26, to have task instances)
SETUP_DAY = "2023-01-01T00:30:00+06:00"
TRIGGER_DAY = {"engineer": "2023-01-02T00:30:00+06:00", "operator": "2023-01-03T00:30:00+06:00",
               "qa": "2023-01-04T00:30:00+06:00"}
# what the engineer creates before the probes, for the others to try to read, edit and delete
PROBE_CONNECTION = "osms_probe"
PROBE_VARIABLE = "osms_probe_variable"
PROBE_POOL = "osms_probe_pool"
RECEIVER_CONNECTION = "osms_state_corp"


@dataclass(frozen=True)
class Probe:
    """One REST call; ``{role}``, ``{run}`` and ``{day}`` in the path or body are filled in per role."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    ok: tuple[int, ...] = (200,)

    def render(self, **values: str) -> tuple[str, dict[str, Any] | None]:
        """The path and body with the role's values in."""
        def fill(x: Any) -> Any:
            if isinstance(x, str):
                return x.format(**values)
            if isinstance(x, dict):
                return {k: fill(v) for k, v in x.items()}
            return x

        return fill(self.path), fill(self.body)


@dataclass(frozen=True)
class Row:
    """A line of README's role table."""

    what: str
    allowed: dict[str, dict[str, bool | None]]  # shape -> role -> allowed
    probes: tuple[Probe, ...] = ()
    permission: tuple[str, str] | None = None  # a FAB permission to look for instead (no endpoint of ours yet)
    notes: dict[str, str] = field(default_factory=dict)

    def of(self, shape: str, role: str) -> bool | None:
        return self.allowed[shape][role]


def _same(engineer: bool, operator: bool, qa: bool) -> dict[str, dict[str, bool | None]]:
    return {s: {"engineer": engineer, "operator": operator, "qa": qa} for s in SHAPES}


def _differ(distributed: tuple[bool | None, ...],
            embedded: tuple[bool | None, ...]) -> dict[str, dict[str, bool | None]]:
    return {"distributed": dict(zip(ROLES, distributed)), "embedded": dict(zip(ROLES, embedded))}


RUN = f"/api/v2/dags/{PROBE_DAG}/dagRuns/{{run}}"
ROWS: tuple[Row, ...] = (
    Row("read DAGs, runs, task instances and task logs", _same(True, True, True), (
        Probe("GET", "/api/v2/dags"),
        Probe("GET", f"/api/v2/dags/{PROBE_DAG}/dagRuns"),
        Probe("GET", f"{RUN}/taskInstances"),
        Probe("GET", f"{RUN}/taskInstances/publish_status/logs/1"),
    )),
    Row("read the Data quality pages and their API", _same(True, True, True), (
        Probe("GET", "/osms/api/days"),
        Probe("GET", "/osms/quality"),
    )),
    Row("read pools and how full they are", _same(True, True, True), (
        Probe("GET", "/api/v2/pools"),
        Probe("GET", "/api/v2/pools/osms_source_judicial_is"),
    )),
    Row("trigger a run", _same(True, True, False), (
        Probe("POST", f"/api/v2/dags/{PROBE_DAG}/dagRuns", {"logical_date": "{day}"}),
    )),
    Row("start a backfill", _same(True, True, False), (
        Probe("POST", "/api/v2/backfills/dry_run", {"dag_id": PROBE_DAG, "from_date": "2025-06-01T00:30:00+05:00",
                                                    "to_date": "2025-06-02T00:30:00+05:00"}),
    )),
    Row("clear runs and tasks", _same(True, True, False), (
        Probe("POST", f"{RUN}/clear", {"dry_run": True}),
        Probe("POST", f"/api/v2/dags/{PROBE_DAG}/clearTaskInstances",
              {"dry_run": True, "dag_run_id": "{run}", "only_failed": False}),
    )),
    Row("mark runs and tasks (success, failed)", _same(True, True, False), (
        Probe("PATCH", RUN, {"state": "success"}),
        Probe("PATCH", f"{RUN}/taskInstances/publish_status/dry_run", {"new_state": "success"}),
    )),
    Row("pause and unpause a DAG", _same(True, True, False), (
        Probe("PATCH", f"/api/v2/dags/{PROBE_DAG}", {"is_paused": False}),
    )),
    Row("delete a DAG's history (the DAG, a run)", _differ((True, False, False), (True, True, False)), (
        # a DAG that does not exist: an allowed role is let through, then told it is not there
        Probe("DELETE", "/api/v2/dags/osms_no_such_dag", ok=(404,)),
    ), notes={"embedded": "the simple auth manager's `user` may delete what it may trigger"}),
    Row("read, create, edit or delete connections (their passwords included)", _same(True, False, False), (
        Probe("GET", f"/api/v2/connections/{PROBE_CONNECTION}"),
        Probe("GET", "/api/v2/connections"),
        Probe("POST", "/api/v2/connections", {"connection_id": "osms_probe_{role}", "conn_type": "http",
                                              "host": "127.0.0.1"}, ok=(201,)),
        Probe("PATCH", f"/api/v2/connections/{PROBE_CONNECTION}", {"connection_id": PROBE_CONNECTION,
                                                                   "conn_type": "http", "host": "127.0.0.2"}),
        # (make airflow gives the receiver's connection as an environment variable: not there to edit, 404)
        Probe("PATCH", f"/api/v2/connections/{RECEIVER_CONNECTION}?update_mask=description",
              {"connection_id": RECEIVER_CONNECTION, "conn_type": "http", "description": "probed by {role}"},
              ok=(200, 404)),
        Probe("DELETE", "/api/v2/connections/osms_probe_{role}", ok=(204,)),
    )),
    Row("read, create, edit or delete variables (the signing key's included)", _same(True, False, False), (
        Probe("GET", f"/api/v2/variables/{PROBE_VARIABLE}"),
        Probe("GET", "/api/v2/variables"),
        Probe("POST", "/api/v2/variables", {"key": "osms_probe_variable_{role}", "value": "1"}, ok=(201,)),
        Probe("PATCH", f"/api/v2/variables/{PROBE_VARIABLE}", {"key": PROBE_VARIABLE, "value": "{role}"}),
        Probe("DELETE", "/api/v2/variables/osms_probe_variable_{role}", ok=(204,)),
    )),
    Row("create, edit or delete pools", _same(True, False, False), (
        Probe("POST", "/api/v2/pools", {"name": "osms_probe_pool_{role}", "slots": 1}, ok=(201,)),
        Probe("PATCH", f"/api/v2/pools/{PROBE_POOL}", {"pool": PROBE_POOL, "slots": 2, "include_deferred": False}),
        Probe("DELETE", "/api/v2/pools/osms_probe_pool_{role}", ok=(204,)),
    )),
    Row("read, create, edit or delete users and roles", _differ((True, False, False), (None, None, None)), (
        Probe("GET", "/auth/fab/v1/users"),
        Probe("GET", "/auth/fab/v1/roles"),
        Probe("POST", "/auth/fab/v1/roles", {"name": "osms_probe_role_{role}", "actions": []}),
        Probe("DELETE", "/auth/fab/v1/roles/osms_probe_role_{role}", ok=(200, 204)),
    ), notes={"embedded": "users and roles are settings of the simple auth manager, not data"}),
    Row("make QA decisions (the permission \"QA decisions\")", _same(True, False, True),
        permission=("can_create", "QA decisions"),
        notes={"embedded": "the simple auth manager lets every role that sees a custom view act on it, so the "
                            "decision also asks OSMS_QA_DECIDERS (qa,engineer) as HITL tasks restrict who answers"}),
)


def cell(value: bool | None) -> str:
    """The README's word for an entry."""
    return {True: "yes", False: "no", None: "n/a"}[value]


# --------------------------------------------------------------------------- running the probes


def prepare(af: Any, timeout: float = 600) -> str:
    """As the engineer: a finished run to clear, mark and read logs of, and a connection, variable and pool to try.

    Returns the run's id. ``af`` is a started ``osms.dev.airflow_local.LocalAirflow``.
    """
    af.api("POST", "/api/v2/connections", ok=(201, 409),
           json={"connection_id": PROBE_CONNECTION, "conn_type": "http", "host": "127.0.0.1", "password": "secret"})
    af.api("POST", "/api/v2/variables", ok=(201, 409), json={"key": PROBE_VARIABLE, "value": "0"})
    af.api("POST", "/api/v2/pools", ok=(201, 409), json={"name": PROBE_POOL, "slots": 1})
    run = af.api("POST", f"/api/v2/dags/{PROBE_DAG}/dagRuns", ok=(200, 409), json={"logical_date": SETUP_DAY})
    run_id = run["dag_run_id"] if run else next(
        r["dag_run_id"] for r in af.dag_runs(PROBE_DAG) if r["logical_date"].startswith(SETUP_DAY[:10]))

    def finished() -> bool:
        state = af.api("GET", f"/api/v2/dags/{PROBE_DAG}/dagRuns/{run_id}")["state"]
        assert state != "failed", f"the probes' run {run_id} failed"
        return state == "success"

    try:
        af.poll(finished, timeout=timeout, interval=1, what=f"the probes' run {run_id} of {PROBE_DAG}")
    except Exception as exc:  # say where it stood: the tasks' states come before the components' log tails
        states = [(t["task_id"], t["state"]) for t in af.task_instances(PROBE_DAG, run_id)]
        raise AssertionError(f"the probes' run did not finish: {states}\n{exc}") from None
    return run_id


def probe(url: str, token: str, role: str, shape: str, run_id: str) -> list[str]:
    """Every probe of :data:`ROWS` as ``role``; what did not answer as the table says (empty: all did)."""
    import httpx

    wrong = []
    values = {"role": role, "run": run_id, "day": TRIGGER_DAY[role]}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for row in ROWS:
            allowed = row.of(shape, role)
            if allowed is None:
                continue
            for p in row.probes:
                path, body = p.render(**values)
                r = client.request(p.method, path, json=body)
                if allowed and r.status_code not in p.ok:
                    wrong.append(f"{role} may {row.what}, but {p.method} {path} answered {r.status_code}:"
                                 f" {r.text[:200]}")
                elif not allowed and r.status_code != 403:
                    wrong.append(f"{role} may not {row.what}, but {p.method} {path} answered {r.status_code}")
    return wrong
