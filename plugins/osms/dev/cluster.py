"""``make cluster``: the distributed shape natively, every server on 127.0.0.1, configured like docker-compose.yaml.

The services of the compose file, as processes of one machine (:data:`SERVICES` maps
them; a test keeps the two in step):

- PostgreSQL 15, its own cluster under ``<data>/cluster/postgres`` (run as the user
  ``postgres`` when started as root, since PostgreSQL refuses root), and Redis 7 with a
  password, both on 127.0.0.1 and a free port;
- the mock source systems and receiver (as in ``make airflow``), their connections
  written to a file that the init imports, as the compose file's init does;
- the init (``osms deploy init``): migrate, FAB roles and users, the signing key
  variable, the connections;
- Airflow's API server, scheduler, DAG processor, triggerer and Celery workers, with no
  log server (task logs are read from the shared local folder) and the scheduler's
  health server on 127.0.0.1;
- Debian's Prometheus (``osms.dev.prometheus``) on 127.0.0.1, scraping the pipeline's
  metrics from the API server (``/osms-metrics/metrics``, with the scrape token in
  ``<data>/cluster/metrics_token``) and evaluating the committed alert rules
  (``config/prometheus/alerts.yml``); its data under ``<data>/cluster/prometheus``.

Settings come from ``config/airflow.env`` and ``config/distributed.env``, the files the
compose file reads, with this machine's site (``osms.dev.settings``); the secrets are files in
``<data>/cluster/secrets/`` (generated once, 0600, the names of the compose file's secrets; the
users' passwords are there), which the settings read through Airflow's ``*_CMD`` settings.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osms.dev import deploy

from osms.dev import settings
from osms.dev.airflow_local import ALL_COMPONENTS, CELERY_WORKER, HOST, LocalAirflow, free_port, tail
from osms.dev.prometheus import PrometheusServer, new_token

# docker-compose.yaml's services and what plays each here ("mocks" and the servers are not Airflow's).
SERVICES = {
    "postgres": "postgres",
    "redis": "redis",
    "mocks": "mocks",
    "airflow-init": "init",
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": CELERY_WORKER,
}
DEFAULT_PORT = 8080
PROMETHEUS_PORT = 9090  # Prometheus's own default port
WORKERS = 2  # two cores: two workers, each with the shape's task slots
PG_BINDIR = Path(os.environ.get("OSMS_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
DATABASE = "airflow"
DB_USER = "airflow"


class ClusterError(RuntimeError):
    """A server did not start or answer; the message says which and where its log is."""


def _missing(what: str, path: str) -> ClusterError:
    return ClusterError(f"{what} is not installed ({path}): run `make servers` (Debian's postgresql-15, redis-server)")


def _service_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when this process is root (it refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("started as root, PostgreSQL needs an account of its own: there is no user 'postgres'"
                           " (Debian's postgresql package makes it)") from None


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Every folder above ``path`` must let ``account`` through, or PostgreSQL cannot open its data."""
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == account.pw_uid or st.st_mode & 0o001 or (st.st_gid == account.pw_gid and st.st_mode & 0o010):
            continue
        raise ClusterError(f"PostgreSQL runs as {account.pw_name} and cannot pass through {parent}"
                           f" (mode {oct(st.st_mode & 0o777)}): choose a data dir it can reach"
                           f" or `chmod o+x {parent}`")


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own in ``data``, on 127.0.0.1:``port``; the user ``airflow`` owns database ``airflow``."""

    data: Path
    port: int
    password: str
    log: Path
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def _run_as(self) -> dict[str, Any]:
        account = _service_user()
        return {} if account is None else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def initdb(self) -> None:
        """Create the cluster on the first start (scram-sha-256 passwords, nothing trusted)."""
        if (self.data / "PG_VERSION").exists():
            return
        initdb = PG_BINDIR / "initdb"
        if not initdb.exists():
            raise _missing("PostgreSQL 15", str(initdb))
        account = _service_user()
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        pwfile = self.data.parent / ".postgres-password"
        from osms.core.files import write_bytes_atomic

        write_bytes_atomic(self.password.encode(), pwfile, mode=0o600)
        try:
            if account is not None:
                _check_reachable(self.data, account)
                for p in (self.data, pwfile):
                    os.chown(p, account.pw_uid, account.pw_gid)
            out = subprocess.run([str(initdb), "-D", str(self.data), "-U", DB_USER, "--auth=scram-sha-256",
                                  f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 **self._run_as())
        finally:
            pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise ClusterError(f"initdb failed ({out.returncode}):\n{out.stdout[-2000:]}")

    def start(self, timeout: float = 60) -> None:
        """Start the server (listening on 127.0.0.1 only, no Unix socket) and create the database."""
        self.initdb()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [str(PG_BINDIR / "postgres"), "-D", str(self.data), "-c", f"listen_addresses={HOST}",
                 "-c", f"port={self.port}", "-c", "unix_socket_directories="],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                **self._run_as())
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._ensure_database()
                return
            except Exception as exc:  # noqa: BLE001: not up yet, or a wrong password, which the log tells
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise ClusterError(f"PostgreSQL did not start ({exc}); log {self.log}:\n{tail(self.log, 20)}"
                                       ) from None
                time.sleep(0.3)

    def _ensure_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host=HOST, port=self.port, user=DB_USER, password=self.password, dbname="postgres",
                                connect_timeout=3)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}" OWNER "{DB_USER}"')
        finally:
            conn.close()

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: sessions end, the data is consistent), SIGKILL after ``timeout``."""
        _stop_process(self.proc, signal.SIGINT, timeout)


