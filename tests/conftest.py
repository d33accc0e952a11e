"""Project-wide test rules: every test says what kind it is."""

from __future__ import annotations

import pytest

KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test without a unit/integration/e2e marker, so no test runs unclassified."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(k) for k in KINDS)]
    if unmarked:
        listed = "\n  ".join(unmarked[:20])
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) have no kind marker ({', '.join(KINDS)}); add e.g."
            f" `pytestmark = pytest.mark.unit`:\n  {listed}"
        )
