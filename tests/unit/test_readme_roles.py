"""README's role table is the one the tests probe (``tests/support/roles.py``), line for line.

The REST probes run against real servers in ``tests/e2e/test_roles_*.py``; here the table's
text, the FAB permissions behind the lines with no endpoint of ours, and the simple auth
manager's answers for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.roles import ROLES, ROWS, SHAPES, cell

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"
COLUMNS = ["what", "engineer", "operator (FAB)", "operator (embedded)", "qa (FAB)", "qa (embedded)"]


def _readme_table() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Who can do what"):]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows


def test_readme_role_table_is_the_probed_one() -> None:
    header, rule, *lines = _readme_table()
    assert header == COLUMNS
    expected = [[r.what, cell(r.of("distributed", "engineer")),
                 cell(r.of("distributed", "operator")), cell(r.of("embedded", "operator")),
                 cell(r.of("distributed", "qa")), cell(r.of("embedded", "qa"))] for r in ROWS]
    assert lines == expected


def test_the_engineer_may_do_everything_there_is_in_both_shapes() -> None:
    for row in ROWS:
        assert all(row.of(shape, "engineer") in (True, None) for shape in SHAPES), row.what


def test_every_line_is_probed_or_is_a_permission() -> None:
    for row in ROWS:
        assert bool(row.probes) != bool(row.permission), row.what


def test_the_fab_roles_hold_the_permission_lines_as_the_table_says() -> None:
    from osms.dev.deploy import role_permissions

    roles = role_permissions()
    for row in (r for r in ROWS if r.permission):
        for role in ROLES:
            assert (row.permission in roles[role]) == row.of("distributed", role), (row.what, role)


def test_the_simple_auth_manager_answers_the_permission_lines_as_the_table_says(monkeypatch) -> None:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from osms.dev import settings
    from osms.dev.ui_stack import USERS
    from osms.ui.app import DECIDERS_ENV, may_decide

    embedded = settings.parse_env_file(settings.config_dir() / settings.SHAPES["embedded"])
    monkeypatch.setenv(DECIDERS_ENV, embedded[DECIDERS_ENV])  # as make airflow sets it
    manager = SimpleAuthManager()
    for row in (r for r in ROWS if r.permission):
        _, resource = row.permission
        for role in ROLES:
            user = SimpleAuthManagerUser(username=role, role=USERS[role])
            allowed = manager.is_authorized_custom_view(method="POST", resource_name=resource, user=user)
            if resource == "QA decisions":
                allowed = may_decide(manager, user)
            assert allowed == row.of("embedded", role), (row.what, role)
