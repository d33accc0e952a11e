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
    directory = tmp_path / "cluster" / "secrets"
    first = deploy.write_secrets(directory)
    assert set(first) == set(settings.SECRET_FILES) | {deploy.password_file(u) for u in deploy.PEOPLE}
    assert all(len(v) >= 24 for v in first.values())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {0o600}
    assert all(not p.read_bytes().endswith(b"\n") for p in directory.iterdir()), "a secret file ends in a newline"
    assert deploy.write_secrets(directory) == first, "a second call replaced the secrets"
    assert deploy.read_passwords(directory) == {u: first[f"osms_{u}_password"] for u in deploy.PEOPLE}


def test_compose_env_holds_no_secret_and_a_signing_key_pair_of_its_own(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    from osms.core.keys import ensure_dev_keypair

    env, secrets_dir = deploy.write_compose_env(tmp_path)
    values = settings.parse_env_file(env)
    assert set(values) == {"OSMS_UID"} and values["OSMS_UID"] == str(deploy.compose_uid())
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    private = load_pem_private_key((secrets_dir / deploy.SIGNING_KEY_FILE).read_bytes(), password=None)
    public = load_pem_public_key((secrets_dir / deploy.SIGNING_PUBLIC_KEY_FILE).read_bytes())
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
    assert stat.S_IMODE((secrets_dir / deploy.SIGNING_KEY_FILE).stat().st_mode) == 0o600
    dev_public = ensure_dev_keypair(tmp_path / "dev")[1].read_bytes()
    assert (secrets_dir / deploy.SIGNING_PUBLIC_KEY_FILE).read_bytes() != dev_public, "compose took a development key"
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    deploy.write_compose_env(tmp_path)
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before, "a second call replaced a secret"


def test_compose_env_takes_a_given_signing_key(tmp_path: Path) -> None:
    from osms.core.keys import ensure_dev_keypair

    given, given_public = ensure_dev_keypair(tmp_path / "keys")
    _, secrets_dir = deploy.write_compose_env(tmp_path / "deployment", signing_key=given)
    assert (secrets_dir / deploy.SIGNING_KEY_FILE).read_bytes() == given.read_bytes()
    assert (secrets_dir / deploy.SIGNING_PUBLIC_KEY_FILE).read_bytes() == given_public.read_bytes()


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


def test_init_refuses_a_missing_secret_or_password_naming_its_file(tmp_path: Path) -> None:
    deploy.write_secrets(tmp_path)
    (tmp_path / "osms_qa_password").unlink()
    with pytest.raises(SystemExit, match="osms_qa_password is missing"):
        deploy.init_airflow(secrets_dir=tmp_path, say=lambda _: None)


@pytest.mark.parametrize("fernet", ["", "not-a-fernet-key"])
def test_init_refuses_an_empty_or_malformed_fernet_key(tmp_path: Path, fernet: str) -> None:
    deploy.write_secrets(tmp_path)
    (tmp_path / "osms_fernet_key").write_text(fernet)
    with pytest.raises(SystemExit, match="osms_fernet_key"):
        deploy.init_airflow(secrets_dir=tmp_path, say=lambda _: None)


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
    # plain http on the compose network: allowed by name, since "mocks" is not this machine
    assert conns["osms_source_nedb"]["extra"] == {"page_size": 50000, "allow_plain_http": True}
    path = deploy.write_connections(tmp_path / "c.json", conns)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    from airflow.secrets.local_filesystem import load_connections_dict

    loaded = load_connections_dict(str(path))  # what the init imports
    assert loaded["osms_source_nedb"].host == "mocks" and loaded["osms_source_nedb"].password == "t1"
    assert loaded["osms_source_nedb"].extra_dejson == {"page_size": 50000, "allow_plain_http": True}
