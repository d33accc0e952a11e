"""What a distributed deployment needs besides its servers: the same for docker-compose.yaml and ``make cluster``.

- **Secrets** (:func:`write_secrets`): the database and broker passwords, Fernet key, JWT
  and API secrets (``osms.dev.settings.SECRET_NAMES``) and the three users' passwords, in one
  file that is never committed: ``.env`` beside docker-compose.yaml (``make compose-env``),
  ``<data>/cluster/secrets.env`` for ``make cluster``. Generated once, kept.
- **Init** (:func:`init_airflow`, ``osms deploy init``: the compose file's ``airflow-init``,
  and what ``make cluster`` runs before its components): migrate the metadata database;
  FAB's roles ``engineer``, ``operator`` and ``qa`` (Admin-, Op- and Viewer-like, each
  allowed the Data quality view) and one user each; the signing key into the masked
  variable the package DAG reads; connections from a file (the mocks publish theirs).
- **The mock outside world for demos** (:func:`serve_mocks`, ``osms deploy mocks``: the
  compose file's ``mocks`` service): the source systems and the receiver served on an
  interface of the compose network, their connections written for the init.

Every function here that touches Airflow runs in a process configured for the deployment
(the settings of ``osms.dev.settings`` in its environment).
"""

from __future__ import annotations

import json
import secrets as _secrets
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from osms.dev import settings

# The three people of the Data quality pages and the FAB role each one's role is modelled on;
# the simple auth manager gives them admin, op and viewer (osms.dev.ui_stack.USERS).
PEOPLE = {"engineer": "Admin", "operator": "Op", "qa": "Viewer"}
CONNECTIONS_FILE = "airflow-connections.json"  # beside the mocks' tokens.json, in their state dir


def password_variable(user: str) -> str:
    """The secrets-file name of a user's password: ``OSMS_ENGINEER_PASSWORD``."""
    return f"OSMS_{user.upper()}_PASSWORD"


def new_passwords() -> dict[str, str]:
    """A fresh password per person, by secrets-file name."""
    return {password_variable(u): _secrets.token_urlsafe(18) for u in PEOPLE}


def write_secrets(path: Path) -> dict[str, str]:
    """Write a new secrets file (0600) unless one exists; return the secrets it holds."""
    if path.exists():
        return settings.parse_env_file(path)
    values = {**settings.new_secrets(), **new_passwords()}
    path.parent.mkdir(parents=True, exist_ok=True)
    settings.write_env_file(path, values, header=(
        "Secrets of one OSMS distributed deployment: generated once, never committed, keep it private.\n"
        "Database, broker, Fernet, JWT and API secrets; the passwords of engineer, operator and qa."))
    return values


def passwords_of(values: Mapping[str, str]) -> dict[str, str]:
    """The users' passwords in a secrets mapping, by user name."""
    return {u: values[password_variable(u)] for u in PEOPLE if values.get(password_variable(u))}


# --------------------------------------------------------------------------- init


def init_airflow(*, passwords: Mapping[str, str], signing_key: Path | None = None,
                 connections: Path | None = None, say: Callable[[str], None] = print) -> None:
    """Migrate, roles and users, the signing key variable, connections: idempotent, safe on every start."""
    missing = [u for u in PEOPLE if not passwords.get(u)]
    if missing:
        raise SystemExit(f"no password for {', '.join(missing)}: set {', '.join(map(password_variable, missing))}"
                         " (make compose-env writes a .env with all secrets)")
    say("migrating the metadata database ...")
    migrate()
    say("roles engineer, operator, qa and their users ...")
    ensure_roles_and_users(passwords)
    if signing_key is not None:
        say(f"the signing key into the variable {signing_key_variable()} ...")
        set_signing_key(signing_key)
    if connections is not None:
        say(f"connections from {connections} ...")
        say(f"  {', '.join(import_connections(connections))}")


