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

    assert list(deploy.PEOPLE) == list(USERS)
    levels = {"admin": "Admin", "op": "Op", "viewer": "Viewer"}
    assert {u: levels[r] for u, r in USERS.items()} == deploy.PEOPLE


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
