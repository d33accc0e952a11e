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


def test_the_compose_file_reads_the_settings_make_cluster_reads(compose: dict) -> None:
    files = [ROOT / f for f in compose["x-airflow-common"]["env_file"]]
    assert files == settings.settings_files("distributed", ROOT / "config")
    for service in [*AIRFLOW_SERVICES, "airflow-init"]:
        assert compose["services"][service]["env_file"] == compose["x-airflow-common"]["env_file"], service


def test_the_compose_site_is_that_of_the_native_shape(compose: dict) -> None:
    env = compose["x-airflow-common"]["environment"]
    site = set(settings.Site(airflow_home=Path("/h"), data_dir=Path("/d"), secrets_dir=Path("/s")).variables())
    assert set(env) == site | {"OSMS_SIGNING_PUBLIC_KEY"}, "the compose file's site differs from osms.dev.settings.Site"
    assert env[settings.SECRETS_DIR_VARIABLE] == "/run/secrets"
    referenced = settings.referenced_variables(settings.read_settings("distributed", ROOT / "config"))
    assert referenced <= set(env), f"the settings name variables compose does not set: {referenced - set(env)}"


def test_every_secret_is_a_file_and_each_service_gets_only_what_it_needs(compose: dict) -> None:
    declared = compose["secrets"]
    people = {deploy.password_file(u) for u in deploy.PEOPLE}
    assert set(declared) == set(settings.SECRET_FILES) | people | {deploy.SIGNING_KEY_FILE}
    for name, spec in declared.items():
        assert set(spec) == {"file"} and spec["file"] == f"${{OSMS_SECRETS:-./secrets}}/{name}", name
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        assert set(services[name]["secrets"]) == set(settings.SECRET_FILES), name
    init = services["airflow-init"]
    assert set(init["secrets"]) == set(settings.SECRET_FILES) | people | {deploy.SIGNING_KEY_FILE}
    assert "osms deploy init" in " ".join(init["command"])
    holders = [s for s, spec in services.items() if deploy.SIGNING_KEY_FILE in spec.get("secrets", [])]
    assert holders == ["airflow-init"], f"the private key goes to the init only, not to {holders}"
    assert services["postgres"]["secrets"] == ["osms_postgres_password"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/osms_postgres_password"
    assert services["redis"]["secrets"] == ["osms_redis_password"]
    assert "secrets" not in services["mocks"] and "env_file" not in services["mocks"], "the demo mocks get secrets"
    text = COMPOSE.read_text(encoding="utf-8")
    for word in ("PASSWORD:", "FERNET_KEY:", "SECRET_KEY:", "JWT_SECRET:", "--requirepass"):
        assert word not in text, f"a secret as plain environment or on a command line: {word}"


def test_the_services_run_as_the_deployments_uid_and_the_image_is_built_from_a_pinned_base(compose: dict) -> None:
    common = compose["x-airflow-common"]
    assert common["user"] == "${OSMS_UID:-50000}:0"
    assert common["build"]["args"]["BASE_IMAGE"].startswith("${OSMS_BASE_IMAGE:-python:3.11")
    assert "@sha256:" in common["build"]["args"]["BASE_IMAGE"]
    assert compose["services"]["postgres"]["image"] == "${OSMS_POSTGRES_IMAGE:-postgres:15}"


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


def test_env_example_names_every_variable_and_the_secrets_stay_out_of_git_and_the_image() -> None:
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", COMPOSE.read_text(encoding="utf-8")))
    assert interpolated <= names, f".env.example does not list {interpolated - names}"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and "secrets/" in ignored
    allowed = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert allowed[0] == "*", "the image's build context is an allow-list: everything ignored first"


def test_the_image_is_the_runtime_of_requirements_txt_under_constraints_txt() -> None:
    dockerfile = "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.startswith("#"))
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert "-r /tmp/requirements/requirements.txt" in dockerfile
    assert "-c /tmp/requirements/constraints.txt" in dockerfile
    assert "requirements-dev" not in dockerfile, "the image installs the test tools"
    assert re.search(r"^USER 50000:0$", dockerfile, re.M), "the image runs as root"
    runtime = (ROOT / "requirements.txt").read_text()
    for tool in ("pytest", "hypothesis", "playwright"):
        assert not re.search(rf"^{tool}\b", runtime, re.M), f"{tool} is a runtime requirement"
        assert re.search(rf"^{tool}==", (ROOT / "requirements-dev.txt").read_text(), re.M), tool