@dataclass
class RedisServer:
    """Redis on 127.0.0.1:``port`` with a password, its files in ``directory``."""

    directory: Path
    port: int
    password: str
    log: Path
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def start(self, timeout: float = 30) -> None:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise _missing("Redis", server)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self.directory / "redis.conf"
        from osms.core.files import write_bytes_atomic

        # the password lives in a 0600 file, not on a command line every user can read
        write_bytes_atomic("\n".join([
            f"bind {HOST}", f"port {self.port}", "protected-mode yes", f"requirepass {self.password}",
            "daemonize no", f"dir {self.directory}", "appendonly yes", f"logfile {self.log}", "",
        ]).encode(), conf, mode=0o600)
        self.proc = subprocess.Popen([server, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        client = redis.Redis(host=HOST, port=self.port, password=self.password, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise ClusterError(f"Redis did not start ({exc}); log {self.log}:\n{tail(self.log, 20)}") from None
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        _stop_process(self.proc, signal.SIGTERM, timeout)


def _stop_process(proc: subprocess.Popen | None, sig: signal.Signals, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class _FabAirflow(LocalAirflow):
    """LocalAirflow whose users are FAB's, made by the init from the secrets folder's passwords."""

    def passwords(self) -> dict[str, str]:
        assert self.site is not None and self.site.secrets_dir is not None
        return deploy.read_passwords(self.site.secrets_dir)

    def _write_passwords(self) -> None:
        """Nothing to write: ``osms deploy init`` gives the users their passwords."""


@dataclass
class Cluster:
    """The distributed shape on this machine; ``with Cluster(data).start() as c:`` ... everything stopped after."""

    data_dir: Path
    port: int = DEFAULT_PORT
    workers: int = WORKERS
    worker_concurrency: int = settings.Site.worker_concurrency
    use_job_schedule: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    mock_config: Any = None  # mocks.config.MockConfig; default: the default scale under <data>/mocks
    population: Any = None  # a loaded mock population, to skip loading it again
    say: Callable[[str], None] = print
    prometheus_port: int = 0  # 0: a free port
    lineage_url: str | None = None  # an OpenLineage server (HTTP transport); None: no lineage events
    scrape_interval: str = "15s"  # Prometheus's scrape and rule evaluation interval
    postgres: PostgresServer | None = field(default=None, init=False)
    redis: RedisServer | None = field(default=None, init=False)
    prometheus: PrometheusServer | None = field(default=None, init=False)
    mocks: Any = field(default=None, init=False)
    airflow: LocalAirflow | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "cluster"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def metrics_token_file(self) -> Path:
        """The scrape token of the metrics route: the API server and Prometheus read it (0600, generated once)."""
        return self.state_dir / "metrics_token"

    @property
    def worker_names(self) -> list[str]:
        return [f"{CELERY_WORKER}-{i}" for i in range(1, self.workers + 1)]

    @property
    def url(self) -> str:
        assert self.airflow is not None
        return self.airflow.url

    def slots(self) -> int:
        """Task slots of all workers: the scheduler queues no more than they can run (one machine, one queue)."""
        return self.workers * self.worker_concurrency

    def start(self, timeout: float = 240) -> Cluster:
        """Servers, mocks, init, Airflow's components and workers; wait until healthy; unpause every DAG."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        from mocks.config import MockConfig
        from mocks.service import start_mocks
        from osms.core.keys import ensure_dev_keypair
        from osms.dev.ui_stack import USERS, dag_ids

        # made here, as the umask says, before the secrets (whose writer makes the folders it creates 0700):
        # PostgreSQL, run as its own account, passes through them to data/cluster/postgres
        self.state_dir.mkdir(parents=True, exist_ok=True)
        secrets = deploy.write_secrets(self.secrets_dir)
        from osms.core import layout

        layout.lineage(self.data_dir).mkdir(parents=True, exist_ok=True)  # the lineage file transport writes there
        ports = {"postgres": free_port(), "redis": free_port(), "health": free_port()}
        self.say(f"starting PostgreSQL and Redis on {HOST} (state in {self.state_dir}) ...")
        self.postgres = PostgresServer(self.state_dir / "postgres", ports["postgres"], secrets["osms_postgres_password"],
                                       self.log_dir / "postgres.log")
        self.postgres.start()
        self.redis = RedisServer(self.state_dir / "redis", ports["redis"], secrets["osms_redis_password"],
                                 self.log_dir / "redis.log")
        self.redis.start()

        self.say("starting the mock source systems and State Corporation ...")
        config = self.mock_config or MockConfig(data_dir=self.data_dir / "mocks")
        self.mocks = start_mocks(config, population=self.population, progress=True)
        connections = deploy.write_connections(config.state_dir / deploy.CONNECTIONS_FILE,
                                               deploy.mock_connections(self.mocks, HOST))
        self.say(f"  sources {self.mocks.sources_url}, receiver {self.mocks.state_corp_url}")

        site = settings.Site(airflow_home=self.state_dir / "airflow", data_dir=self.data_dir, api_port=self.port,
                             postgres_port=ports["postgres"], redis_port=ports["redis"],
                             scheduler_health_port=ports["health"], secrets_dir=self.secrets_dir,
                             worker_concurrency=self.worker_concurrency)
        from osms.ui.metrics import TOKEN_FILE_ENV

        new_token(self.metrics_token_file)
        af = _FabAirflow(
            site.airflow_home, shape="distributed", site=site,
            # a demo of the distributed shape on one machine: it signs with make setup's development key, which
            # a deployment refuses unless it says it is a demo (docker-compose.yaml gets a key of its own)
            extra_env={"OSMS_SIGNING_PUBLIC_KEY": str(self.mocks.public_key_path), "OSMS_DEMO": "true",
                       TOKEN_FILE_ENV: str(self.metrics_token_file),
                       **(settings.lineage_http_transport(self.lineage_url) if self.lineage_url else {}),
                       **self.extra_env},
            use_job_schedule=self.use_job_schedule, parallelism=self.slots(), users=dict(USERS), api_user="engineer",
        )
        self.airflow = af

        self.say("init: migrate, roles and users, signing key, connections ...")
        private_key, _ = ensure_dev_keypair()
        af.log_dir.mkdir(parents=True, exist_ok=True)
        init_log = af.log_dir / "init.log"
        with init_log.open("wb") as fh:
            out = subprocess.run([sys.executable, "-m", "osms.dev.cli", "deploy", "init", "--signing-key", str(private_key),
                                  "--connections", str(connections)], env=af.env,
                                 cwd=af.home, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
        if out.returncode != 0:
            raise ClusterError(f"the init failed ({out.returncode}); log {init_log}:\n{tail(init_log, 40)}")

        components = [*ALL_COMPONENTS, *self.worker_names]
        self.say(f"starting Airflow ({', '.join(ALL_COMPONENTS)}) and {self.workers} Celery workers ...")
        af.start(components, migrate=False, timeout=timeout)
        for dag_id in dag_ids():
            af.wait_for_dag(dag_id, timeout=timeout)
            af.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})  # an operator's backfill needs it

        from osms.ui.metrics import METRICS_PATH

        self.say("starting Prometheus (scraping the pipeline's metrics, with the alert rules of config/prometheus) ...")
        self.prometheus = PrometheusServer(self.state_dir / "prometheus", self.prometheus_port or free_port(),
                                           f"{HOST}:{self.port}", self.metrics_token_file, metrics_path=METRICS_PATH,
                                           scrape_interval=self.scrape_interval,
                                           evaluation_interval=self.scrape_interval)
        self.prometheus.start()

    def stop(self) -> list[str]:
        """Stop Prometheus, Airflow (scheduler first, API server last), the mocks, Redis, PostgreSQL; return what
        was killed."""
        killed: list[str] = []
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.airflow is not None:
            killed = self.airflow.stop()
        if self.mocks is not None:
            self.mocks.stop()
            self.mocks = None
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()
        return killed

    def listening(self) -> list[tuple[str, int, str, int]]:
        """Every listening TCP socket of the cluster: (what, pid, ip, port); the mocks are this process's."""
        import psutil

        out = list(self.airflow.listening()) if self.airflow else []
        for name, server in (("postgres", self.postgres), ("redis", self.redis), ("prometheus", self.prometheus)):
            if server is None or server.proc is None:
                continue
            try:
                procs = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                out += [(name, p.pid, c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                        if c.status == psutil.CONN_LISTEN]
        me = psutil.Process()
        out += [("mocks", me.pid, c.laddr.ip, c.laddr.port) for c in me.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN]
        return out

    def check_alive(self) -> None:
        """Raise with the log tail of any server or component that has exited."""
        for name, server in (("PostgreSQL", self.postgres), ("Redis", self.redis), ("Prometheus", self.prometheus)):
            if server is not None and server.proc is not None and server.proc.poll() is not None:
                raise ClusterError(f"{name} exited with {server.proc.returncode}; log {server.log}:\n"
                                   f"{tail(server.log, 20)}")
        if self.airflow is not None:
            self.airflow.check_alive()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(data_dir: Path, *, port: int = DEFAULT_PORT, workers: int = WORKERS,
          prometheus_port: int = PROMETHEUS_PORT, lineage_url: str | None = None,
          say: Callable[[str], None] = print) -> None:
    """``make cluster``: start, print where to go and where the passwords are, run until Ctrl-C."""
    from osms.dev.stopping import StopSignals
    from osms.ui.app import URL_ROUTE

    # Ctrl-C while starting: the start completes (or fails), then everything stops
    with StopSignals() as stop, Cluster(data_dir, port=port, workers=workers, prometheus_port=prometheus_port,
                                        lineage_url=lineage_url, say=say) as cluster:
        cluster.start()
        af = cluster.airflow
        assert af is not None
        say("")
        say(f"Airflow (CeleryExecutor, PostgreSQL, Redis) is up: {cluster.url}")
        say(f"  Data quality: {cluster.url}/plugin/{URL_ROUTE}")
        say("  users: " + ", ".join(f"{u} (role {u}, like FAB's {r})" for u, r in deploy.PEOPLE.items()))
        say(f"  passwords: {cluster.secrets_dir}/osms_<user>_password   (generated once, keep them private)")
        say(f"  workers: {', '.join(cluster.worker_names)}; component logs: {af.log_dir}")
        assert cluster.prometheus is not None
        say(f"  Prometheus: {cluster.prometheus.url} (alerts: {cluster.prometheus.url}/alerts); it scrapes"
            f" {cluster.url}/osms-metrics/metrics with the token in {cluster.metrics_token_file}")
        say("Press Ctrl-C to stop.")
        while not stop.wait(5):
            cluster.check_alive()
        say("stopping ...")
