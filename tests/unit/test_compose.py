"""docker-compose.yaml and make cluster are one shape: the same settings files, site variables, secrets and services."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from osms.dev import deploy

from osms.dev import settings
from osms.dev.cluster import SERVICES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = [s for s in SERVICES if s.startswith("airflow-") and s != "airflow-init"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # YAML merge keys resolved, as compose does


def _site_names() -> set[str]:
    site = settings.Site(airflow_home=Path("/h"), data_dir=Path("/d"))
    return set(site.variables())


def test_the_compose_file_reads_the_settings_make_cluster_reads(compose: dict) -> None:
    files = [ROOT / f for f in compose["x-airflow-common"]["env_file"]]
    assert files == settings.settings_files("distributed", ROOT / "config")
    for service in [*AIRFLOW_SERVICES, "airflow-init", "mocks"]:
        assert compose["services"][service]["env_file"] == compose["x-airflow-common"]["env_file"], service


def test_the_compose_site_and_secrets_are_those_of_the_native_shape(compose: dict) -> None:
    env = compose["x-airflow-common"]["environment"]
    secrets = set(settings.SECRET_NAMES)
    assert set(env) == _site_names() | secrets | {"OSMS_SIGNING_PUBLIC_KEY"}, (
        "the compose file's site differs from osms.dev.settings.Site (or its secrets from SECRET_NAMES)")
    for name in secrets:  # every secret from .env, none written here
        assert env[name] == f"${{{name}:-}}", f"{name} must come from .env: {env[name]!r}"
    referenced = settings.referenced_variables(settings.read_settings("distributed", ROOT / "config"))
    assert referenced <= _site_names() | secrets, f"settings name unknown variables: {referenced - _site_names()}"
    assert referenced <= set(env)


def test_the_init_gets_the_users_passwords_and_the_key(compose: dict) -> None:
    init = compose["services"]["airflow-init"]
    for user in deploy.PEOPLE:
        name = deploy.password_variable(user)
        assert init["environment"][name] == f"${{{name}:-}}"
        assert name not in compose["x-airflow-common"]["environment"], "only the init needs the passwords"
    assert "osms_signing_private_key" in init["secrets"]
    holders = [s for s, spec in compose["services"].items() if "osms_signing_private_key" in spec.get("secrets", [])]
    assert holders == ["airflow-init"], f"the private key goes to the init only, not to {holders}"
    assert "osms deploy init" in " ".join(init["command"])


def test_the_services_are_those_of_make_cluster(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == set(SERVICES)
    for name in AIRFLOW_SERVICES:
        command = services[name]["command"]
        expected = "celery worker" if SERVICES[name] == "celery-worker" else SERVICES[name]
        assert command == expected, f"{name} runs {command!r}, make cluster runs `airflow {expected}`"


def test_every_service_checks_its_health_and_publishes_on_loopback_only(compose: dict) -> None:
    for name, spec in compose["services"].items():
        if name != "airflow-init":  # a one-shot: the others wait for it to complete
            assert spec.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


def test_env_example_names_every_secret_and_password() -> None:
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(settings.SECRET_NAMES) | {deploy.password_variable(u) for u in deploy.PEOPLE} <= names
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_image_installs_the_pinned_requirements_of_the_pinned_airflow() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    airflow = re.search(r"^apache-airflow(?:\[[^]]*\])?==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert airflow and f"ARG AIRFLOW_VERSION={airflow.group(1)}" in dockerfile
    assert "-r /opt/osms/requirements.txt -c /opt/osms/constraints.txt" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in dockerfile
