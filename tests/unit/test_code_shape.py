"""The library's shape (issue 22): no module over 600 lines, no function over 80, the environment read in one place.

Each test lists every offender (path, name, lines) in its message, so a failure says all that is left, not
only the first. The launchers' layer (``plugins/osms/dev/``) builds child processes' environments and may read
the environment; the rest of the library asks :mod:`osms.core.settings`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "osms"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
# Where the environment may be read: the settings module, and the launchers that build child environments.
SETTINGS_MODULE = LIBRARY / "core" / "settings.py"
LAUNCHERS = LIBRARY / "dev"
_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _modules() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method, nested ones too, with a dotted name (``Class.method``, ``outer.inner``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _environment_reads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) of every ``os.environ``/``os.getenv``-like use and every ``from os import environ``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            yield node.lineno, f"os.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in _ENV_NAMES:
                    yield node.lineno, f"from os import {alias.name}"


def _fail_listing(offenders: list[str], what: str) -> None:
    """Fail with every offender on a line of its own (no traceback: the list is the message)."""
    if offenders:
        pytest.fail(f"{len(offenders)} {what}:\n  " + "\n  ".join(offenders), pytrace=False)


def test_no_module_of_the_library_is_over_600_lines() -> None:
    offenders = []
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_name(path)}: {lines} lines")
    _fail_listing(offenders, f"module(s) over {MAX_MODULE_LINES} lines")


def test_no_function_of_the_library_is_over_80_lines() -> None:
    offenders = []
    for path in _modules():
        for name, node in _functions(_tree(path)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                offenders.append(f"{_name(path)}:{node.lineno} {name}: {lines} lines")
    _fail_listing(offenders, f"function(s) over {MAX_FUNCTION_LINES} lines")


def test_only_the_settings_module_and_the_launchers_read_the_environment() -> None:
    offenders = []
    for path in _modules():
        if path == SETTINGS_MODULE or LAUNCHERS in path.parents:
            continue
        offenders += [f"{_name(path)}:{line} {what}" for line, what in sorted(_environment_reads(_tree(path)))]
    _fail_listing(offenders, "environment read(s) outside osms.core.settings and osms/dev/")


def test_the_checks_see_what_they_look_for() -> None:
    """The walkers find a long function, a nested one, and each spelling of an environment read (else they prove nothing)."""
    body = "\n".join(f"      x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = (f"import os\nfrom os import getenv\nclass C:\n  def m(self):\n    def inner():\n{body}\n"
              "a = os.environ.get('A')\nb = os.getenv('B')\n")
    tree = ast.parse(source)
    long = {name: (n.end_lineno or n.lineno) - n.lineno + 1 for name, n in _functions(tree)}
    assert long["C.m.inner"] == MAX_FUNCTION_LINES + 1 and "C.m" in long
    assert sorted(_environment_reads(tree)) == [(2, "from os import getenv"), (MAX_FUNCTION_LINES + 6, "os.environ"),
                                                (MAX_FUNCTION_LINES + 7, "os.getenv")]


# ----------------------------------------------------------------------------- the stages take their Run

# The stages: what a task runs. They take an osms.core.run.Run (the day, Paths, the edition, the budget) and
# look none of it up themselves.
STAGES = [LIBRARY / "sources", LIBRARY / "quality", LIBRARY / "package"]
# What a stage may not call: each looks up what the Run carries.
LOOKUPS = {"current": "the settings", "task_budget": "the memory budget", "default_registry": "the registry",
           "data_dir": "the data dir", "paths": "the data dir's Paths", "default_seed_dir": "the registry's seeds"}
# Named allowances, each for a caller that is not a day's run (module, function): why.
LOOKUP_ALLOWANCES = {
    ("quality/suites.py", "expectations_dir"): "the suites' folder for the suites' command line and for tests",
    ("quality/suites.py", "main"): "the suites' command line (`make suites`): no day, no run",
    ("package/chain.py", "first_day"): "the decree's first day, for `osms chain start` and the deploy init",
}


def _lookups(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, innermost enclosing function, name) of every call of a name in LOOKUPS (``f()`` or ``module.f()``)."""
    owner: dict[int, str] = {}
    for name, function in _functions(tree):  # an outer function comes before its nested ones, which overwrite
        for node in ast.walk(function):
            owner[id(node)] = name
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if called in LOOKUPS:
                yield node.lineno, owner.get(id(node), "<module>"), called


def test_no_stage_looks_up_what_its_run_carries() -> None:
    offenders = []
    for stage in STAGES:
        for path in sorted(stage.rglob("*.py")):
            module = str(path.relative_to(LIBRARY))
            offenders += [f"{_name(path)}:{line} {function}: {called}() looks up {LOOKUPS[called]}"
                          for line, function, called in sorted(_lookups(_tree(path)))
                          if (module, function.rsplit(".", 1)[-1]) not in LOOKUP_ALLOWANCES]
    _fail_listing(offenders, "lookup(s) in a stage of what its Run carries (take a Run instead)")


def test_the_lookup_check_sees_each_spelling() -> None:
    source = ("from osms.core import settings, layout\nfrom osms.core.budget import task_budget\n"
              "def stage():\n    a = settings.current()\n    b = task_budget()\n    c = layout.data_dir()\n")
    source += "def outer():\n    def inner():\n        return default_registry()\n"
    found = sorted((line, fn, called) for line, fn, called in _lookups(ast.parse(source)))
    assert found == [(4, "stage", "current"), (5, "stage", "task_budget"), (6, "stage", "data_dir"),
                     (9, "outer.inner", "default_registry")]
