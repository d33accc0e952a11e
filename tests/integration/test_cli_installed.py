"""The installed `osms` console command, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

OSMS = shutil.which("osms", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def osms() -> str:
    if OSMS is None:
        pytest.fail("the osms console command is not installed in this environment: run `make setup`")
    return OSMS


def test_registry_show_json(osms: str) -> None:
    out = subprocess.run([osms, "registry", "show", "--date", "2025-06-01", "--json"],
                         capture_output=True, text=True, check=True, cwd="/")
    doc = json.loads(out.stdout)
    assert doc["counts"] == {"bodies": 8, "systems": 18, "categories": 16, "feeds": 35}


def test_registry_refuses_early_date(osms: str) -> None:
    out = subprocess.run([osms, "registry", "show", "--date", "2022-01-01"], capture_output=True, text=True, cwd="/")
    assert out.returncode == 1
    assert "no edition of Decree No. 660 is available for 2022-01-01" in out.stderr


def test_iin_check_exit_status(osms: str) -> None:
    ok = subprocess.run([osms, "iin", "check", "791028302728", "061211600012"], capture_output=True, text=True)
    bad = subprocess.run([osms, "iin", "check", "821214240092"], capture_output=True, text=True)
    assert (ok.returncode, bad.returncode) == (0, 1)
