"""LocalAirflow's users: passwords generated once, kept private, the users and roles given to Airflow."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from osms.dev.airflow_local import LocalAirflow
from osms.dev import settings
from osms.dev.settings import Site, expand, new_secrets, value

pytestmark = pytest.mark.unit


def test_passwords_are_generated_once_per_user_and_kept(tmp_path: Path) -> None:
    # Arrange
    first = LocalAirflow(tmp_path, users={"engineer": "admin"}, port=1)

    # Act
    first._write_passwords()
    kept = first.passwords()
    second = LocalAirflow(tmp_path, users={"engineer": "admin", "qa": "viewer"}, port=1)
    second._write_passwords()

    # Assert
    assert set(second.passwords()) == {"engineer", "qa"}
    assert second.passwords()["engineer"] == kept["engineer"], "an existing password was replaced"
    assert len(second.passwords()["qa"]) >= 16
    assert stat.S_IMODE(second.passwords_file.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left"


def test_users_and_roles_reach_the_simple_auth_manager(tmp_path: Path) -> None:
    af = LocalAirflow(tmp_path, users={"engineer": "admin", "operator": "op", "qa": "viewer"}, port=1)
    env = af.env
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "engineer:admin,operator:op,qa:viewer"
    assert expand(env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") == str(af.passwords_file)
    assert expand(env, "AIRFLOW__API__HOST") == "127.0.0.1"
    assert expand(env, "AIRFLOW__CORE__AUTH_MANAGER").endswith(".SimpleAuthManager")


def test_the_embedded_shape_by_default_and_nothing_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "SequentialExecutor")
    af = LocalAirflow(tmp_path, port=8123)
    env = af.env
    assert env["AIRFLOW__CORE__UNIT_TEST_MODE"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert expand(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == f"sqlite:///{tmp_path.resolve()}/airflow.db"
    assert expand(env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL") == "http://127.0.0.1:8123/execution/"
    assert expand(env, "AIRFLOW__API__BASE_URL") == af.url == "http://127.0.0.1:8123"


def test_the_distributed_shape_with_a_site_and_its_secrets(tmp_path: Path) -> None:
    secrets = settings.write_secrets_dir(tmp_path / "secrets", new_secrets())
    site = Site(airflow_home=tmp_path, data_dir=tmp_path / "data", api_port=8124, postgres_port=5544,
                redis_port=6655, secrets_dir=tmp_path / "secrets")
    af = LocalAirflow(tmp_path, shape="distributed", site=site)
    env = af.env
    assert af.port == 8124
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert value(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == (
        f"postgresql+psycopg2://airflow:{secrets['osms_postgres_password']}@127.0.0.1:5544/airflow")
    assert value(env, "AIRFLOW__CELERY__BROKER_URL") == f"redis://:{secrets['osms_redis_password']}@127.0.0.1:6655/0"
    assert value(env, "AIRFLOW__API_AUTH__JWT_SECRET") == secrets["osms_jwt_secret"]
    assert "AIRFLOW__API_AUTH__JWT_SECRET" not in env and "AIRFLOW__API__SECRET_KEY" not in env
    assert not [k for k, v in env.items() if any(s in v for s in secrets.values())], "a secret in the environment"
    assert env["OSMS_DATA_DIR"] == str(tmp_path / "data")
