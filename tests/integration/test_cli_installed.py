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


def _osms_run(osms: str, data: Path, day: str, keys: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OSMS_KEY_DIR": str(keys)}
    env.pop("AIRFLOW_HOME", None)  # osms run sets up its own embedded Airflow under the data dir
    return subprocess.run([osms, "run", "--date", day, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=1200, env=env)


def test_run_delivers_the_package_once_and_identically(osms: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = _osms_run(osms, tmp_path / "data", "2025-06-01", keys)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "edition 2022" in first.stdout and "agency_labour" in first.stdout
    assert "FAILED" not in first.stdout and "no status written" not in first.stdout
    assert "receipt RCPT-" in first.stdout
    status_dir = tmp_path / "data" / "status" / "2025-06-01"
    assert len(list(status_dir.glob("*.json"))) == 8
    for path in status_dir.glob("*.json"):
        doc = json.loads(path.read_text())
        assert {c["status"] for c in doc["categories"].values()} <= {"published", "held_back"}
    package = tmp_path / "data" / "packages" / "2025-06-01"
    files = {p.name: p.read_bytes() for p in package.iterdir() if p.is_file()}
    assert {"records.parquet", "changes.parquet", "quality.json", "manifest.json", "manifest.sig",
            "receipt.json"} <= set(files)

    second = _osms_run(osms, tmp_path / "data", "2025-06-01", keys)
    assert second.returncode == 0, second.stdout[-3000:]
    again = {p.name: p.read_bytes() for p in package.iterdir() if p.is_file()}
    assert again == files  # byte-identical package, the same receipt
    ledger = (tmp_path / "data" / "mocks" / "state" / "state_corp" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1  # delivered once


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
