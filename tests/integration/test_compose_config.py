"""docker-compose accepts docker-compose.yaml on a fresh clone, and reads the settings as osms.dev.settings does.

Debian's docker-compose (installed by `make servers`) checks the file without a Docker engine:
``docker-compose config`` resolves it as ``up`` would. tests/container starts it for real.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from osms.dev import deploy

from osms.dev import settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FILES = ("docker-compose.yaml", "Dockerfile", ".dockerignore", ".env.example", "config")


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose is not installed: run `make servers` (Debian's docker-compose)")
    return found


def _clone(tmp_path: Path) -> Path:
    """The files a fresh clone has for compose (no .env: it is never committed)."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, clone / name)
    return clone


def _config(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(clone)}  # no variable of this shell leaks into the file
    return subprocess.run([_docker_compose(), *args], cwd=clone, env=env, capture_output=True, text=True, timeout=120)


def test_docker_compose_config_accepts_a_fresh_clone(tmp_path: Path) -> None:
    out = _config(_clone(tmp_path), "config", "--quiet")
    assert out.returncode == 0, out.stderr


def test_services_get_the_settings_files_and_site_and_the_secrets_as_files_only(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    _, secrets_dir = deploy.write_compose_env(clone)
    secrets = settings.read_secrets_dir(secrets_dir)
    out = _config(clone, "config")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    # docker-compose prints a literal $ as $$; Airflow expands $NAME itself in the container
    expected = {k: v.replace("$", "$$") for k, v in settings.read_settings("distributed", clone / "config").items()}
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-init"):
        env = {k: str(v) for k, v in resolved["services"][name]["environment"].items()}
        assert {k: env.get(k) for k in expected} == expected, f"{name} does not get config/*.env as written"
        assert env["OSMS_SECRETS_DIR"] == "/run/secrets"
    for name, spec in resolved["secrets"].items():
        assert Path(spec["file"]) == secrets_dir / name, name
    for value in secrets.values():
        assert value not in out.stdout, "a secret's value is in the resolved compose file"
