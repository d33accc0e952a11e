"""What a distributed deployment needs besides its servers: the same for docker-compose.yaml and ``make cluster``.

- **Secrets** (:func:`write_secrets`): the database and broker passwords, Fernet key, JWT
  and API secrets (``osms.dev.settings.SECRET_FILES``), the three users' passwords and, for
  compose, the deployment's own package signing key pair: one file each in a secrets folder
  that is never committed (``secrets/`` beside docker-compose.yaml, written by
  ``make compose-env`` with the ``.env`` of the deployment's other variables;
  ``<data>/cluster/secrets`` for ``make cluster``). Generated once, kept.
- **Init** (:func:`init_airflow`, ``osms deploy init``: the compose file's ``airflow-init``,
  and what ``make cluster`` runs before its components): refuse missing or unusable secrets;
  migrate the metadata database; FAB's roles ``engineer``, ``operator`` and ``qa`` (Admin-,
  Op- and Viewer-like, each allowed the Data quality view) and one user each; the signing
  key into the masked variable the package DAG reads; connections from a file (the mocks
  publish theirs).
- **The mock outside world for demos** (:func:`serve_mocks`, ``osms deploy mocks``: the
  compose file's ``mocks`` service): the source systems and the receiver served on an
  interface of the compose network, their connections written for the init.

Every function here that touches Airflow runs in a process configured for the deployment
(the settings of ``osms.dev.settings`` in its environment).
"""

from __future__ import annotations

import json
import os
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
# compose: the deployment's package signing key pair, in its secrets folder (the private key goes to the init only)
SIGNING_KEY_FILE = "osms_signing_key"
SIGNING_PUBLIC_KEY_FILE = "osms_signing_public_key.pem"
# the uid the image's user has (Dockerfile); containers run as it when compose is started by root
IMAGE_UID = 50000


def password_file(user: str) -> str:
    """The secrets-folder file of a user's password: ``osms_engineer_password``."""
    return f"osms_{user}_password"


def new_passwords() -> dict[str, str]:
    """A fresh password per person, by secrets-folder file name."""
    return {password_file(u): _secrets.token_urlsafe(18) for u in PEOPLE}


def write_secrets(directory: Path, *, owner: int | None = None) -> dict[str, str]:
    """Write each secret and password not yet in ``directory`` (0700; files 0600); return all of them."""
    return settings.write_secrets_dir(directory, {**settings.new_secrets(), **new_passwords()}, owner=owner)


def read_passwords(directory: Path) -> dict[str, str]:
    """The users' passwords in a secrets folder, by user name (SecretsError names a missing one)."""
    values = settings.read_secrets_dir(directory, [password_file(u) for u in PEOPLE])
    return {u: values[password_file(u)] for u in PEOPLE}


def compose_uid() -> int:
    """The uid compose runs the services as: the caller's, or the image's user when the caller is root."""
    return os.getuid() or IMAGE_UID


def write_compose_env(directory: Path, *, signing_key: Path | None = None) -> tuple[Path, Path]:
    """``make compose-env``: ``directory/.env`` and ``directory/secrets/``, each written once and then kept.

    ``.env`` holds what compose interpolates and nothing secret (the uid the services run as);
    ``secrets/`` every secret, the users' passwords and the package signing key pair: the
    given private key, else a fresh pair for this deployment (register its public key with
    the State Corporation). Files belong to the uid the containers run as.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from osms.core.files import write_bytes_atomic

    uid = compose_uid()
    secrets_dir = directory / "secrets"
    write_secrets(secrets_dir, owner=uid)
    private = secrets_dir / SIGNING_KEY_FILE
    if not private.exists():
        if signing_key is not None:
            pem = signing_key.read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
        else:
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        write_bytes_atomic(pem, private, mode=settings.SECRET_FILE_MODE)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        write_bytes_atomic(public, secrets_dir / SIGNING_PUBLIC_KEY_FILE, mode=0o644)
        if os.geteuid() == 0:
            for path in (private, secrets_dir / SIGNING_PUBLIC_KEY_FILE):
                os.chown(path, uid, 0)
    env = directory / ".env"
    if not env.exists():
        settings.write_env_file(env, {"OSMS_UID": str(uid)}, header=(
            "docker-compose.yaml's variables for this deployment (make compose-env; .env.example lists them all).\n"
            "Nothing secret: the secrets are files in secrets/ beside it (0600, never committed)."))
    return env, secrets_dir


# --------------------------------------------------------------------------- init


def init_airflow(*, secrets_dir: Path, signing_key: Path | None = None, connections: Path | None = None,
                 chain_start: Any = None, say: Callable[[str], None] = print) -> None:
    """Check the secrets, migrate, roles and users, the signing key variable, connections, the chain's start (once):
    idempotent."""
    try:
        settings.check_secrets(settings.read_secrets_dir(secrets_dir))
        passwords = read_passwords(secrets_dir)
    except settings.SecretsError as exc:
        raise SystemExit(f"osms deploy init: {exc}") from None
    say("migrating the metadata database ...")
    migrate()
    from osms.core import layout

    layout.lineage(layout.data_dir()).mkdir(parents=True, exist_ok=True)  # the lineage file transport writes there
    say("roles engineer, operator, qa and their users ...")
    ensure_roles_and_users(passwords)
    if signing_key is not None:
        say(f"the signing key into the variable {signing_key_variable()} ...")
        set_signing_key(signing_key)
    if connections is not None:
        say(f"connections from {connections} ...")
        say(f"  {', '.join(import_connections(connections))}")
    if chain_start is not None:
        from osms.core.layout import data_dir
        from osms.package.chain import ChainStartConflict, set_chain_start

        try:
            start = set_chain_start(data_dir(), chain_start, set_by="the init", strict=True)
        except ChainStartConflict as exc:
            raise SystemExit(str(exc)) from None
        say(f"the delivery chain starts at {start.start} (set by {start.set_by})")


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
