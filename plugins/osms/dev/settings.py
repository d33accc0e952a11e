"""Airflow's settings for every environment, built one way from one source: ``config/*.env``.

An environment is a *shape* plus a *site*:

- the shape is what Airflow runs on, as settings files: ``embedded`` (SQLite, the
  LocalExecutor, the simple auth manager: ``osms run``, ``make airflow``) or
  ``distributed`` (PostgreSQL, Celery workers on Redis, FAB's auth manager:
  ``make cluster`` and ``docker-compose.yaml``, which reads the very same files as its
  ``env_file``). Both start from ``config/airflow.env``;
- the site is where one deployment's pieces are (:class:`Site`): Airflow's home, the
  code's folders, the data root, host names and ports. The native launchers fill it in
  for 127.0.0.1; the compose file sets the same variables to its service names.

Secrets (database and broker passwords, Fernet key, JWT and API secrets) are neither:
they come from a file that is never committed (``.env`` for compose, the cluster's
``secrets.env`` natively; :func:`new_secrets` writes either).

A settings file is a strict subset of the dotenv format that docker-compose v1 and v2
and this module all read alike: ``KEY=VALUE`` lines and ``#`` comments; a value that
names a deployment variable (``$OSMS_API_PORT``) is single-quoted and is expanded by
Airflow itself when it reads the setting; anything else is refused with the line.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
# SQLite makes a second writer wait for the first; two workers write small transactions,
# so a wait is short, but a process must never fail on one (Python's default is 5 s).
SQLITE_CONNECT_ARGS = {"timeout": 120}

COMMON_FILE = "airflow.env"
SHAPES = {"embedded": "embedded.env", "distributed": "distributed.env"}

# The secrets of the distributed shape, by the names .env and the cluster's secrets file use:
# Airflow's own settings where Airflow reads them directly, else a variable the settings name.
SECRET_NAMES = (
    "OSMS_POSTGRES_PASSWORD",
    "OSMS_REDIS_PASSWORD",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
)

_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
_PLAIN = re.compile(r"[^\s'\"$#\\]*")
_QUOTED = re.compile(r"'([^'\\]*)'")


class SettingsError(ValueError):
    """A settings file is outside the subset every reader agrees on; the message names the line."""


def config_dir() -> Path:
    """``config/`` of this checkout, or ``$OSMS_CONFIG_DIR`` when set."""
    return Path(os.environ.get("OSMS_CONFIG_DIR") or ROOT / "config")


def settings_files(shape: str, directory: Path | None = None) -> list[Path]:
    """The files of a shape, in the order they apply (later files win)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    directory = directory or config_dir()
    return [directory / COMMON_FILE, directory / SHAPES[shape]]


def parse_env_file(path: Path) -> dict[str, str]:
    """Read one settings file (see the module docstring for the subset); SettingsError names a bad line."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        where = f"{path}:{number}"
        if not sep or not _KEY.fullmatch(key):
            raise SettingsError(f"{where}: expected KEY=VALUE with an upper-case KEY, got {raw!r}")
        if key in values:
            raise SettingsError(f"{where}: {key} is set twice in {path.name}")
        quoted = _QUOTED.fullmatch(value)
        if quoted:
            values[key] = quoted.group(1)
        elif _PLAIN.fullmatch(value):
            values[key] = value
        else:
            raise SettingsError(f"{where}: single-quote a value with spaces, quotes, '$' or '#': {raw!r}")
    return values


def write_env_file(path: Path, values: Mapping[str, str], header: str = "") -> None:
    """Write values in the same subset (single-quoted), readable by :func:`parse_env_file` and docker-compose."""
    from osms.core.files import write_bytes_atomic

    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    for key, value in values.items():
        if not _KEY.fullmatch(key) or "'" in value or "\\" in value or "\n" in value:
            raise SettingsError(f"{key}: cannot be written as a single-quoted dotenv value")
        lines.append(f"{key}='{value}'")
    write_bytes_atomic(("\n".join(lines) + "\n").encode(), path, mode=0o600)


def read_settings(shape: str, directory: Path | None = None) -> dict[str, str]:
    """Every setting of a shape: ``config/airflow.env`` overlaid with the shape's file."""
    merged: dict[str, str] = {}
    for path in settings_files(shape, directory):
        merged.update(parse_env_file(path))
    return merged


def referenced_variables(settings: Mapping[str, str]) -> set[str]:
    """The deployment variables (``$NAME``) the settings name: what a site and its secrets must give."""
    return {m.group(1) or m.group(2) for v in settings.values()
            for m in re.finditer(r"\$(?:\{(\w+)\}|(\w+))", v)}


