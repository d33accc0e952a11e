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

Secrets (database and broker passwords, Fernet key, JWT and API secrets) are neither, and
never an environment variable: one file each in the deployment's secrets folder, which the
processes know as ``$OSMS_SECRETS_DIR`` (``/run/secrets``, the compose file's secrets, in a
container; ``<data>/cluster/secrets`` natively; :func:`write_secrets_dir` writes either, once).
``config/distributed.env`` reads them through Airflow's ``*_CMD`` settings (:data:`SECRET_FILES`).

A settings file is a strict subset of the dotenv format that docker-compose v1 and v2
and this module all read alike: ``KEY=VALUE`` lines and ``#`` comments; a value that
names a deployment variable (``$OSMS_API_PORT``) is single-quoted and is expanded by
Airflow itself when it reads the setting; anything else is refused with the line.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
# SQLite makes a second writer wait for the first; two workers write small transactions,
# so a wait is short, but a process must never fail on one (Python's default is 5 s).
SQLITE_CONNECT_ARGS = {"timeout": 120}

COMMON_FILE = "airflow.env"
SHAPES = {"embedded": "embedded.env", "distributed": "distributed.env"}

# The secrets of the distributed shape: one file each in $OSMS_SECRETS_DIR, named as docker-compose.yaml's
# secrets, with what reads it. No secret is ever an environment variable: config/distributed.env reads each
# through a *_CMD setting (a command Airflow runs for the value), so `docker inspect`, /proc/<pid>/environ and
# a task's environment hold the folder's path, never a secret.
SECRET_FILES = {
    "osms_postgres_password": "PostgreSQL's password for the user airflow (the metadata database)",
    "osms_redis_password": "Redis's password (the Celery broker)",
    "osms_fernet_key": "Airflow's Fernet key: connections and variables are encrypted with it",
    "osms_api_secret_key": "the API server's secret key (sessions)",
    "osms_jwt_secret": "the secret the API server signs and checks tokens with",
}
SECRETS_DIR_VARIABLE = "OSMS_SECRETS_DIR"
SECRET_FILE_MODE = 0o600


class SecretsError(ValueError):
    """A secret is missing, empty or unusable; the message names the file, never the value."""


_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
# a deployment variable: upper case ($OSMS_API_PORT); a lower-case name is a shell's own (a *_CMD's `$p`)
_VARIABLE = re.compile(r"\$(?:\{([A-Z][A-Z0-9_]*)\}|([A-Z][A-Z0-9_]*))")
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
            for m in re.finditer(_VARIABLE, v)}


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
    secrets_dir: Path | None = None  # the distributed shape's secrets folder (SECRET_FILES)
    # the distributed shape's sizes (README, Run distributed: sizing); the embedded shape has its own
    api_workers: int = 2
    worker_concurrency: int = 2

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
            **({SECRETS_DIR_VARIABLE: str(self.secrets_dir)} if self.secrets_dir is not None else {}),
            "OSMS_API_WORKERS": str(self.api_workers),
            "OSMS_WORKER_CONCURRENCY": str(self.worker_concurrency),
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
        expanded = _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)
        if expanded == value:
            break
        value = expanded
    return value


def value(env: Mapping[str, str], key: str, *, timeout: float = 10) -> str:
    """A setting's value as Airflow reads it from ``env``: ``KEY`` expanded, else the output of ``KEY_CMD``."""
    if key in env:
        return expand(env, key)
    command = env.get(f"{key}_CMD")
    if command is None:
        raise KeyError(key)
    out = subprocess.run(shlex.split(command), env=dict(env), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SecretsError(f"{key}_CMD failed ({out.returncode}): {out.stderr.strip()[:300]}")
    return out.stdout


def new_secrets() -> dict[str, str]:
    """Fresh secrets for a distributed deployment, by file name (every name of :data:`SECRET_FILES`)."""
    from cryptography.fernet import Fernet

    values = {
        "osms_postgres_password": _secrets.token_hex(24),  # hex: safe inside a URL and a shell word
        "osms_redis_password": _secrets.token_hex(24),
        "osms_fernet_key": Fernet.generate_key().decode(),
        "osms_api_secret_key": _secrets.token_hex(32),
        "osms_jwt_secret": _secrets.token_hex(32),
    }
    assert set(values) == set(SECRET_FILES)
    return values


def write_secrets_dir(directory: Path, values: Mapping[str, str], *, owner: int | None = None) -> dict[str, str]:
    """Write each secret not yet in ``directory`` (folder 0700, files 0600, no newline); return all it holds.

    Existing files are kept: secrets are generated once. ``owner`` (a uid) is given the folder and
    files when this runs as root, so that containers running as that uid can read them.
    """
    from osms.core.files import write_bytes_atomic

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for name, secret in values.items():
        path = directory / name
        if not path.exists():
            if not secret or any(c.isspace() for c in secret):
                raise SecretsError(f"{path}: a secret must be a non-empty word")
            write_bytes_atomic(secret.encode(), path, mode=SECRET_FILE_MODE)
    if owner is not None and os.geteuid() == 0:
        for path in (directory, *directory.iterdir()):
            os.chown(path, owner, 0)
    return read_secrets_dir(directory, list(values))


def read_secrets_dir(directory: Path, names: Iterable[str] = SECRET_FILES) -> dict[str, str]:
    """The named secrets of ``directory``; SecretsError names each one missing or empty."""
    found, problems = {}, []
    for name in names:
        path = directory / name
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            problems.append(f"{path} is missing")
            continue
        if not secret:
            problems.append(f"{path} is empty")
            continue
        found[name] = secret
    if problems:
        raise SecretsError("secrets: " + "; ".join(problems) + " (osms deploy env writes them)")
    return found


def check_secrets(values: Mapping[str, str]) -> None:
    """Refuse secrets Airflow would accept but must not run with: an empty or malformed Fernet key above all.

    Airflow runs without a Fernet key (connections and variables then stored in clear), and a
    malformed one fails only when the first connection is read: the init refuses both at once.
    """
    from cryptography.fernet import Fernet

    try:
        Fernet(values.get("osms_fernet_key", "").encode())
    except ValueError:
        raise SecretsError("osms_fernet_key is not a Fernet key (32 url-safe base64-encoded bytes): connections and"
                           " variables would not be encrypted; `osms deploy env` writes a fresh one") from None
    short = [n for n in SECRET_FILES if n != "osms_fernet_key" and len(values.get(n, "")) < 16]
    if short:
        raise SecretsError(f"secrets shorter than 16 characters: {', '.join(short)}")


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
