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


def test_run_runs_every_agency_dag(osms: str, tmp_path) -> None:
    import os

    env = {**os.environ, "OSMS_KEY_DIR": str(tmp_path / "keys")}
    env.pop("AIRFLOW_HOME", None)  # osms run sets up its own embedded Airflow under the data dir
    out = subprocess.run([osms, "run", "--date", "2025-06-01", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "edition 2022" in out.stdout and "agency_labour" in out.stdout
    assert "FAILED" not in out.stdout and "no status written" not in out.stdout
    statuses = sorted(p.name for p in (tmp_path / "status" / "2025-06-01").glob("*.json"))
    assert len(statuses) == 8
    for path in (tmp_path / "status" / "2025-06-01").glob("*.json"):
        doc = json.loads(path.read_text())
        assert {c["status"] for c in doc["categories"].values()} <= {"published", "held_back"}
    assert "Not built yet" in out.stdout


def test_mocks_serve_prints_urls_and_stops_on_ctrl_c(osms: str, tmp_path) -> None:
    import os
    import re
    import signal
    import time

    import httpx

    env = {**os.environ, "OSMS_KEY_DIR": str(tmp_path / "keys")}
    proc = subprocess.Popen([osms, "mocks", "serve", "--data-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        text = "".join(lines)
        urls = re.findall(r"http://127\.0\.0\.1:\d+", text)
        assert len(urls) == 2, text
        tokens = json.loads((tmp_path / "mocks" / "state" / "tokens.json").read_text())
        r = httpx.get(f"{urls[0]}/v1/systems/payments/records", params={"category": "pregnant", "as_of": "2025-06-01"},
                      headers={"Authorization": f"Bearer {tokens['systems']['payments']}"})
        assert r.status_code == 200 and r.content.count(b"\n") > 0
        assert httpx.get(f"{urls[1]}/health").json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
