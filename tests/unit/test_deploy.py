"""The pieces docker-compose.yaml's services and make cluster share: secrets, people and roles, the mocks' connections."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from osms.dev import deploy

from osms.dev import settings

pytestmark = pytest.mark.unit


def test_secrets_are_written_once_private_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "cluster" / "secrets.env"
    first = deploy.write_secrets(path)
    assert set(first) == set(settings.SECRET_NAMES) | {deploy.password_variable(u) for u in deploy.PEOPLE}
    assert all(len(v) >= 24 for v in first.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert deploy.write_secrets(path) == first, "a second call replaced the secrets"
    assert deploy.passwords_of(first) == {u: first[f"OSMS_{u.upper()}_PASSWORD"] for u in deploy.PEOPLE}


def test_the_same_three_people_as_the_simple_auth_manager() -> None:
    from osms.dev.ui_stack import USERS

    assert list(deploy.PEOPLE) == list(USERS) == list(deploy.role_permissions())
    assert USERS == {"engineer": "admin", "operator": "user", "qa": "viewer"}


def test_the_embedded_operator_is_the_highest_rank_that_cannot_touch_connections_variables_or_pools() -> None:
    """The simple auth manager's op may edit connections, variables and pools: the operator is a user there."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from osms.dev.ui_stack import USERS

    manager = SimpleAuthManager()

    def can(role: str) -> dict[str, bool]:
        who = SimpleAuthManagerUser(username="x", role=role)
        return {
            "connections": manager.is_authorized_connection(method="PUT", user=who),
            "variables": manager.is_authorized_variable(method="POST", user=who),
            "pools": manager.is_authorized_pool(method="DELETE", user=who),
            "trigger": manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN, user=who),
        }

    assert can("op") == {"connections": True, "variables": True, "pools": True, "trigger": True}
    assert can(USERS["operator"]) == {"connections": False, "variables": False, "pools": False, "trigger": True}
    assert can(USERS["qa"]) == dict.fromkeys(("connections", "variables", "pools", "trigger"), False)


def test_roles_by_least_privilege() -> None:
    from osms.ui.app import DECISIONS_VIEW, VIEW_NAME

    roles = deploy.role_permissions()
    forbidden = {"Connections", "Variables", "Configurations", "Users", "Roles", "Passwords", "Permissions",
                 "Permission Views", "View Menus", "Providers", "Audit Logs", "Triggers"}
    for name in ("operator", "qa"):
        assert not [p for p in roles[name] if p[1] in forbidden], name
        assert not [p for p in roles[name] if p[1] == "Pools" and p[0] not in ("can_read", "menu_access")], name
        assert not [p for p in roles[name] if p[0] == "can_delete"], name
        assert not [p for p in roles[name] if p[1] == "Plugins" and p[0] != "can_read"], name
        assert ("can_read", VIEW_NAME) in roles[name]
    # operators run the DAGs, QA decides; neither does the other's part
    operating = {("can_create", "DAG Runs"), ("can_edit", "DAG Runs"), ("can_edit", "Task Instances"),
                 ("can_edit", "DAGs"), ("can_create", "Backfills")}
    assert operating <= roles["operator"] and not operating & roles["qa"]
    assert ("can_create", DECISIONS_VIEW) in roles["qa"] and ("can_create", DECISIONS_VIEW) in roles["engineer"]
    assert not [p for p in roles["operator"] if p[1] == DECISIONS_VIEW]
    assert roles["qa"] - {("can_create", DECISIONS_VIEW)} < roles["operator"]


def test_every_permission_is_one_fab_knows() -> None:
    """A misspelt name would create a permission nothing checks: every resource and action is FAB's own."""
    from airflow.providers.fab.www.security import permissions

    from osms.ui.app import DECISIONS_VIEW, VIEW_NAME

    names = {k: v for k, v in vars(permissions).items() if isinstance(v, str)}
    resources = {v for k, v in names.items() if k.startswith("RESOURCE_")} | {VIEW_NAME, DECISIONS_VIEW}
    actions = {v for k, v in names.items() if k.startswith("ACTION_")}
    for name, pairs in deploy.role_permissions().items():
        assert {a for a, _ in pairs} <= actions, name
        assert {r for _, r in pairs} <= resources, (name, {r for _, r in pairs} - resources)


def test_init_refuses_to_run_without_every_password() -> None:
    with pytest.raises(SystemExit, match="OSMS_QA_PASSWORD"):
        deploy.init_airflow(passwords={"engineer": "a", "operator": "b", "qa": ""}, say=lambda _: None)


def test_the_mocks_connections_as_a_connections_file(tmp_path: Path) -> None:
    services = SimpleNamespace(airflow_env=lambda: {
        "AIRFLOW_CONN_OSMS_SOURCE_NEDB": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 8101,
                                                     "password": "t1", "extra": {"page_size": 50000}}),
        "AIRFLOW_CONN_OSMS_STATE_CORP": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 8102,
                                                    "password": "t2"}),
    })
    conns = deploy.mock_connections(services, "mocks")
    assert set(conns) == {"osms_source_nedb", "osms_state_corp"}
    assert {c["host"] for c in conns.values()} == {"mocks"}
    assert conns["osms_source_nedb"]["extra"] == {"page_size": 50000}
    path = deploy.write_connections(tmp_path / "c.json", conns)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    from airflow.secrets.local_filesystem import load_connections_dict

    loaded = load_connections_dict(str(path))  # what the init imports
    assert loaded["osms_source_nedb"].host == "mocks" and loaded["osms_source_nedb"].password == "t1"
    assert loaded["osms_source_nedb"].extra_dejson == {"page_size": 50000}
