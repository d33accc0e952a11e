"""Real Airflow components on one machine: API server, scheduler and DAG processor on 127.0.0.1.

What a backfill needs in Airflow 3: the scheduler runs the backfill's runs (its
LocalExecutor forks the tasks), the tasks talk to the API server's execution API,
and the DAG processor serializes the DAGs the other two read. Everything shares one
embedded SQLite database under a private ``AIRFLOW_HOME``.

    with LocalAirflow(home, extra_env=mocks.airflow_env() | {"OSMS_DATA_DIR": ...}) as af:
        af.start()                           # db migrate, then the three components
        af.wait_for_dag("agency_courts")     # serialized by the DAG processor
        af.api("PATCH", "/api/v2/dags/agency_courts", json={"is_paused": False})
        af.cli("backfill", "create", ...)
    # every process stopped, process groups and task processes included

Every server listens on 127.0.0.1 only: the API server is bound there; the log servers of
the scheduler, the triggerer and the Celery workers (which would bind every interface)
are not started, and the scheduler's health server is off or bound to 127.0.0.1. Task
logs are read by the API server from the shared local log folder.

The settings are those of a *shape* (``osms.dev.settings``: ``embedded`` by default, SQLite and
the LocalExecutor; ``distributed`` for ``make cluster``, PostgreSQL and Celery), read from
``config/*.env`` like every other launcher, plus this installation's site (home, port,
folders). The environment is hermetic: inherited ``AIRFLOW*`` variables are dropped (a
test runner's unit-test mode must not reach real components) and only the settings and
``extra_env`` apply. Users are those of Airflow's simple auth manager (``users``: name ->
role) or, in the distributed shape, FAB users made by ``osms.dev.deploy``; their passwords
are generated once into ``passwords_file`` (0600, by default
``AIRFLOW_HOME/simple_auth_manager_passwords.json``) and kept across restarts. The REST
API is reached with a JWT of one of them (``admin`` by default).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osms.dev.settings import Site, airflow_env

ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
COMPONENTS = ("api-server", "scheduler", "dag-processor")
# The triggerer runs deferred tasks (the package DAG's status sensors) and async callbacks.
ALL_COMPONENTS = (*COMPONENTS, "triggerer")
# Celery workers are named celery-worker-1, celery-worker-2, ...: each an `airflow celery worker`.
CELERY_WORKER = "celery-worker"
# Roles of Airflow's simple auth manager: viewer < user < op < admin.
DEFAULT_USERS = {"admin": "admin"}


class AirflowLocalError(RuntimeError):
    """A component did not start, answer or stop as expected; the message carries its log tail."""


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def airflow_executable() -> str:
    """The ``airflow`` script of the running interpreter's environment (else the one on ``PATH``)."""
    beside = Path(sys.executable).with_name("airflow")
    if beside.exists():
        return str(beside)
    import shutil

    return shutil.which("airflow") or str(beside)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Component:
    """One running component: its process (a group leader) and its log."""

    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class LocalAirflow:
    """Airflow's API server, scheduler, DAG processor (and triggerer, Celery workers) on 127.0.0.1.

    ``home`` becomes ``AIRFLOW_HOME`` (config, logs, the embedded database, component logs
    under ``home/logs/components``). ``use_job_schedule=False`` keeps the scheduler from
    creating scheduled runs (backfills, manual runs and cleared runs still run).
    ``executor`` and ``timezone`` override the shape's when given. ``site`` replaces the
    default site built from ``home``, ``port`` and the folders (``make cluster`` gives its
    servers' ports); ``secrets`` are the distributed shape's (JWT and API secrets are
    generated per instance unless given).
    """

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    dags_folder: Path = ROOT / "dags"
    plugins_folder: Path = ROOT / "plugins"
    executor: str | None = None
    parallelism: int | None = 2  # None: Airflow's default (Celery workers limit themselves)
    port: int = 0  # 0: a free port on 127.0.0.1
    use_job_schedule: bool = True
    timezone: str | None = None
    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    api_user: str = "admin"  # whose JWT api() uses
    shape: str = "embedded"
    site: Site | None = None
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    passwords_path: Path | None = None
    components: list[Component] = field(default_factory=list, init=False)
    _seen: list[Any] = field(default_factory=list, init=False, repr=False)  # psutil.Process of all we stopped
    _tokens: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(64), init=False, repr=False)
    _api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), init=False, repr=False)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        if self.site is not None:
            self.port = self.site.api_port
        if not self.port:
            self.port = free_port()
        if self.site is None:
            self.site = Site(airflow_home=self.home, data_dir=None, api_port=self.port,
                             dags_folder=self.dags_folder, plugins_folder=self.plugins_folder)

    # ------------------------------------------------------------------ configuration

    @property
    def url(self) -> str:
        """The API server's base URL."""
        return f"http://{HOST}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "components"

    @property
    def passwords_file(self) -> Path:
        return self.passwords_path or self.home / "simple_auth_manager_passwords.json"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every Airflow process of this installation (CLI calls included)."""
        assert self.site is not None
        knobs = {
            **({"AIRFLOW__CORE__PARALLELISM": str(self.parallelism)} if self.parallelism else {}),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in self.users.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(self.use_job_schedule),
            **({"AIRFLOW__CORE__EXECUTOR": self.executor} if self.executor else {}),
            **({"AIRFLOW__CORE__DEFAULT_TIMEZONE": self.timezone} if self.timezone else {}),
        }
        # the distributed shape reads its secrets from files ($OSMS_SECRETS_DIR); the embedded one gets its own
        in_files = self.site.secrets_dir is not None
        secrets = {} if in_files else {"AIRFLOW__API__SECRET_KEY": self._api_secret,
                                       "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret, **self.secrets}
        return airflow_env(self.shape, self.site, secrets=secrets, extra={**knobs, **self.extra_env}, hermetic=True)

    # ------------------------------------------------------------------ lifecycle

    def migrate(self, timeout: float = 180) -> None:
        """Create or upgrade the embedded database, and the source systems' pools (the extracts run in them)."""
        self.home.mkdir(parents=True, exist_ok=True)
        out = self.cli("db", "migrate", timeout=timeout, check=False)
        if out.returncode != 0:
            raise AirflowLocalError(f"airflow db migrate failed ({out.returncode}):\n{out.stdout[-3000:]}")
        # a task in a pool that does not exist is never scheduled: the pools come with the database
        out = subprocess.run([sys.executable, "-m", "osms.dev.cli", "deploy", "pools"], env=self.env, cwd=self.home,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise AirflowLocalError(f"osms deploy pools failed ({out.returncode}):\n{out.stdout[-3000:]}")

    def start(self, components: Sequence[str] = COMPONENTS, *, migrate: bool = True,
              timeout: float = 120) -> LocalAirflow:
        """Migrate, start the components and wait until they are healthy (see :meth:`wait_healthy`)."""
        unknown = {c for c in components if c not in ALL_COMPONENTS and not _is_worker(c)}
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {ALL_COMPONENTS}"
                             f" and {CELERY_WORKER}-<n>")
        if migrate:
            self.migrate()
        self._write_passwords()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in components:
                self.components.append(self._spawn(name))
            self.wait_healthy(components, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str) -> Component:
        args = [airflow_executable(), name]
        if name == "api-server":
            args += ["--host", HOST, "--port", str(self.port), "--workers", "1"]
        elif name in ("scheduler", "triggerer"):
            args += ["--skip-serve-logs"]  # task logs are read from the shared local folder
        elif _is_worker(name):
            # its own Celery node name, so that two workers on one host are two workers
            args = [airflow_executable(), "celery", "worker", "--skip-serve-logs", "--celery-hostname", f"{name}@%h"]
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(args, env=self.env, cwd=self.home, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return Component(name=name, proc=proc, log=log)

    def passwords(self) -> dict[str, str]:
        """The users' passwords (generated on the first start)."""
        try:
            return dict(json.loads(self.passwords_file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}

    def _write_passwords(self) -> None:
        """Give every user without a password one; existing passwords are kept (generated once)."""
        known = self.passwords()
        missing = [u for u in self.users if u not in known]
        if not missing:
            return
        from osms.core.files import write_bytes_atomic

        known.update({u: secrets.token_urlsafe(16) for u in missing})
        write_bytes_atomic(json.dumps(known, indent=2, sort_keys=True).encode(), self.passwords_file, mode=0o600)

    def stop(self, timeout: float = 30) -> list[str]:
        """Stop every component and everything it started; return what had to be killed.

        The scheduler goes first (its executor ends its workers), then the DAG processor,
        then the API server (tasks still finishing talk to it). Each component's process
        group gets SIGTERM, then SIGKILL after ``timeout``; task and parsing processes put
        themselves in groups of their own, so every descendant seen before the stop is
        killed too if it outlives its component.
        """
        import psutil

        # workers after the scheduler (no new tasks) and before the API server (their tasks talk to it)
        order = {"scheduler": 0, "triggerer": 1, "dag-processor": 2, "api-server": 4}
        killed: list[str] = []
        for comp in sorted(self.components, key=lambda c: order.get(c.name, 3 if _is_worker(c.name) else 9)):
            try:
                descendants = psutil.Process(comp.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                descendants = []
            try:
                self._seen.append(psutil.Process(comp.proc.pid))
            except psutil.NoSuchProcess:
                pass
            self._seen.extend(descendants)
            _signal_group(comp.proc.pid, signal.SIGTERM)
            try:
                comp.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed.append(comp.name)
                _signal_group(comp.proc.pid, signal.SIGKILL)
                comp.proc.wait(timeout=10)
            _, alive = psutil.wait_procs(descendants, timeout=5)
            for p in alive:
                killed.append(f"{comp.name} child {p.pid} {' '.join(_cmdline(p))[:80]}")
                try:
                    os.killpg(p.pid, signal.SIGKILL) if _is_group_leader(p.pid) else p.kill()
                except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                    pass
            _signal_group(comp.proc.pid, signal.SIGKILL)  # anything started in its group after the snapshot
            psutil.wait_procs(alive, timeout=5)
        self.components.clear()
        return killed

    def leftovers(self) -> list[str]:
        """Processes seen at stop (components and their descendants) that still run: none after a clean stop."""
        import psutil

        alive = []
        for p in self._seen:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(_cmdline(p))[:120]}")
            except psutil.NoSuchProcess:
                pass
        return alive

    def __enter__(self) -> LocalAirflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ health and diagnostics

    def check_alive(self) -> None:
        """Raise with the log tail of any component that has exited."""
        for comp in self.components:
            if comp.proc.poll() is not None:
                raise AirflowLocalError(f"airflow {comp.name} exited with {comp.proc.returncode}\n"
                                        + self.logs_tail())

    def task_processes(self, component: str | None = None) -> list[int]:
        """PIDs of the task processes running now (of one component when named).

        The LocalExecutor's workers are the scheduler's children, a Celery worker's pool
        processes are its children; each runs a task in a child of its own (the Task SDK
        supervisor forks it), so a task process is a grandchild or deeper of its component.
        """
        import psutil

        found = []
        for comp in self.components:
            if (component or comp.name) != comp.name or not (comp.name == "scheduler" or _is_worker(comp.name)):
                continue
            try:
                pool = psutil.Process(comp.proc.pid).children()
                found += [p.pid for w in pool for p in w.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and every process under it at once, as when its host dies; return the PIDs.

        The component is forgotten: :meth:`check_alive` no longer counts it, :meth:`stop` skips it.
        """
        import psutil

        comp = next(c for c in self.components if c.name == name)
        try:
            root = psutil.Process(comp.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        comp.proc.wait(timeout=10)
        self.components.remove(comp)
        return [p.pid for p in procs]

    def wait_tasks_finished(self, timeout: float = 60) -> None:
        """Wait until no task process runs (a run can be marked done while its last task process exits)."""
        self.poll(lambda: not self.task_processes(), timeout=timeout, interval=0.2,
                  what="the executor's task processes to exit")

    def listening(self) -> list[tuple[str, int, str, int]]:
        """Every listening TCP socket of the components and their descendants: (component, pid, ip, port)."""
        import psutil

        out = []
        for comp in self.components:
            try:
                root = psutil.Process(comp.proc.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                try:
                    conns = p.net_connections(kind="inet")
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                out += [(comp.name, p.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
        return out

    def logs_tail(self, lines: int = 40, names: Iterable[str] | None = None) -> str:
        """The tails of the component logs, for failure messages."""
        out = []
        for comp in self.components:
            if names is None or comp.name in names:
                out.append(f"----- {comp.name} ({comp.log}) -----\n{tail(comp.log, lines)}")
        return "\n".join(out)

    def health(self) -> dict[str, Any] | None:
        """``/api/v2/monitor/health`` (no auth needed), or None while the API server does not answer."""
        import httpx

        try:
            r = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def wait_healthy(self, components: Sequence[str] = COMPONENTS, timeout: float = 120) -> dict[str, Any]:
        """Poll until the database and the given components are healthy.

        The API server reports the database, scheduler, DAG processor and triggerer; Celery
        workers answer a ping through the broker (:meth:`celery_workers`).
        """
        keys = {"api-server": "metadatabase", "scheduler": "scheduler", "dag-processor": "dag_processor",
                "triggerer": "triggerer"}
        wanted = [keys[c] for c in components if c in keys]
        workers = {c for c in components if _is_worker(c)}
        last: dict[str, Any] | None = None

        def ready() -> bool:
            nonlocal last
            self.check_alive()
            last = self.health()
            if not (bool(last) and all((last.get(k) or {}).get("status") == "healthy" for k in wanted)):
                return False
            return not workers or workers <= set(self.celery_workers())

        try:
            self.poll(ready, timeout=timeout, what=f"{', '.join(components)} to be healthy")
        except AirflowLocalError as exc:
            raise AirflowLocalError(f"{exc}\nlast health answer: {last}") from None
        assert last is not None
        return last

    def celery_workers(self, timeout: float = 2.0) -> list[str]:
        """The Celery workers that answer a ping through the broker now, by component name."""
        from celery import Celery

        from osms.dev.settings import value

        app = Celery(broker=value(self.env, "AIRFLOW__CELERY__BROKER_URL"))
        try:
            answers = app.control.ping(timeout=timeout) or []
        except Exception:  # noqa: BLE001: a broker not up yet is "no worker answers"
            return []
        finally:
            app.close()
        return sorted(node.split("@", 1)[0] for answer in answers for node in answer)

    def poll(self, condition: Callable[[], Any], *, timeout: float, interval: float = 0.5, what: str = "") -> Any:
        """Call ``condition`` until it returns something truthy; fail with the log tails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AirflowLocalError(f"timed out after {timeout:g} s waiting for {what}\n" + self.logs_tail())
            time.sleep(interval)

    # ------------------------------------------------------------------ talking to it

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` against this installation; output (stdout+stderr) in ``.stdout``."""
        out = subprocess.run([airflow_executable(), *args], env=self.env, cwd=self.home, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                             start_new_session=True)
        if check and out.returncode != 0:
            raise AirflowLocalError(f"`airflow {' '.join(args)}` failed ({out.returncode}):\n{out.stdout[-3000:]}")
        return out

    def token(self, user: str | None = None) -> str:
        """A JWT for the REST API (``api_user`` unless another user is named)."""
        user = user or self.api_user
        if user not in self._tokens:
            import httpx

            password = self.passwords()[user]
            r = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=10)
            if r.status_code not in (200, 201):
                raise AirflowLocalError(f"POST /auth/token for {user} answered {r.status_code}: {r.text[:500]}")
            self._tokens[user] = r.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, *, ok: Sequence[int] = (200,), retry_for: float = 120,
            **kwargs: Any) -> Any:
        """Call the REST API; return the JSON answer, or None for a status outside ``ok`` that is 404.

        An API server on SQLite answers one writer at a time: while the scheduler and the DAG processor write
        (at start, every DAG at once, slower still on a loaded machine) an answer can take long. Reads and
        idempotent writes are asked again after a timeout until ``retry_for`` seconds have passed; a POST is
        asked once.
        """
        import httpx

        idempotent = method.upper() in ("GET", "PUT", "PATCH", "DELETE")
        give_up = time.monotonic() + retry_for
        while True:
            try:
                r = httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"},
                                  timeout=60, **kwargs)
                break
            except httpx.TimeoutException:
                if not idempotent or time.monotonic() >= give_up:
                    raise
        if r.status_code in ok:
            return r.json() if r.content else None
        if r.status_code == 404:
            return None
        raise AirflowLocalError(f"{method} {path} answered {r.status_code}: {r.text[:1000]}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the DAG processor has serialized ``dag_id`` and the API server knows it."""
        def known() -> Any:
            self.check_alive()
            return self.api("GET", f"/api/v2/dags/{dag_id}")

        return self.poll(known, timeout=timeout, what=f"DAG {dag_id} to be parsed")

    def dag_runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """The DAG's runs (``run_type=backfill`` and other filters of the REST API as keywords)."""
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                          params={"limit": 100, "order_by": "logical_date", **params})
        return list((answer or {}).get("dag_runs", []))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list((answer or {}).get("task_instances", []))


def _is_worker(name: str) -> bool:
    return name.startswith(f"{CELERY_WORKER}-")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _cmdline(p: Any) -> list[str]:
    try:
        return list(p.cmdline())
    except Exception:  # gone or not readable: the PID says enough
        return []
