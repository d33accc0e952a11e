"""The daily job on one machine: mocks on 127.0.0.1, Airflow on embedded SQLite, every DAG for D.

What ``osms run`` (and so ``make run``) does. Each DAG runs with ``airflow dags test``
in its own process, with the project's dags and plugins, the connections given as
``AIRFLOW_CONN_*`` pointing at the mocks, and its log kept under
``<data>/airflow/logs/run-<D>/``; the console shows one line per DAG and a summary.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osms.registry import default_registry
from osms.status import BodyStatus, read_status

ROOT = Path(__file__).resolve().parents[2]
ALMATY = "Asia/Almaty"


@dataclass(frozen=True)
class DagRunResult:
    """How one DAG's run for D ended."""

    dag_id: str
    ok: bool
    seconds: float
    log: Path


def airflow_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment for Airflow processes of a local run: embedded SQLite under the data dir."""
    home = data_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": ALMATY,
        "OSMS_DATA_DIR": str(data_dir),
        **extra,
    }
    return env


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the embedded metadata database (quick when already current)."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    out = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{out.stderr[-2000:]}")


def logical_date(day: dt.date) -> str:
    """The logical date of D's run: the start of its data interval (00:30 Almaty on D)."""
    import pendulum

    return pendulum.datetime(day.year, day.month, day.day, 0, 30, tz=ALMATY).isoformat()


def run_dag(dag_id: str, day: dt.date, env: dict[str, str], log_dir: Path) -> DagRunResult:
    """Run one DAG for D with ``airflow dags test``; its whole output goes to a log file."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{dag_id}.log"
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        dag_file = ROOT / "dags" / f"{dag_id}.py"
        proc = subprocess.run([airflow, "dags", "test", "-f", str(dag_file), dag_id, logical_date(day)], env=env, stdout=fh,
                              stderr=subprocess.STDOUT)
    text = log.read_text(encoding="utf-8", errors="replace")
    ok = proc.returncode == 0 and "state=success" in text.replace("DagRunState.SUCCESS", "state=success")
    return DagRunResult(dag_id=dag_id, ok=ok, seconds=time.perf_counter() - start, log=log)


def run_day_dags(day: dt.date, data_dir: Path, env: dict[str, str], *, package: bool = True,
                 say: Callable[[str], None] = print) -> tuple[list[DagRunResult], dict[str, BodyStatus | None]]:
    """Run every body's agency DAG for D, then the package DAG; return the runs and the statuses."""
    from osms.package_dag import DAG_ID

    edition = default_registry().edition_on(day)
    log_dir = data_dir / "airflow" / "logs" / f"run-{day.isoformat()}"
    dag_ids = [b.dag_id for b in edition.bodies] + ([DAG_ID] if package else [])
    results = []
    for i, dag_id in enumerate(dag_ids, 1):
        started = time.perf_counter()
        result = run_dag(dag_id, day, env, log_dir)
        results.append(result)
        say(f"  [{i}/{len(dag_ids)}] {dag_id:<22} {'done' if result.ok else 'FAILED'}"
            f" in {time.perf_counter() - started:,.0f} s" + ("" if result.ok else f" (log: {result.log})"))
    statuses = {b.code: read_status(data_dir, day, b.code) for b in edition.bodies}
    return results, statuses


def signing_env() -> dict[str, str]:
    """The development signing key as the Airflow variable the package DAG reads."""
    from osms.keys import ensure_dev_keypair

    private, _ = ensure_dev_keypair()
    return {"AIRFLOW_VAR_OSMS_SIGNING_KEY": private.read_text()}
