"""Project-wide test rules: every test says what kind it is."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its home and config at import: point both at a private temporary
# home before any test imports it, so tests never touch ~/airflow or a real setup.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="osms-test-airflow-")
for key, value in {
    "AIRFLOW_HOME": _AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
}.items():
    os.environ.setdefault(key, value)

KINDS = ("unit", "integration", "e2e", "container")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test without a unit/integration/e2e marker, so no test runs unclassified."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(k) for k in KINDS)]
    if unmarked:
        listed = "\n  ".join(unmarked[:20])
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) have no kind marker ({', '.join(KINDS)}); add e.g."
            f" `pytestmark = pytest.mark.unit`:\n  {listed}"
        )
