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

    assert list(deploy.PEOPLE) == list(USERS)
    levels = {"admin": "Admin", "op": "Op", "viewer": "Viewer"}
    assert {u: levels[r] for u, r in USERS.items()} == deploy.PEOPLE


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
    # plain http on the compose network: allowed by name, since "mocks" is not this machine
    assert conns["osms_source_nedb"]["extra"] == {"page_size": 50000, "allow_plain_http": True}
    path = deploy.write_connections(tmp_path / "c.json", conns)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    from airflow.secrets.local_filesystem import load_connections_dict

    loaded = load_connections_dict(str(path))  # what the init imports
    assert loaded["osms_source_nedb"].host == "mocks" and loaded["osms_source_nedb"].password == "t1"
    assert loaded["osms_source_nedb"].extra_dejson == {"page_size": 50000, "allow_plain_http": True}
