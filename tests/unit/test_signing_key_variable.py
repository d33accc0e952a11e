"""The package DAG's signing key lives in an Airflow variable whose name Airflow masks."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_the_signing_key_variable_is_masked_by_airflow() -> None:
    from airflow._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    from osms.orchestration.package_dag import SIGNING_KEY_VARIABLE

    normalized = SIGNING_KEY_VARIABLE.lower()
    assert any(field in normalized for field in DEFAULT_SENSITIVE_FIELDS), (
        f"{SIGNING_KEY_VARIABLE} names no field of Airflow's secrets masker: its value would show in the UI")


def test_osms_run_gives_the_development_key_under_that_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OSMS_KEY_DIR", str(tmp_path))
    from osms.dev.local_run import signing_env
    from osms.orchestration.package_dag import SIGNING_KEY_VARIABLE

    env = signing_env()
    assert list(env) == [f"AIRFLOW_VAR_{SIGNING_KEY_VARIABLE.upper()}"]
    assert env[f"AIRFLOW_VAR_{SIGNING_KEY_VARIABLE.upper()}"].startswith("-----BEGIN PRIVATE KEY-----")
