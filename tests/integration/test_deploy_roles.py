"""The init's roles and users on a real FAB database: exact permissions, taken back when widened; passwords kept.

``osms deploy init`` (what docker-compose.yaml's airflow-init and ``make cluster`` run) against
FAB's auth manager on a SQLite database of its own: the roles must hold exactly the code's
permissions after every start, whatever was added to ``operator`` and ``qa`` in between (a copy
of FAB's Op role, as earlier releases made it, may edit connections); ``engineer`` keeps what an
engineer added; and a password changed after the first start is never reset to the secrets
file's. The servers and the REST API on top are probed in ``tests/e2e/test_roles_distributed.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from osms.dev import deploy, settings

pytestmark = pytest.mark.integration

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
PASSWORDS = {"engineer": "first-engineer-pw", "operator": "first-operator-pw", "qa": "first-qa-pw"}

# run in the deployment's environment: read or change the roles and users as an engineer would in the UI
_SCRIPT = """
import json, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from werkzeug.security import check_password_hash
with get_application_builder() as ab:
    sm = ab.sm
    for action in json.loads(sys.argv[1]):
        role = sm.find_role(action["role"]) if "role" in action else None
        if action["do"] == "grant":
            role.permissions = [*role.permissions, sm.create_permission(*action["permission"])]
            sm.session.commit()
        elif action["do"] == "password":
            sm.reset_password(sm.find_user(username=action["user"]).id, action["password"])
    out = {"roles": {}, "passwords": {}}
    for name in ("engineer", "operator", "qa"):
        out["roles"][name] = sorted([p.action.name, p.resource.name] for p in sm.find_role(name).permissions)
        user = sm.find_user(username=name)
        out["passwords"][name] = [pw for pw in json.loads(sys.argv[2]) if check_password_hash(user.password, pw)]
        out.setdefault("user_roles", {})[name] = sorted(r.name for r in user.roles)
    print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = settings.Site(airflow_home=tmp_path / "airflow", data_dir=tmp_path / "data")
    site.airflow_home.mkdir(parents=True)
    return settings.airflow_env("embedded", site, hermetic=True, extra={"AIRFLOW__CORE__AUTH_MANAGER": FAB})


def _init(env: dict[str, str], passwords: dict[str, str]) -> str:
    secrets_dir = Path(env["AIRFLOW_HOME"]).parent / "secrets"
    if not secrets_dir.exists():  # the deployment's secrets folder, written once as make compose-env does
        settings.write_secrets_dir(secrets_dir, {**settings.new_secrets(),
                                                 **{deploy.password_file(u): p for u, p in passwords.items()}})
    out = subprocess.run([sys.executable, "-m", "osms.dev.cli", "deploy", "init", "--secrets-dir", str(secrets_dir)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _look(env: dict[str, str], *actions: dict, passwords: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(list(actions)), json.dumps(passwords)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_roles_are_exact_on_every_start_and_passwords_are_set_once(env: dict[str, str]) -> None:
    wanted = {name: sorted(list(p) for p in pairs) for name, pairs in deploy.role_permissions().items()}

    # Act 1: the first start
    said = _init(env, PASSWORDS)
    first = _look(env, passwords=list(PASSWORDS.values()))

    # Assert 1: the roles are exactly the code's; each person has their role and the secrets file's password
    assert "users created: engineer, operator, qa" in said
    assert first["roles"]["operator"] == wanted["operator"]
    assert first["roles"]["qa"] == wanted["qa"]
    assert all(p in first["roles"]["engineer"] for p in wanted["engineer"])
    assert ["can_edit", "Connections"] in first["roles"]["engineer"]  # admin: everything
    assert first["user_roles"] == {u: [u] for u in PASSWORDS}
    assert first["passwords"] == {u: [p] for u, p in PASSWORDS.items()}
    assert "osms_source_nedb" in said  # the pools come with the init

    # Arrange 2: an engineer widens operator and qa (as FAB's Op role did), adds to engineer, and people change
    # their passwords
    _look(env,
          {"do": "grant", "role": "operator", "permission": ["can_edit", "Connections"]},
          {"do": "grant", "role": "operator", "permission": ["can_delete", "Variables"]},
          {"do": "grant", "role": "qa", "permission": ["can_create", "DAG Runs"]},
          {"do": "grant", "role": "engineer", "permission": ["can_read", "Some report"]},
          {"do": "password", "user": "operator", "password": "changed-operator-pw"},
          {"do": "password", "user": "engineer", "password": "changed-engineer-pw"},
          passwords=[])

    # Act 2: the next start (compose runs the init on every `up`), with the secrets file's first passwords
    said = _init(env, PASSWORDS)
    second = _look(env, passwords=[*PASSWORDS.values(), "changed-operator-pw", "changed-engineer-pw"])

    # Assert 2: what operator and qa must not have is taken away; engineer keeps its addition; no password reset
    assert "users created: none" in said
    assert second["roles"]["operator"] == wanted["operator"]
    assert second["roles"]["qa"] == wanted["qa"]
    assert ["can_read", "Some report"] in second["roles"]["engineer"]
    assert second["passwords"] == {"engineer": ["changed-engineer-pw"], "operator": ["changed-operator-pw"],
                                   "qa": [PASSWORDS["qa"]]}
