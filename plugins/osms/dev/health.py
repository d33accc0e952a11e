"""Health checks of docker-compose.yaml's services: cheap enough to run every few seconds on a small host.

Airflow's own checks start its CLI (``airflow jobs check``, ``celery --app ... inspect ping``): seconds of
CPU each, and over 30 s on a loaded two-core host, where they time out and mark healthy services
unhealthy. These import the standard library, and Celery alone for the worker:

    python -m osms.dev.health http http://localhost:8080/api/v2/version
    python -m osms.dev.health celery-worker        # this container's worker answers a ping through the broker
    python -m osms.dev.health job TriggererJob     # this container's job heartbeats (what `airflow jobs check` reads)

Exit 0 when healthy; 1 with one line on stderr otherwise.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path


def http(url: str, timeout: float = 5) -> None:
    """The URL answers 2xx (urllib raises on anything else)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310: a loopback URL of the compose file
        if not 200 <= answer.status < 300:
            raise RuntimeError(f"{url} answered {answer.status}")


def celery_worker(timeout: float = 10) -> None:
    """This host's Celery worker (``celery@<hostname>``) answers a ping through the broker."""
    from celery import Celery

    secrets = Path(os.environ.get("OSMS_SECRETS_DIR", "/run/secrets"))
    password = (secrets / "osms_redis_password").read_text(encoding="utf-8").strip()
    host, port = os.environ.get("OSMS_REDIS_HOST", "redis"), os.environ.get("OSMS_REDIS_PORT", "6379")
    app = Celery(broker=f"redis://:{password}@{host}:{port}/0")
    try:
        me = f"celery@{socket.gethostname()}"
        if not app.control.ping(destination=[me], timeout=timeout):
            raise RuntimeError(f"{me} did not answer a ping")
    finally:
        app.close()


def job(job_type: str, *, within: float = 120) -> None:
    """This host's running Airflow job of ``job_type`` heartbeat within ``within`` seconds (the metadata database)."""
    import psycopg2

    secrets = Path(os.environ.get("OSMS_SECRETS_DIR", "/run/secrets"))
    conn = psycopg2.connect(host=os.environ.get("OSMS_POSTGRES_HOST", "postgres"),
                            port=int(os.environ.get("OSMS_POSTGRES_PORT", "5432")), user="airflow", dbname="airflow",
                            password=(secrets / "osms_postgres_password").read_text(encoding="utf-8").strip(),
                            connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM now() - max(latest_heartbeat)) FROM job"
                        " WHERE job_type = %s AND hostname = %s AND state = 'running'", (job_type, socket.getfqdn()))
            (age,) = cur.fetchone()
    finally:
        conn.close()
    if age is None:
        raise RuntimeError(f"no running {job_type} of {socket.getfqdn()}")
    if age > within:
        raise RuntimeError(f"{job_type}'s last heartbeat was {age:.0f} s ago")


def main(argv: list[str]) -> int:
    """``http URL`` or ``celery-worker``; 0 when healthy."""
    try:
        if argv[:1] == ["http"] and len(argv) >= 2:
            for url in argv[1:]:
                http(url)
        elif argv == ["celery-worker"]:
            celery_worker()
        elif argv[:1] == ["job"] and len(argv) == 2:
            job(argv[1])
        else:
            print("usage: python -m osms.dev.health http URL... | celery-worker | job JOB_TYPE", file=sys.stderr)
            return 2
    except Exception as exc:  # noqa: BLE001: a health check reports any failure as unhealthy
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
