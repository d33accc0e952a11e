"""The daily job on one machine: mocks on 127.0.0.1, Airflow on embedded SQLite, every DAG for D.

What ``osms run`` (and so ``make run``) does. Each DAG run is Airflow's own
``dag.test()`` (what ``airflow dags test`` runs: the DAG's tasks in process, one
after another, against the metadata database), but the runs are carried by warm
worker processes, one per core, that keep Airflow, pyarrow and Great
Expectations imported from one DAG to the next: starting Airflow costs 15 to 20
CPU-seconds, which nine processes one after another paid nine times.

The agency DAGs go to whichever worker is free, the largest body first (by the
rows it reported on its last reported day, else by its number of feeds), so the
two cores stay busy; once every body has reported, one worker runs the package
DAG. Each DAG run's whole log is kept in ``<data>/airflow/logs/run-<D>/<dag_id>.log``
and each task's cost in ``<data>/metrics/<D>/`` (see :mod:`osms.orchestration.task_metrics`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osms.core.dates import ALMATY, logical_date
from osms.core.registry import default_registry
from osms.core.status import BodyStatus, read_status, read_status_or_none

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class DagRunResult:
    """How one DAG's run for D ended."""

    dag_id: str
    ok: bool
    seconds: float
    log: Path


def airflow_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment for Airflow processes of a local run: the embedded shape, its SQLite under the data dir."""
    from osms.dev import settings

    from osms.core import layout

    home = data_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    layout.lineage(data_dir).mkdir(parents=True, exist_ok=True)  # the lineage file transport writes there
    site = settings.Site(airflow_home=home, data_dir=data_dir)
    return settings.airflow_env("embedded", site, extra=extra)


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the embedded metadata database (quick when already current)."""
    wait_migrate(start_migrate(env))


def start_migrate(env: dict[str, str]) -> subprocess.Popen[str]:
    """``airflow db migrate`` started in the background; :func:`wait_migrate` checks it."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    return subprocess.Popen([airflow, "db", "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_migrate(proc: subprocess.Popen[str]) -> None:
    """Wait for a migration started by :func:`start_migrate`; RuntimeError with its output if it failed."""
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{out[-2000:]}")


def run_dag(dag_id: str, day: dt.date, env: dict[str, str], log_dir: Path) -> DagRunResult:
    """Run one DAG for D with ``airflow dags test`` in a process of its own; its whole output goes to a log file."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{dag_id}.log"
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        dag_file = ROOT / "dags" / f"{dag_id}.py"
        proc = subprocess.run([airflow, "dags", "test", "-f", str(dag_file), dag_id, logical_date(day)], env=env,
                              stdout=fh, stderr=subprocess.STDOUT)
    text = log.read_text(encoding="utf-8", errors="replace")
    ok = proc.returncode == 0 and "state=success" in text.replace("DagRunState.SUCCESS", "state=success")
    return DagRunResult(dag_id=dag_id, ok=ok, seconds=time.perf_counter() - start, log=log)


# --------------------------------------------------------------------------- warm workers


