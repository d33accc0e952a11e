"""The suite refuses a test that does not say what kind it is."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_unmarked_test_fails_collection(pytester: pytest.Pytester) -> None:
    # arrange
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n    e2e: e\n")
    pytester.makepyfile(test_x="def test_unclassified():\n    assert True\n")
    # act
    result = pytester.runpytest()
    # assert
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*have no kind marker*", "*test_unclassified*"])


def test_marked_test_runs(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n    e2e: e\n")
    pytester.makepyfile(test_x="import pytest\n\n@pytest.mark.unit\ndef test_ok():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