@dataclass(frozen=True)
class Site:
    """Where one deployment's pieces are: what differs between hosts, never between shapes.

    The defaults are this checkout on 127.0.0.1. ``listen_host`` is the one address every
    server binds (127.0.0.1 natively; inside a container, its interfaces on the compose
    network). ``api_host`` is where the other components reach the API server, ``api_url``
    where people do.
    """

    airflow_home: Path
    data_dir: Path | None  # None: the launcher's extra environment names it
    api_port: int = 8080
    api_host: str = HOST
    api_url: str = ""  # default http://<api_host>:<api_port>
    listen_host: str = HOST
    dags_folder: Path = ROOT / "dags"
    plugins_folder: Path = ROOT / "plugins"
    seed_dir: Path = ROOT / "include" / "seeds"
    expectations_dir: Path = ROOT / "expectations"
    postgres_host: str = HOST
    postgres_port: int = 5432
    redis_host: str = HOST
    redis_port: int = 6379
    scheduler_health_port: int = 8974

    def variables(self) -> dict[str, str]:
        """The site as environment variables: the names docker-compose.yaml sets for its services."""
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            **({"OSMS_DATA_DIR": str(self.data_dir)} if self.data_dir is not None else {}),
            "OSMS_SEED_DIR": str(self.seed_dir),
            "OSMS_EXPECTATIONS_DIR": str(self.expectations_dir),
            "OSMS_LISTEN_HOST": self.listen_host,
            "OSMS_API_HOST": self.api_host,
            "OSMS_API_PORT": str(self.api_port),
            "OSMS_API_URL": self.api_url or f"http://{self.api_host}:{self.api_port}",
            "OSMS_POSTGRES_HOST": self.postgres_host,
            "OSMS_POSTGRES_PORT": str(self.postgres_port),
            "OSMS_REDIS_HOST": self.redis_host,
            "OSMS_REDIS_PORT": str(self.redis_port),
            "OSMS_SCHEDULER_HEALTH_PORT": str(self.scheduler_health_port),
        }


def airflow_env(shape: str, site: Site, *, secrets: Mapping[str, str] | None = None,
                extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None,
                hermetic: bool = False) -> dict[str, str]:
    """The environment of every Airflow process of one deployment (CLI calls included).

    Later layers win: the inherited environment (``base``, default ``os.environ``; with
    ``hermetic`` its ``AIRFLOW*`` variables are dropped first), the shape's settings, the
    site, the secrets, then the launcher's ``extra`` (connections, variables, its own knobs).
    """
    base = os.environ if base is None else base
    inherited = {k: v for k, v in base.items() if not (hermetic and k.startswith("AIRFLOW"))}
    return {**inherited, **read_settings(shape), **site.variables(), **(secrets or {}), **(extra or {})}


def expand(env: Mapping[str, str], key: str) -> str:
    """A setting's value as Airflow reads it: ``$NAME`` references replaced from ``env`` (as os.path.expandvars)."""
    value = env[key]
    for _ in range(10):  # nested references, as Airflow resolves them, until nothing changes
        expanded = re.sub(r"\$(?:\{(\w+)\}|(\w+))",
                          lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)
        if expanded == value:
            break
        value = expanded
    return value


def new_secrets() -> dict[str, str]:
    """Fresh secrets for a distributed deployment (every name of :data:`SECRET_NAMES`)."""
    from cryptography.fernet import Fernet

    values = {
        "OSMS_POSTGRES_PASSWORD": _secrets.token_hex(24),  # hex: safe inside a URL
        "OSMS_REDIS_PASSWORD": _secrets.token_hex(24),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API__SECRET_KEY": _secrets.token_hex(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secrets.token_hex(32),
    }
    assert tuple(values) == SECRET_NAMES
    return values


LINEAGE_TRANSPORT = "AIRFLOW__OPENLINEAGE__TRANSPORT"


def lineage_http_transport(url: str, *, endpoint: str = "api/v1/lineage", api_key: str | None = None,
                           timeout: float = 5.0) -> dict[str, str]:
    """The setting that sends lineage to an OpenLineage server over HTTP instead of files (Marquez's endpoint by
    default); the API key, when given, as a bearer token. Only http(s) URLs: a lineage server is named, never found."""
    import json
    from urllib.parse import urlsplit

    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise SettingsError(f"the lineage URL must be an http(s) URL with a host, not {url!r}")
    transport: dict[str, object] = {"type": "http", "url": url.rstrip("/"), "endpoint": endpoint, "timeout": timeout}
    if api_key:
        transport["auth"] = {"type": "api_key", "apiKey": api_key}
    return {LINEAGE_TRANSPORT: json.dumps(transport)}
