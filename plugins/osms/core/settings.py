"""Every setting the library takes from the environment, read in one place and typed.

The library (everything under ``plugins/osms`` but the launchers of ``osms/dev/``) never reads
``os.environ`` itself: it asks :func:`current` (``tests/unit/test_code_shape.py`` holds that). The
variables, what they mean and their defaults are listed once, in :class:`Settings`.

:func:`current` parses the environment once per distinct set of values of :data:`VARIABLES`: a process
whose environment does not change parses it once, and a test that sets a variable
(``monkeypatch.setenv``) or a launcher that changes one sees the new value on the next call, with nothing
to reset. A test can also build its own settings with ``Settings.from_env({...})``.

Two values have a grammar that can be broken (:attr:`Settings.memory_budget`,
:attr:`Settings.pool_slots`): they are checked when asked for, so a bad memory budget fails the task
that sizes by it, with the variable's name, and not every reader of the data dir.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_POOL_SLOTS", "POOL_SLOTS_ENV", "VARIABLES", "Settings", "current", "parse_bytes"]

DATA_DIR_ENV = "OSMS_DATA_DIR"
SEED_DIR_ENV = "OSMS_SEED_DIR"
EXPECTATIONS_DIR_ENV = "OSMS_EXPECTATIONS_DIR"
KEY_DIR_ENV = "OSMS_KEY_DIR"
DEMO_ENV = "OSMS_DEMO"
KEY_FILE_ENV = "OSMS_SIGNING_KEY_FILE"
PUBLIC_KEY_ENV = "OSMS_SIGNING_PUBLIC_KEY"
DECIDERS_ENV = "OSMS_QA_DECIDERS"
EMAIL_ENV = "OSMS_ALERT_EMAIL"
SMTP_CONN_ENV = "OSMS_ALERT_SMTP_CONN"
TOKEN_ENV = "OSMS_METRICS_TOKEN"
TOKEN_FILE_ENV = "OSMS_METRICS_TOKEN_FILE"
BUDGET_ENV = "OSMS_TASK_MEMORY_BUDGET"
POOL_SLOTS_ENV = "OSMS_SOURCE_POOL_SLOTS"
# HOME: the default key folder is ~/.osms/keys
VARIABLES = (DATA_DIR_ENV, SEED_DIR_ENV, EXPECTATIONS_DIR_ENV, KEY_DIR_ENV, DEMO_ENV, KEY_FILE_ENV, PUBLIC_KEY_ENV,
             DECIDERS_ENV, EMAIL_ENV, SMTP_CONN_ENV, TOKEN_ENV, TOKEN_FILE_ENV, BUDGET_ENV, POOL_SLOTS_ENV, "HOME")

DEFAULT_POOL_SLOTS = 2
_TRUE = ("true", "1", "yes", "on")
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "KIB": 2**10, "M": 10**6, "MB": 10**6, "MIB": 2**20,
          "G": 10**9, "GB": 10**9, "GIB": 2**30}


def parse_bytes(text: str) -> int:
    """``2GiB``, ``1536MiB``, ``800MB`` or a plain number of bytes, as bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if m is None or m.group(2).upper() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 2GiB, 1536MiB, 2147483648)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclass(frozen=True)
class Settings:
    """The library's settings: each field names its variable; an unset or empty variable gives the default."""

    data_dir: Path  # OSMS_DATA_DIR, default ./data: as given, resolved against the working directory by layout
    seed_dir: Path | None  # OSMS_SEED_DIR: the registry's seeds; None: include/seeds of this checkout
    expectations_dir: Path | None  # OSMS_EXPECTATIONS_DIR: the GX suites; None: expectations/ of this checkout
    key_dir: Path  # OSMS_KEY_DIR, default ~/.osms/keys: the development key pair
    demo: bool  # OSMS_DEMO (true, 1, yes, on): this deployment is a demo, the development key is allowed
    signing_key_file: Path | None  # OSMS_SIGNING_KEY_FILE: the embedded runs' private key (0600)
    signing_public_key: Path | None  # OSMS_SIGNING_PUBLIC_KEY: the key the pages check packages against
    qa_deciders: frozenset[str]  # OSMS_QA_DECIDERS, comma-separated user ids; empty: the permission decides
    alert_email: tuple[str, ...]  # OSMS_ALERT_EMAIL, comma-separated recipients of failed runs' mail
    alert_smtp_conn: str  # OSMS_ALERT_SMTP_CONN, default smtp_default: that mail's SMTP connection
    metrics_token: str | None = field(repr=False)  # OSMS_METRICS_TOKEN: the scrape token, never in a repr
    metrics_token_file: Path | None  # OSMS_METRICS_TOKEN_FILE: a file holding it (read when the token is unset)
    memory_budget_text: str | None  # OSMS_TASK_MEMORY_BUDGET as written: see memory_budget
    pool_slots_text: str  # OSMS_SOURCE_POOL_SLOTS as written: see pool_slots

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings an environment gives (``os.environ`` or any mapping of variables to values)."""
        return cls(
            data_dir=Path(environ.get(DATA_DIR_ENV, "data")),
            seed_dir=_path(environ, SEED_DIR_ENV),
            expectations_dir=_path(environ, EXPECTATIONS_DIR_ENV),
            key_dir=_path(environ, KEY_DIR_ENV) or _home(environ) / ".osms" / "keys",
            demo=environ.get(DEMO_ENV, "").strip().lower() in _TRUE,
            signing_key_file=_path(environ, KEY_FILE_ENV),
            signing_public_key=_path(environ, PUBLIC_KEY_ENV),
            qa_deciders=frozenset(_list(environ, DECIDERS_ENV)),
            alert_email=_list(environ, EMAIL_ENV),
            alert_smtp_conn=environ.get(SMTP_CONN_ENV, "smtp_default"),
            metrics_token=environ.get(TOKEN_ENV, "").strip() or None,
            metrics_token_file=_path(environ, TOKEN_FILE_ENV),
            memory_budget_text=environ.get(BUDGET_ENV) or None,
            pool_slots_text=environ.get(POOL_SLOTS_ENV, "").strip(),
        )

    @property
    def memory_budget(self) -> int | None:
        """OSMS_TASK_MEMORY_BUDGET in bytes (``2GiB``, ``1536MiB``, a number); None: the default budget."""
        return parse_bytes(self.memory_budget_text) if self.memory_budget_text else None

    @property
    def pool_slots(self) -> int:
        """OSMS_SOURCE_POOL_SLOTS, a whole number from 1 (default 2): the size of a new source system's pool."""
        text = self.pool_slots_text
        if not text:
            return DEFAULT_POOL_SLOTS
        try:
            slots = int(text)
        except ValueError:
            slots = 0
        if slots < 1:
            raise ValueError(f"{POOL_SLOTS_ENV} must be a whole number from 1, not {text!r}")
        return slots


def current() -> Settings:
    """The settings of this process's environment as it is now (parsed once per distinct environment)."""
    return _parsed(tuple((name, os.environ.get(name)) for name in VARIABLES))


@functools.lru_cache(maxsize=32)
def _parsed(values: tuple[tuple[str, str | None], ...]) -> Settings:
    return Settings.from_env({name: value for name, value in values if value is not None})


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None


def _list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in environ.get(name, "").split(",") if x.strip())


def _home(environ: Mapping[str, str]) -> Path:
    """The user's home as ``Path.home()`` finds it, from ``environ`` (HOME, else the password database)."""
    if "HOME" in environ:
        return Path(environ["HOME"].rstrip("/") or "/")
    import pwd

    return Path(pwd.getpwuid(os.getuid()).pw_dir)
