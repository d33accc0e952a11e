"""The library's settings (osms.core.settings): one typed reading of the environment, followed by every module."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from osms.core import settings
from osms.core.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No library variable set (HOME kept): what each test sets is all there is."""
    for name in settings.VARIABLES:
        if name != "HOME":
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_an_empty_environment_gives_the_defaults() -> None:
    s = Settings.from_env({"HOME": "/home/op"})
    assert s.data_dir == Path("data")
    assert s.seed_dir is None and s.expectations_dir is None
    assert s.key_dir == Path("/home/op/.osms/keys")
    assert s.demo is False
    assert s.signing_key_file is None and s.signing_public_key is None
    assert s.qa_deciders == frozenset() and s.alert_email == ()
    assert s.alert_smtp_conn == "smtp_default"
    assert s.metrics_token is None and s.metrics_token_file is None
    assert s.memory_budget is None
    assert s.pool_slots == settings.DEFAULT_POOL_SLOTS == 2


def test_each_variable_is_read_typed() -> None:
    s = Settings.from_env({
        "OSMS_DATA_DIR": "/srv/osms/data", "OSMS_SEED_DIR": "/s", "OSMS_EXPECTATIONS_DIR": "/e", "OSMS_KEY_DIR": "/k",
        "OSMS_DEMO": " Yes ", "OSMS_SIGNING_KEY_FILE": "/k/private.pem", "OSMS_SIGNING_PUBLIC_KEY": "/k/public.pem",
        "OSMS_QA_DECIDERS": "qa, engineer,,", "OSMS_ALERT_EMAIL": " duty@osms.invalid , qa@osms.invalid",
        "OSMS_ALERT_SMTP_CONN": "smtp_osms", "OSMS_METRICS_TOKEN": " t0ken ", "OSMS_METRICS_TOKEN_FILE": "/t",
        "OSMS_TASK_MEMORY_BUDGET": "1536MiB", "OSMS_SOURCE_POOL_SLOTS": " 4 ",
    })
    assert s.data_dir == Path("/srv/osms/data")
    assert (s.seed_dir, s.expectations_dir, s.key_dir) == (Path("/s"), Path("/e"), Path("/k"))
    assert s.demo is True
    assert (s.signing_key_file, s.signing_public_key) == (Path("/k/private.pem"), Path("/k/public.pem"))
    assert s.qa_deciders == {"qa", "engineer"}
    assert s.alert_email == ("duty@osms.invalid", "qa@osms.invalid")  # in the order given
    assert s.alert_smtp_conn == "smtp_osms"
    assert (s.metrics_token, s.metrics_token_file) == ("t0ken", Path("/t"))
    assert s.memory_budget == 1536 * 2**20
    assert s.pool_slots == 4


@pytest.mark.parametrize("value", ["", "0", "false", "no", "maybe"])
def test_only_a_yes_makes_a_demo(value: str) -> None:
    assert Settings.from_env({"OSMS_DEMO": value}).demo is False


def test_an_empty_variable_is_unset() -> None:
    empty = {name: "" for name in settings.VARIABLES if name not in ("HOME", "OSMS_DATA_DIR", "OSMS_ALERT_SMTP_CONN")}
    assert Settings.from_env({"HOME": "/h", **empty}) == Settings.from_env({"HOME": "/h"})


def test_a_broken_value_fails_who_asks_for_it_with_its_variable_not_every_reader(clean_env: pytest.MonkeyPatch,
                                                                                   tmp_path: Path) -> None:
    from osms.core import budget, layout
    from osms.orchestration import pools

    clean_env.setenv("OSMS_TASK_MEMORY_BUDGET", "two gigs")
    clean_env.setenv("OSMS_SOURCE_POOL_SLOTS", "two")
    clean_env.setenv("OSMS_DATA_DIR", str(tmp_path))
    assert layout.data_dir() == tmp_path.resolve()
    with pytest.raises(ValueError, match="is not a size"):
        budget.task_budget()
    with pytest.raises(ValueError, match=pools.POOL_SLOTS_ENV):
        pools.pool_slots()


def test_current_follows_the_environment_and_parses_it_once(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("OSMS_DATA_DIR", str(tmp_path / "a"))
    first = settings.current()
    assert first.data_dir == tmp_path / "a"
    assert settings.current() is first  # the same environment: parsed once
    clean_env.setenv("OSMS_DATA_DIR", str(tmp_path / "b"))
    assert settings.current().data_dir == tmp_path / "b"  # a changed variable is seen at once, nothing to reset
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.data_dir = tmp_path  # type: ignore[misc]


def test_each_module_follows_its_setting(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from osms.core import budget, keys, layout, registry
    from osms.orchestration import pools
    from osms.quality import suites
    from osms.ui import app, metrics

    (tmp_path / "token").write_text("from-the-file\n")
    for name, value in {"OSMS_DATA_DIR": tmp_path / "data", "OSMS_SEED_DIR": tmp_path / "seeds",
                        "OSMS_EXPECTATIONS_DIR": tmp_path / "suites", "OSMS_KEY_DIR": tmp_path / "keys",
                        "OSMS_DEMO": "on", "OSMS_SIGNING_PUBLIC_KEY": tmp_path / "public.pem",
                        "OSMS_QA_DECIDERS": "qa,engineer", "OSMS_METRICS_TOKEN_FILE": tmp_path / "token",
                        "OSMS_TASK_MEMORY_BUDGET": "3GiB", "OSMS_SOURCE_POOL_SLOTS": "5"}.items():
        clean_env.setenv(name, str(value))
    assert layout.data_dir() == (tmp_path / "data").resolve()
    assert registry.default_seed_dir() == tmp_path / "seeds"
    assert suites.expectations_dir() == tmp_path / "suites"
    assert keys.default_key_dir() == tmp_path / "keys" and keys.demo_mode() is True
    assert app.public_key_path() == tmp_path / "public.pem"
    assert app.qa_deciders() == {"qa", "engineer"}
    assert metrics.scrape_token() == "from-the-file"
    assert budget.task_budget().total == 3 * 2**30
    assert pools.pool_slots() == 5


def test_the_modules_name_the_variables_the_settings_read() -> None:
    from osms.core import budget, keys
    from osms.orchestration import notices, pools
    from osms.ui import app, metrics

    named = {budget.BUDGET_ENV, keys.DEMO_ENV, keys.KEY_FILE_ENV, notices.EMAIL_ENV, notices.SMTP_CONN_ENV,
             pools.POOL_SLOTS_ENV, app.DECIDERS_ENV, metrics.TOKEN_ENV, metrics.TOKEN_FILE_ENV}
    assert named <= set(settings.VARIABLES)
