"""LocalAirflow's users: passwords generated once, kept private, the users and roles given to Airflow."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from osms.airflow_local import LocalAirflow

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
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(af.passwords_file)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