def migrate() -> None:
    """``airflow db migrate`` (FAB's tables included), failing with its output."""
    from osms.dev.airflow_local import airflow_executable

    out = subprocess.run([airflow_executable(), "db", "migrate"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        raise SystemExit(f"airflow db migrate failed ({out.returncode}):\n{out.stdout[-3000:]}")


def ensure_roles_and_users(passwords: Mapping[str, str]) -> dict[str, int]:
    """FAB roles engineer/operator/qa (their model role's permissions and Data quality) and a user each.

    Missing permissions are added, none taken away (what an engineer added in the UI
    stays); a user's password is set to the given one when it differs. Returns each
    role's number of permissions.
    """
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.providers.fab.www.security import permissions
    from werkzeug.security import check_password_hash

    from osms.ui.app import VIEW_NAME

    counts = {}
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # FAB's own roles and permissions, as the API server makes them
        # what the plugin asks: is_authorized_custom_view(method="GET", resource_name="Data quality")
        view = sm.create_permission(permissions.ACTION_CAN_READ, VIEW_NAME)
        for name, model in PEOPLE.items():
            role = sm.find_role(name) or sm.add_role(name)
            wanted = {*sm.find_role(model).permissions, view}
            role.permissions = [*role.permissions, *(wanted - set(role.permissions))]
            sm.session.commit()
            counts[name] = len(role.permissions)
            user = sm.find_user(username=name)
            if user is None:
                sm.add_user(name, name.capitalize(), "OSMS", f"{name}@osms.invalid", role, password=passwords[name])
                continue
            if role not in user.roles:
                user.roles = [*user.roles, role]
                sm.update_user(user)
            if not check_password_hash(user.password or "", passwords[name]):
                sm.reset_password(user.id, passwords[name])
    return counts


def signing_key_variable() -> str:
    from osms.orchestration.package_dag import SIGNING_KEY_VARIABLE

    return SIGNING_KEY_VARIABLE


def set_signing_key(path: Path) -> None:
    """Store the PEM private key in the variable the package DAG reads (encrypted with the Fernet key).

    The development key is refused, with the reason, unless ``OSMS_DEMO`` is true: a distributed
    deployment signs with its own key (:func:`osms.core.keys.check_signing_key`).
    """
    from airflow.models import Variable
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from osms.core.keys import SigningKeyRefused, check_signing_key

    pem = path.read_bytes()
    try:
        check_signing_key(pem, where=str(path))
    except SigningKeyRefused as exc:
        raise SystemExit(str(exc)) from None
    load_pem_private_key(pem, password=None)  # refuse anything but a usable key, here rather than at D's package
    Variable.set(signing_key_variable(), pem.decode(), description="Ed25519 key the daily package is signed with")


def import_connections(path: Path) -> list[str]:
    """Create or replace the connections of a JSON file (``{conn_id: {conn_type, host, ...}}``); return their ids."""
    from airflow.models import Connection
    from airflow.secrets.local_filesystem import load_connections_dict
    from airflow.utils.session import create_session
    from sqlalchemy import select

    loaded = load_connections_dict(str(path))
    with create_session() as session:
        for conn_id, conn in sorted(loaded.items()):
            existing = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(conn)
    return sorted(loaded)


# --------------------------------------------------------------------------- the mocks' connections


def mock_connections(services: Any, host: str) -> dict[str, dict[str, Any]]:
    """The mocks' Airflow connections (``MockServices.airflow_env``) as a connections file, reached at ``host``."""
    from osms.sources.connections import ALLOW_PLAIN_HTTP, is_loopback

    out = {}
    for name, value in services.airflow_env().items():
        conn = json.loads(value)
        conn["host"] = host
        if not is_loopback(host):
            # the demo mocks speak plain http on the compose network: allowed by name, and warned of on each read
            conn["extra"] = {**conn.get("extra", {}), ALLOW_PLAIN_HTTP: True}
        out[name.removeprefix("AIRFLOW_CONN_").lower()] = conn
    return out


def write_connections(path: Path, connections: Mapping[str, Any]) -> Path:
    """Write a connections file (0600: it holds the tokens)."""
    from osms.core.files import write_bytes_atomic

    write_bytes_atomic(json.dumps(connections, indent=2, sort_keys=True).encode(), path, mode=0o600)
    return path


def serve_mocks(*, data_dir: Path, listen: str, advertise: str, sources_port: int, receiver_port: int,
                public_key: Path, scale: float | None = None,
                say: Callable[[str], None] = print) -> None:
    """The compose file's ``mocks`` service: serve on ``listen`` until SIGTERM, publish the connections.

    Inside a container 127.0.0.1 reaches nobody else, so the servers bind ``listen`` (the
    container's interfaces on the compose network; only 127.0.0.1 is published on the host).
    Tokens are generated on the first start and kept in the state dir, so connections
    imported by the init stay valid across restarts.
    """
    import uvicorn

    from mocks import state_corp
    from mocks.config import MockConfig
    from mocks.population import PopulationSpec, load_population
    from mocks.runner import RunningServer
    from mocks.service import MockServices
    from mocks.sources import SourceService, create_app
    from osms.dev.stopping import StopSignals

    config = MockConfig(data_dir=data_dir / "mocks", **({"scale": scale} if scale else {}))
    known = config.state_dir / "tokens.json"
    if known.exists():
        saved = json.loads(known.read_text(encoding="utf-8"))
        config.tokens, config.admin_token = saved["systems"], saved["admin_token"]
        config.receiver_token = saved["receiver_token"]
    population = load_population(PopulationSpec(seed=config.seed, scale=config.scale), config.cache_dir,
                                 progress=True)
    service = SourceService(population, config)
    receiver = state_corp.create_app(state_corp.StateCorpConfig(
        state_dir=config.state_dir / "state_corp", token=config.receiver_token or "",
        admin_token=config.admin_token or "", public_key=public_key, enforce_chain=config.enforce_chain))
    servers = []
    for app, port, name in ((create_app(service), sources_port, "sources"), (receiver, receiver_port, "state_corp")):
        server = uvicorn.Server(uvicorn.Config(app, host=listen, port=port, log_level="warning", access_log=False,
                                               timeout_keep_alive=30))
        thread = threading.Thread(target=server.run, name=f"{name}:{port}", daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise SystemExit(f"the {name} server could not listen on {listen}:{port}")
            time.sleep(0.05)
        servers.append(RunningServer(url=f"http://{advertise}:{port}", port=port, _server=server, _thread=thread))
    services = MockServices(config=config, sources=servers[0], state_corp=servers[1], public_key_path=public_key,
                            source_service=service)
    with StopSignals() as stop:
        services.write_credentials()
        path = write_connections(config.state_dir / CONNECTIONS_FILE, mock_connections(services, advertise))
        say(f"source systems {services.sources_url}, receiver {services.state_corp_url}; connections: {path}")
        stop.wait()
        services.stop()