class DagWorkers:
    """Worker processes that run DAGs with ``dag.test()``, one DAG at a time each, kept warm between DAGs.

    A worker still holding more than ``recycle_bytes`` after a DAG (the memory budget's
    half: what the biggest tasks left behind) is replaced by a fresh one before the
    next, as Celery's ``worker_max_memory_per_child`` does.
    """

    def __init__(self, env: dict[str, str], workers: int, *, recycle_bytes: int | None = None) -> None:
        from osms.core.budget import task_budget

        self._env = env
        self.recycle_bytes = recycle_bytes or task_budget().total // 2
        self.recycled = 0
        self._answers: dict[int, Any] = {}
        self._procs = [self._spawn() for _ in range(max(1, workers))]

    def _spawn(self) -> subprocess.Popen[str]:
        # answers come back on a pipe of their own: whatever Airflow prints while it loads
        # (its configuration notices go to stdout) can never be taken for one
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen([sys.executable, "-m", __name__, "worker", str(write_end)], env=self._env,
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    text=True, bufsize=1, start_new_session=True, pass_fds=(write_end,))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._answers[proc.pid] = os.fdopen(read_end, "r", encoding="utf-8")
        return proc

    def _answer(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        """The worker's answer to its last job; ``{"ok": false}`` when it died without one."""
        try:
            return dict(json.loads(self._answers[proc.pid].readline() or '{"ok": false}'))
        except (OSError, ValueError):
            return {"ok": False}

    def _stop(self, proc: subprocess.Popen[str]) -> None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        answers = self._answers.pop(proc.pid, None)
        if answers is not None:
            answers.close()

    def prepare(self, log: Path) -> None:
        """Have one worker write every DAG to the metadata database, before DAGs run side by side.

        ``dag.test()`` writes its DAG's bundle to the database first; two workers doing
        that at once on a new database would both insert the same DAGs.
        """
        proc = self._procs[0]
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"prepare": True, "log": str(log)}) + "\n")
        answer = self._answer(proc)
        if not answer.get("ok"):
            raise RuntimeError(f"the DAGs could not be written to the metadata database (log: {log})")

    def run(self, jobs: Sequence[tuple[str, dt.date, Path]],
            on_done: Callable[[DagRunResult], None] = lambda r: None, *,
            conf: dict[str, Any] | None = None) -> list[DagRunResult]:
        """Run ``(dag_id, D, log file)`` jobs in order of the list, each on the next free worker."""
        pending: queue.Queue[tuple[str, dt.date, Path] | None] = queue.Queue()
        for job in jobs:
            pending.put(job)
        results: list[DagRunResult] = []
        lock = threading.Lock()

        def serve(slot: int) -> None:
            while True:
                proc = self._procs[slot]
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                dag_id, day, log = job
                started = time.perf_counter()
                assert proc.stdin is not None
                try:
                    proc.stdin.write(json.dumps({"dag_id": dag_id, "day": day.isoformat(), "log": str(log),
                                                 "conf": conf or {}}) + "\n")
                except OSError:
                    answer = {"ok": False}
                else:
                    answer = self._answer(proc)
                result = DagRunResult(dag_id=dag_id, ok=bool(answer.get("ok")),
                                      seconds=time.perf_counter() - started, log=log)
                with lock:
                    results.append(result)
                    on_done(result)
                if proc.poll() is not None:  # the worker died: it takes no more jobs
                    return
                if int(answer.get("rss_bytes") or 0) > self.recycle_bytes:
                    self._stop(proc)
                    self._procs[slot] = self._spawn()
                    self.recycled += 1

        threads = [threading.Thread(target=serve, args=(i,), daemon=True) for i in range(len(self._procs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while not pending.empty():  # every worker died: what is left did not run
            job = pending.get_nowait()
            if job is not None:
                results.append(DagRunResult(dag_id=job[0], ok=False, seconds=0.0, log=job[2]))
        return results

    def close(self) -> None:
        """Tell every worker to stop, and wait for it."""
        for proc in self._procs:
            self._stop(proc)

    def __enter__(self) -> DagWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_workers() -> int:
    """One worker per core."""
    return max(1, os.cpu_count() or 1)


def body_weights(data_dir: Path, day: dt.date) -> dict[str, int]:
    """How much work each body of D's edition is likely to be: its rows on its last reported day, else its feeds."""
    edition = default_registry().edition_on(day)
    weights = {b.code: len(edition.feeds_of(b.code)) for b in edition.bodies}
    status_root = data_dir / "status"
    reported = sorted((p.name for p in status_root.iterdir() if p.is_dir()), reverse=True) \
        if status_root.is_dir() else []
    for body in weights:
        for name in reported:
            try:
                status = read_status(data_dir, dt.date.fromisoformat(name), body)
            except (ValueError, OSError, KeyError, TypeError):
                continue
            if status is not None:
                weights[body] = 1_000 + sum(c.rows_in for c in status.categories)  # rows outweigh feed counts
                break
    return weights


def run_day_dags(day: dt.date, data_dir: Path, env: dict[str, str], *, package: bool = True,
                 workers: int | None = None, pool: DagWorkers | None = None,
                 say: Callable[[str], None] = print) -> tuple[list[DagRunResult], dict[str, BodyStatus | None]]:
    """Run every body's agency DAG for D on warm workers, then the package DAG; return the runs and the statuses.

    ``pool``: workers started earlier (they load Airflow and the pipeline's libraries while the
    metadata database migrates), lent for this day and still the lender's to close, so one pool can
    serve day after day; by default they are started here, one per core, and stopped when the day is done.
    """
    from osms.orchestration.package_dag import DAG_ID, PREVIOUS_WAIT_CONF, START_CHAIN_CONF, STATUS_WAIT_CONF

    edition = default_registry().edition_on(day)
    log_dir = data_dir / "airflow" / "logs" / f"run-{day.isoformat()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    weights = body_weights(data_dir, day)
    bodies = sorted(edition.bodies, key=lambda b: (-weights.get(b.code, 0), b.code))
    total = len(bodies) + (1 if package else 0)
    count = 0

    def done(r: DagRunResult) -> None:
        nonlocal count
        count += 1
        say(f"  [{count}/{total}] {r.dag_id:<22} {'done' if r.ok else 'FAILED'} in {r.seconds:,.0f} s"
            + ("" if r.ok else f" (log: {r.log})"))

    lent = pool is not None
    with contextlib.nullcontext(pool) if lent else DagWorkers(env, workers or default_workers()) as pool:
        pool.prepare(log_dir / "prepare.log")
        results = pool.run([(b.dag_id, day, log_dir / f"{b.dag_id}.log") for b in bodies], on_done=done)
        if package:
            # every body's run has ended: a body without a status failed; and no other process will deliver
            # D-1 while this one waits: if it is not delivered, the run says so at once; the daily job's first
            # run on a data root writes the chain's start, as the first scheduled run does
            results += pool.run([(DAG_ID, day, log_dir / f"{DAG_ID}.log")], on_done=done,
                                conf={STATUS_WAIT_CONF: 0, PREVIOUS_WAIT_CONF: 0, START_CHAIN_CONF: True})
    statuses = {b.code: read_status_or_none(data_dir, day, b.code) for b in edition.bodies}
    return results, statuses


def signing_env() -> dict[str, str]:
    """The development signing key for the package task: its file's path (0600), never the PEM in the environment
    of every process."""
    from osms.core.keys import KEY_FILE_ENV, ensure_dev_keypair

    private, _ = ensure_dev_keypair()
    return {KEY_FILE_ENV: str(private)}


# --------------------------------------------------------------------------- the worker process


def _worker(answer_fd: int) -> int:
    """A warm worker: read ``{"dag_id", "day", "log"}`` lines on stdin, run each DAG, answer one line on ``answer_fd``."""
    import traceback

    answers = os.fdopen(answer_fd, "w", buffering=1)
    # until the first DAG's log takes over, what the worker prints goes to a log of its own, never to the answers
    startup = Path(os.environ.get("AIRFLOW_HOME", ".")) / "logs" / "workers" / f"worker-{os.getpid()}.log"
    startup.parent.mkdir(parents=True, exist_ok=True)
    _output_to(startup)
    from airflow.utils.providers_configuration_loader import providers_configuration_loaded

    _warm_up()

    def bundle() -> Any:
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        manager = DagBundlesManager()
        manager.sync_bundles_to_db()
        found = next(b for b in manager.get_all_dag_bundles() if b.name == "dags-folder")
        found.initialize()
        return found

    @providers_configuration_loaded
    def prepare() -> bool:
        from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

        from osms.orchestration.pools import ensure_source_pools

        b = bundle()
        bag = BundleDagBag(dag_folder=b.path, bundle_path=b.path, bundle_name=b.name)
        sync_bag_to_db(bag, b.name, b.version)
        ensure_source_pools()  # the extracts' pools, as every shape's init creates them
        return not bag.import_errors

    @providers_configuration_loaded
    def run(dag_id: str, day: dt.date, conf: dict[str, Any]) -> bool:
        import pendulum
        from airflow.dag_processing.dagbag import BundleDagBag

        b = bundle()
        # the DAG's file parsed afresh for each run, as `airflow dags test -f` does
        bag = BundleDagBag(dag_folder=str(Path(b.path) / f"{dag_id}.py"), bundle_path=b.path, bundle_name=b.name)
        if dag_id not in bag.dags:
            raise RuntimeError(f"DAG {dag_id} did not load: {bag.import_errors}")
        dagrun = bag.dags[dag_id].test(logical_date=pendulum.parse(logical_date(day)), run_conf=conf or None)
        return str(dagrun.state) in ("success", "DagRunState.SUCCESS")

    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        _output_to(job["log"])
        try:
            ok = prepare() if job.get("prepare") else run(job["dag_id"], dt.date.fromisoformat(job["day"]),
                                                          job.get("conf") or {})
        except Exception:  # noqa: BLE001: the run failed; its log says why, the next DAG still runs
            traceback.print_exc()
            ok = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        from osms.orchestration.task_metrics import release_memory

        release_memory()
        answers.write(json.dumps({"dag_id": job.get("dag_id"), "ok": ok, "rss_bytes": _rss()}) + "\n")
    return 0


def _output_to(log: Path | str) -> None:
    """Send this process's stdout and stderr (the file descriptors, so child processes' too) to ``log``, afresh."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _warm_up() -> None:
    """Load now what every task needs, while the database migrates and the other DAGs parse, not in the first task."""
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import airflow.providers.openlineage.plugins.adapter  # noqa: F401 (the lineage listener's, once per worker)
    import osms.quality.runner

    osms.quality.runner.warm_up()
    try:  # dag.test()'s in-process Execution API: building its FastAPI app costs seconds, once per process
        from airflow.sdk.execution_time.supervisor import in_process_api_server

        in_process_api_server().app  # noqa: B018
    except Exception:  # noqa: BLE001: only a warm-up; the first task builds it otherwise
        pass


def _rss() -> int:
    """This process's resident size now, in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


if __name__ == "__main__":  # python -m osms.dev.local_run worker
    if len(sys.argv) != 3 or sys.argv[1] != "worker" or not sys.argv[2].isdigit():
        raise SystemExit("usage: python -m osms.dev.local_run worker ANSWER_FD")
    raise SystemExit(_worker(int(sys.argv[2])))
