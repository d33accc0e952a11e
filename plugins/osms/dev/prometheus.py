"""Debian's Prometheus on 127.0.0.1, scraping the pipeline's metrics, with the alert rules of ``config/prometheus/``.

What ``make cluster`` starts beside Airflow (and what the tests start against a metrics app
of their own): one ``prometheus`` process whose configuration is written here, scraping
the Airflow API server's ``/osms-metrics/metrics`` with the scrape token from a file (0600;
the token is never on a command line), its data under ``<state>/data``. The rules are the
committed ``config/prometheus/alerts.yml``, loaded as they are.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osms.dev.settings import HOST, config_dir

PROMETHEUS = Path(os.environ.get("OSMS_PROMETHEUS", "/usr/bin/prometheus"))
RULES_FILE = "alerts.yml"
JOB = "osms"  # the job name the rules' OsmsMetricsDown names


class PrometheusError(RuntimeError):
    """Prometheus did not start or answer; the message says where its log is."""


def rules_file() -> Path:
    """The committed alert rules."""
    return config_dir() / "prometheus" / RULES_FILE


def new_token(path: Path) -> str:
    """The scrape token in ``path`` (0600): read when it exists, else generated once and written."""
    from osms.core.files import write_bytes_atomic

    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    write_bytes_atomic(token.encode(), path, mode=0o600)
    return token


def config_text(*, target: str, metrics_path: str, token_file: Path, rules: Path, scrape_interval: str = "15s",
                evaluation_interval: str = "15s") -> str:
    """Prometheus's configuration: one job scraping the OSMS metrics with the scrape token, and the rules."""
    # JSON is YAML: no YAML writer needed, and every value is quoted as it must be
    return json.dumps({
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                   "scrape_timeout": "10s" if scrape_interval not in ("1s", "2s", "5s") else scrape_interval},
        "rule_files": [str(rules)],
        "scrape_configs": [{
            "job_name": JOB,
            "metrics_path": metrics_path,
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            "static_configs": [{"targets": [target]}],
        }],
    }, indent=2) + "\n"


@dataclass
class PrometheusServer:
    """Prometheus on 127.0.0.1:``port``, its configuration and data in ``directory``."""

    directory: Path
    port: int
    target: str  # host:port of the Airflow API server
    token_file: Path
    metrics_path: str = "/osms-metrics/metrics"
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    rules: Path = field(default_factory=rules_file)
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self, timeout: float = 60) -> PrometheusServer:
        """Write the configuration, start Prometheus, wait until it is ready."""
        from osms.core.files import write_bytes_atomic

        binary = shutil.which(str(PROMETHEUS)) or str(PROMETHEUS)
        if not Path(binary).exists():
            raise PrometheusError(f"Prometheus is not installed ({binary}): run `make servers` (Debian's prometheus)")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self.directory / "prometheus.yml"
        write_bytes_atomic(config_text(target=self.target, metrics_path=self.metrics_path, token_file=self.token_file,
                                       rules=self.rules, scrape_interval=self.scrape_interval,
                                       evaluation_interval=self.evaluation_interval).encode(), config, mode=0o600)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--web.listen-address={HOST}:{self.port}", "--storage.tsdb.retention.time=31d"],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise PrometheusError(f"Prometheus did not start; log {self.log}:\n{_tail(self.log)}")
            time.sleep(0.3)

    def api(self, path: str, **params: str) -> Any:
        """GET Prometheus's HTTP API; the ``data`` of its answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return list(self.api("query", query=expr)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now."""
        return list(self.api("alerts")["alerts"])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (Prometheus closes its database cleanly), SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
