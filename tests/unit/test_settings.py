"""Airflow's settings come from config/*.env, one way for every launcher; the files stay in the subset all readers agree on."""

from __future__ import annotations

import re

from pathlib import Path

import pytest

from osms.dev import settings
from osms.dev.settings import Site, SettingsError, airflow_env, expand, parse_env_file, read_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.env"
    path.write_text(text)
    return path


def test_the_subset_plain_and_single_quoted_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "# a comment\n\nA=plain.value/with:colons\nB='http://$HOST:$PORT/x'\nC=\nD=''\n")
    assert parse_env_file(path) == {"A": "plain.value/with:colons", "B": "http://$HOST:$PORT/x", "C": "", "D": ""}


@pytest.mark.parametrize("line", [
    "B=http://$HOST/x",          # docker-compose would replace $HOST: single-quote it
    'C="double"',                 # compose v1 and v2 treat escapes in double quotes differently
    "D=value # comment",          # inline comments: parsed differently by the readers
    "lower=x",
    "E",
    "F='it''s'",
])
def test_lines_outside_the_subset_are_refused_by_line(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path, f"OK=1\n{line}\n")
    with pytest.raises(SettingsError, match=r"x\.env:2"):
        parse_env_file(path)


def test_a_key_set_twice_in_one_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="set twice"):
        parse_env_file(_write(tmp_path, "A=1\nA=2\n"))


def test_written_values_read_back(tmp_path: Path) -> None:
    values = {"OSMS_UID": "1000", "OSMS_SECRETS": "/srv/osms secrets", "OSMS_API_URL": "http://$OSMS_API_HOST:80"}
    settings.write_env_file(tmp_path / "s.env", values, header="values")
    assert parse_env_file(tmp_path / "s.env") == values
    assert (tmp_path / "s.env").stat().st_mode & 0o777 == 0o600


def test_the_project_settings_files_parse_and_name_only_site_variables() -> None:
    site_names = set(Site(airflow_home=Path("/h"), data_dir=Path("/d"), secrets_dir=Path("/s")).variables())
    for shape in settings.SHAPES:
        values = read_settings(shape, ROOT / "config")
        assert values["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == "Asia/Almaty"
        unknown = settings.referenced_variables(values) - site_names
        assert not unknown, f"{shape} names variables nothing sets: {unknown}"


def test_the_distributed_shape_reads_every_secret_from_its_file_never_from_the_environment() -> None:
    values = read_settings("distributed", ROOT / "config")
    secret_settings = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND",
                       "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY",
                       "AIRFLOW__API_AUTH__JWT_SECRET")
    for key in secret_settings:
        assert key not in values, f"{key} is set in plain: it must be {key}_CMD"
        assert "$OSMS_SECRETS_DIR/osms_" in values[f"{key}_CMD"], key
    read = {m for v in values.values() for m in re.findall(r"\$OSMS_SECRETS_DIR/(\w+)", v)}
    assert read == set(settings.SECRET_FILES), "a secret file nothing reads, or one read that is not listed"


def test_a_cmd_setting_gives_what_airflow_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow._shared.configuration.parser import run_command

    secrets = settings.write_secrets_dir(tmp_path / "secrets", settings.new_secrets())
    site = Site(airflow_home=tmp_path, data_dir=tmp_path, postgres_port=5999, redis_port=6999,
                secrets_dir=tmp_path / "secrets")
    env = airflow_env("distributed", site, base={"PATH": "/usr/bin:/bin"})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__FERNET_KEY"):
        assert settings.value(env, key) == run_command(env[f"{key}_CMD"]), key
    assert settings.value(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == (
        f"postgresql+psycopg2://airflow:{secrets['osms_postgres_password']}@127.0.0.1:5999/airflow")
    assert settings.value(env, "AIRFLOW__CELERY__BROKER_URL") == (
        f"redis://:{secrets['osms_redis_password']}@127.0.0.1:6999/0")
    assert settings.value(env, "AIRFLOW__CORE__FERNET_KEY") == secrets["osms_fernet_key"]
    assert not [k for k, v in env.items() if any(s in v for s in secrets.values())], "a secret in the environment"


def test_a_missing_secret_fails_its_setting_naming_the_file(tmp_path: Path) -> None:
    site = Site(airflow_home=tmp_path, data_dir=tmp_path, secrets_dir=tmp_path / "none")
    env = airflow_env("distributed", site, base={"PATH": "/usr/bin:/bin"})
    with pytest.raises(settings.SecretsError, match="osms_postgres_password"):
        settings.value(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")


def test_the_shapes_differ_in_configuration_only() -> None:
    embedded, distributed = read_settings("embedded", ROOT / "config"), read_settings("distributed", ROOT / "config")
    assert embedded["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert distributed["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert distributed["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
    common = settings.parse_env_file(ROOT / "config" / settings.COMMON_FILE)
    assert {k: embedded[k] for k in common} == {k: distributed[k] for k in common} == common


def test_layers_inherited_then_settings_site_secrets_extra(tmp_path: Path) -> None:
    site = Site(airflow_home=tmp_path / "home", data_dir=tmp_path / "data", api_port=9001)
    base = {"PATH": "/bin", "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor", "AIRFLOW_CONN_X": "http://x"}
    env = airflow_env("embedded", site, secrets={"AIRFLOW__API__SECRET_KEY": "s"},
                      extra={"AIRFLOW__CORE__PARALLELISM": "3"}, base=base)
    assert env["PATH"] == "/bin" and env["AIRFLOW_CONN_X"] == "http://x"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"  # the shape beats what was inherited
    assert env["OSMS_DATA_DIR"] == str(tmp_path / "data")
    assert env["AIRFLOW__API__SECRET_KEY"] == "s" and env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert expand(env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL") == "http://127.0.0.1:9001/execution/"
    hermetic = airflow_env("embedded", site, base=base, hermetic=True)
    assert "AIRFLOW_CONN_X" not in hermetic and hermetic["PATH"] == "/bin"


def test_expand_is_what_airflow_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow._shared.configuration.parser import expand_env_var

    site = Site(airflow_home=tmp_path, data_dir=tmp_path, postgres_port=5999, secrets_dir=tmp_path)
    env = airflow_env("distributed", site, base={})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AIRFLOW__API__BASE_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API__HOST",
                "AIRFLOW__API__WORKERS", "AIRFLOW__CELERY__WORKER_CONCURRENCY"):
        assert expand(env, key) == expand_env_var(env[key]) and "$" not in expand(env, key), key


def test_osms_run_reads_the_embedded_shape(tmp_path: Path) -> None:
    from osms.dev.local_run import airflow_env as run_env

    env = run_env(tmp_path, {"AIRFLOW_CONN_Y": "http://y"})
    assert env["OSMS_DEADLINE_ALERTS"] == "off" and env["AIRFLOW_CONN_Y"] == "http://y"
    assert expand(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == f"sqlite:///{tmp_path / 'airflow'}/airflow.db"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "osms.dev.settings.SQLITE_CONNECT_ARGS"
    assert env["AIRFLOW__CORE__UNIT_TEST_MODE"] == "False"
