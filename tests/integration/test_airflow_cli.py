"""`make airflow` as a person runs it: the installed `osms airflow` prints where to go and who can log in.

The command is started as a process on a free port with a private data dir and key dir;
it must print the URL and the passwords file, the three users must log in with the
generated passwords (kept private on disk), every DAG must be unpaused, nothing may
listen beyond 127.0.0.1, and Ctrl-C (also twice) must stop everything and exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from osms.dev.airflow_local import free_port
from osms.dev.ui_stack import USERS, dag_ids

pytestmark = pytest.mark.integration

OSMS = shutil.which("osms", path=str(Path(sys.executable).parent))
START_TIMEOUT = 600  # under a loaded CI machine (the container tests build beside it) the first parse is slow


def _env(tmp_path: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "OSMS_KEY_DIR": str(tmp_path / "keys")}


def test_osms_airflow_prints_url_and_passwords_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    # Arrange
    assert OSMS, "the osms console command is not installed: run `make setup`"
    port, data = free_port(), tmp_path / "data"
    out = tmp_path / "out.log"

    # Act
    with out.open("w") as fh:
        proc = subprocess.Popen([OSMS, "airflow", "--data-dir", str(data), "--port", str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, env=_env(tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Press Ctrl-C" not in out.read_text(errors="replace"):
            assert proc.poll() is None, f"osms airflow exited with {proc.returncode}:\n{out.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not up after {START_TIMEOUT} s:\n{out.read_text()[-3000:]}"
            time.sleep(1)
        text = out.read_text()

        # Assert: what it prints
        url = f"http://127.0.0.1:{port}"
        passwords_file = data / "airflow" / "simple_auth_manager_passwords.json"
        assert f"Airflow is up: {url}" in text
        assert f"{url}/plugin/data-quality" in text
        assert str(passwords_file) in text
        assert all(f"{u} ({r})" in text for u, r in USERS.items())

        # the passwords: one per user, readable by the owner only, not printed
        assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
        passwords = json.loads(passwords_file.read_text())
        assert set(passwords) == set(USERS)
        assert not any(p in text for p in passwords.values()), "a password was printed"

        tokens = {}
        for user, password in passwords.items():
            r = httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=10)
            assert r.status_code in (200, 201), f"{user} cannot log in: {r.status_code}"
            tokens[user] = r.json()["access_token"]
        dags = httpx.get(f"{url}/api/v2/dags", params={"limit": 100}, timeout=10,
                         headers={"Authorization": f"Bearer {tokens['qa']}"}).json()["dags"]
        assert {d["dag_id"]: d["is_paused"] for d in dags} == dict.fromkeys(dag_ids(), False)
        refused = httpx.patch(f"{url}/api/v2/dags/agency_courts", json={"is_paused": True}, timeout=10,
                              headers={"Authorization": f"Bearer {tokens['qa']}"})
        assert refused.status_code == 403, "qa (viewer) could pause a DAG"

        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        listening = {(c.laddr.ip, c.laddr.port) for p in tree for c in _connections(p) if c.status == "LISTEN"}
        assert listening and all(ip == "127.0.0.1" for ip, _ in listening), listening
    finally:
        # Act: Ctrl-C, twice, as an impatient operator (or `timeout` forwarding its own) does
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)] \
            if proc.poll() is None else []
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=300)
    assert code == 0, out.read_text()[-3000:]
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left running after Ctrl-C: {[p.pid for p in alive]}"


def test_osms_airflow_names_a_busy_port(tmp_path: Path) -> None:
    assert OSMS
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([OSMS, "airflow", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
                           capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert r.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in r.stderr and "PORT=" in r.stderr
    assert re.search(r"make airflow PORT=\d+", r.stderr)


def _connections(p: psutil.Process) -> list:
    try:
        return p.net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
