"""What `pip install .` needs is declared: every module the code imports comes from a declared distribution.

pyproject.toml declares the runtime's dependencies as ranges (requirements.txt pins the direct ones,
constraints.txt all of them); a module imported by the library, the DAGs or the mocks but brought in
only by chance (through Airflow, say) would break the day that dependency stops bringing it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CODE = [ROOT / "plugins", ROOT / "mocks", ROOT / "dags"]
OWN = {"osms", "mocks", "osms_ui_plugin", "osms_task_metrics_plugin"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_normal(Requirement(r).name): Requirement(r) for r in project["dependencies"]}


def _imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for base in CODE:
        for path in base.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - OWN - {"__future__"}


def test_every_imported_module_comes_from_a_declared_dependency() -> None:
    declared = _declared()
    owners = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level_modules()):
        dists = {_normal(d) for d in owners.get(module, [])}
        if module == "airflow":
            dists = {"apache-airflow"}  # the core and its providers share the namespace; the core is declared
        if not dists & set(declared):
            undeclared[module] = sorted(dists) or ["(not installed)"]
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_pinned_versions_satisfy_the_declared_ranges() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_normal(name)] = version
    outside = {name: (str(req.specifier), pins.get(name)) for name, req in _declared().items()
               if pins.get(name) is None or not req.specifier.contains(pins[name], prereleases=True)}
    assert not outside, f"pinned versions outside pyproject.toml's ranges (or not pinned): {outside}"


def test_requirements_txt_is_pinned_by_constraints_txt_and_holds_no_test_tool() -> None:
    pins = {_normal(line.partition("==")[0]): line.partition("==")[2]
            for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        assert str(req.specifier).startswith("=="), f"requirements.txt pins exactly: {line}"
        assert pins.get(_normal(req.name)) == str(req.specifier)[2:], f"{req.name}: constraints.txt differs"
        assert _normal(req.name) not in {"pytest", "hypothesis", "playwright"}, f"{req.name} is a test tool"
