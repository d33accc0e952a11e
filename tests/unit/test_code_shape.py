"""The library's shape (issue 22): no module over 600 lines, no function over 80, the environment read in one place,
a path of the data dir spelled in one place (:class:`osms.core.layout.Paths`).

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
# Where a path may be spelled: the layout (Paths), and the launchers (their own dev dirs, child processes' files).
LAYOUT_MODULE = LIBRARY / "core" / "layout.py"
# Paths of the code's own files, and the settings' defaults: not in the data dir, so not Paths's. Each allowance is
# (module, the expression as ast.unparse writes it): a new spelling anywhere fails, and so does an allowance no
# longer used (the list stays true).
PATH_ALLOWANCES = {
    # the GX expectation suites of this checkout: the Run's default when $OSMS_EXPECTATIONS_DIR is not set
    ("plugins/osms/core/run.py", "Path(__file__).resolve().parents[3] / 'expectations'"),
    # the gettext catalogues shipped beside the code
    ("plugins/osms/core/i18n.py", "Path(__file__).resolve().parents[1] / 'locale'"),
    # the registry's seed files shipped with the project (include/seeds/*.yaml) and their four file names
    ("plugins/osms/core/registry.py", "Path(__file__).resolve().parents[3] / 'include' / 'seeds'"),
    ("plugins/osms/core/registry_seeds.py", "seed_dir / 'bodies.yaml'"),
    ("plugins/osms/core/registry_seeds.py", "seed_dir / 'systems.yaml'"),
    ("plugins/osms/core/registry_seeds.py", "seed_dir / 'categories.yaml'"),
    ("plugins/osms/core/registry_seeds.py", "seed_dir / 'editions.yaml'"),
    # the signing key's default folder, in the user's home (a setting, never under the data dir)
    ("plugins/osms/core/settings.py", "_home(environ) / '.osms' / 'keys'"),
    # the GX expectation suites (expectations/<suite>.json, of the checkout or a setting), read and written by name
    ("plugins/osms/quality/suites.py", "(directory or expectations_dir()) / f'{name}.json'"),
    ("plugins/osms/quality/suites.py", "directory / f'{category.code}.json'"),
    # the UI's templates and static files shipped beside its code
    ("plugins/osms/ui/app.py", "Path(__file__).with_name('templates')"),
    ("plugins/osms/ui/assets.py", "Path(__file__).resolve().parent / 'static'"),
}
_PATH_METHODS = {"joinpath", "with_name", "with_suffix", "with_stem"}
_PATH_TYPES = {"Path", "PurePath", "PosixPath", "PurePosixPath"}


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


def _spelled_paths(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, expression) of every path spelled with a literal: ``x / "a"``, ``x / f"..."``, ``Path("a")``,
    ``Path(f"...")``, ``x.joinpath("a")``, ``x.with_name("a")``, ``x.with_suffix(".a")``. The outermost expression
    only (``a / "b" / "c"`` is one), so that an allowance names it whole."""
    def literal(node: ast.AST) -> bool:
        return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))

    def spelled(node: ast.AST) -> bool:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return literal(node.right) or spelled(node.left)
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in _PATH_TYPES or (name in _PATH_METHODS and isinstance(func, ast.Attribute)):
                return any(literal(a) for a in node.args)
        return False

    inner: set[int] = set()  # the left operands of a spelled division: part of the outer expression
    for node in ast.walk(tree):
        if id(node) in inner or not spelled(node):
            continue
        left = node
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div):
            inner.add(id(left.left))
            left = left.left
        yield node.lineno, ast.unparse(node)


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


def test_no_path_of_the_data_dir_is_spelled_outside_paths() -> None:
    """Every path the library builds from a literal is Paths's (osms.core.layout), or a listed file of the code."""
    offenders, used = [], set()
    for path in _modules():
        if path == LAYOUT_MODULE or LAUNCHERS in path.parents:
            continue
        for line, expression in sorted(_spelled_paths(_tree(path))):
            if (_name(path), expression) in PATH_ALLOWANCES:
                used.add((_name(path), expression))
            else:
                offenders.append(f"{_name(path)}:{line} {expression}")
    offenders += [f"{module}: allowance no longer used: {expression}"
                  for module, expression in sorted(PATH_ALLOWANCES - used)]
    _fail_listing(offenders, "path(s) spelled outside osms.core.layout.Paths (add a Paths method and call it)")


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


def test_the_path_check_sees_each_spelling() -> None:
    """Each spelling of a path is found once, whole; a path from a Paths method or a constant is not."""
    source = ("from pathlib import Path\n"
              "a = root / 'tmp' / f'x-{pid}'\n"
              "b = Path('data')\n"
              "c = Path(f'{root}/x')\n"
              "d = root.joinpath('x')\n"
              "e = p.with_name('y')\n"
              "f = p.with_suffix('.sent')\n"
              "g = layout.Paths(root).scratch('validate', day, pid=1)\n"
              "h = site / INDEX\n"
              "i = (root / 'a').glob('*.json')\n")
    assert sorted(_spelled_paths(ast.parse(source))) == [
        (2, "root / 'tmp' / f'x-{pid}'"), (3, "Path('data')"), (4, "Path(f'{root}/x')"), (5, "root.joinpath('x')"),
        (6, "p.with_name('y')"), (7, "p.with_suffix('.sent')"), (10, "root / 'a'")]


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
