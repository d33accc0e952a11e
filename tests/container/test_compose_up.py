"""``docker-compose up`` builds, starts and delivers, under a real Docker engine on this machine (make compose-test).

What a new engineer on a server would do, proven end to end:

1. the engine: the one that runs, else Debian's ``dockerd`` started here and stopped after;
2. the images: where no registry is reached (here), stand-ins of the public bases from Debian's
   packages (``docker/standin/build.sh``); the project's image from the Dockerfile as users build it,
   offline from the host's wheelhouse, the base passed as ``BASE_IMAGE``; it holds no test tool and
   no secret (its files scanned, its history read);
3. ``make compose-env`` into a folder of the test's own (``.env`` and ``secrets/``), ``docker-compose
   up`` with two workers, every service healthy, every published port on 127.0.0.1, no secret in any
   service's environment and none at all in the demo mocks;
4. as the ``operator`` user through the REST API (the call behind the UI's backfill dialog), two
   consecutive days through the eight agency DAGs and the package DAG against the ``mocks`` service;
   one worker container is killed (``docker kill``) in the middle of a task, whose retry finishes on
   the other worker;
5. both days' packages are byte for byte those ``osms run`` builds for the same days with the same
   key, and ``osms package verify`` accepts them;
6. ``docker-compose down -v`` leaves no container, volume or network of the project behind.

A compose file of the test's own adds only test settings to the scheduler: no scheduled runs
(the operator's backfills are the only runs); a running task without heartbeat given up after 30 s
instead of 5 minutes, so that the dead worker's task is retried soon; and no more tasks queued than
the two workers run (parallelism 4, as the native cluster's test), so that a task queued behind the
others is never taken for one stuck in the queue (3 minutes).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from osms.core.dates import ALMATY
from osms.dev import compose
from osms.dev.airflow_local import free_port
from tests.support.reference import PACKAGE_FILES, OsmsRuns, differing_files

pytestmark = pytest.mark.container

DAYS = [dt.date(2025, 6, 1), dt.date(2025, 6, 2)]
TAG = "osms-airflow:compose-test"
TEST_TOOLS = ("pytest", "hypothesis", "playwright")
RUNS_TIMEOUT = 900  # both days' runs, the killed task's retry included (a ceiling against a hang)
OVERRIDE = """\
# compose-test only: the operator's backfills are the only runs, and a dead worker's task is given up in seconds
services:
  airflow-scheduler:
    environment:
      AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE: "False"
      AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT: "30"
      AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT: "180"
      AIRFLOW__CORE__PARALLELISM: "4"
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[compose.DockerEngine]:
    with compose.DockerEngine(log=tmp_path_factory.mktemp("dockerd") / "dockerd.log") as engine:
        yield engine


@pytest.fixture(scope="module")
def image(engine: compose.DockerEngine) -> str:
    """The project's image, built as `make image` builds it, on the stand-in base."""
    compose.build_standins()
    compose.build_wheels()
    started = time.monotonic()
    size = compose.build_image(TAG, base_image=compose.STANDIN_BASE)
    print(f"\nimage {TAG}: {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return TAG


def test_the_image_holds_the_runtime_and_nothing_else(image: str) -> None:
    listed = compose.docker("run", "--rm", image, "pip", "list", "--format=freeze").stdout.lower()
    assert "apache-airflow==3.3.2" in listed and "great_expectations==" in listed.replace("-", "_")
    present = [t for t in TEST_TOOLS if f"\n{t}==" in f"\n{listed}"]
    assert not present, f"test tools in the image: {present}"
    assert compose.docker("run", "--rm", image, "pip", "check").returncode == 0
    whoami = compose.docker("run", "--rm", image, "id", "-u").stdout.strip()
    assert whoami == "50000", f"the image runs as uid {whoami}, not its airflow user"
    assert compose.image_files_with_secrets(image) == [], "a file of the image holds a key, password or token"
    history = compose.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    for word in ("PASSWORD", "SECRET", "TOKEN", "PIP_INDEX_URL", "PIP_CERT", "ca-certificates.crt", "/opt/wheels"):
        assert word not in history, f"the image's history names {word}"


def _backfill(stack: compose.ComposeStack, dag_id: str, run_time: dt.time) -> None:
    """The UI's backfill dialog: From and To as run moments in Almaty, max active runs 1, as the operator."""
    moments = [pendulum.datetime(d.year, d.month, d.day, run_time.hour, run_time.minute, tz=ALMATY) for d in DAYS]
    stack.api("POST", "/api/v2/backfills", user="operator", json={
        "dag_id": dag_id, "from_date": moments[0].isoformat(), "to_date": moments[-1].isoformat(),
        "max_active_runs": 1, "reprocess_behavior": "none", "run_backwards": False})


def _task_instances(stack: compose.ComposeStack) -> list[dict]:
    found: list[dict] = []
    while True:
        answer = stack.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances",
                           params={"limit": 100, "offset": len(found), "order_by": "id"})
        page = list(answer["task_instances"])
        found += page
        if not page or len(found) >= int(answer["total_entries"]):
            return found


def _poll(condition, *, timeout: float, interval: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _summary(stack: compose.ComposeStack) -> str:
    lines = [f"{t['dag_id']} {t['dag_run_id']} {t['task_id']}: {t['state']} (try {t['try_number']}, {t['hostname']})"
             for t in _task_instances(stack) if t["state"] != "success"]
    return "\n".join(lines) + "\n" + stack.logs(["airflow-scheduler", "airflow-worker"], lines=20)


def _reference_env(stack: compose.ComposeStack, key_dir: Path) -> dict[str, str]:
    """osms run signs with the deployment's key (an Ed25519 signature depends on the key only)."""
    from osms.core.keys import PRIVATE_NAME, PUBLIC_NAME
    from osms.dev.deploy import SIGNING_KEY_FILE, SIGNING_PUBLIC_KEY_FILE

    key_dir.mkdir(mode=0o700)
    (key_dir / PRIVATE_NAME).write_bytes((stack.secrets_dir / SIGNING_KEY_FILE).read_bytes())
    (key_dir / PUBLIC_NAME).write_bytes((stack.secrets_dir / SIGNING_PUBLIC_KEY_FILE).read_bytes())
    (key_dir / PRIVATE_NAME).chmod(0o600)
    return {"OSMS_KEY_DIR": str(key_dir)}


def test_compose_up_delivers_two_days_as_osms_run_with_a_worker_killed(image: str, tmp_path: Path) -> None:
    from osms.core.registry import default_registry
    from osms.dev.settings import read_secrets_dir
    from osms.orchestration.package_dag import DAG_ID as PACKAGE_DAG

    agency_dags = sorted({b.dag_id for d in DAYS for b in default_registry().edition_on(d).bodies})
    (tmp_path / "override.yaml").write_text(OVERRIDE)
    stack = compose.ComposeStack(
        project=f"osmstest{os.getpid()}", directory=tmp_path / "deployment", extra_files=[tmp_path / "override.yaml"],
        variables={"OSMS_IMAGE": image, "OSMS_BASE_IMAGE": compose.STANDIN_BASE,
                   "OSMS_POSTGRES_IMAGE": compose.STANDIN_POSTGRES, "OSMS_REDIS_IMAGE": compose.STANDIN_REDIS},
        api_port=free_port())
    stack.write_env()
    timings: dict[str, float] = {}
    started = time.monotonic()
    reference = OsmsRuns(tmp_path / "osms-run", DAYS, env=_reference_env(stack, tmp_path / "keys"))
    try:
        stack.up(workers=2)
        health = stack.wait_healthy(timeout=600)
        timings["healthy"] = time.monotonic() - started
        assert len([n for n in health if "airflow-worker" in n]) == 2, health

        # every published port on 127.0.0.1; no secret in any service's environment, none at all in the mocks
        secrets = set(read_secrets_dir(stack.secrets_dir).values())
        for c in stack.containers():
            service = c["Config"]["Labels"]["com.docker.compose.service"]
            for bindings in (c["HostConfig"].get("PortBindings") or {}).values():
                assert all(b["HostIp"] == "127.0.0.1" for b in bindings), (service, bindings)
            env = c["Config"]["Env"] or []
            leaked = [e.split("=", 1)[0] for e in env if any(s in e for s in secrets)]
            assert not leaked, f"{service} has a secret in its environment: {leaked}"
            mounts = [m["Destination"] for m in c["Mounts"]]
            if service == "mocks":
                assert not [m for m in mounts if m.startswith("/run/secrets")], f"the mocks get secrets: {mounts}"

        # the operator backfills both days: every agency DAG, and the package DAG (its sensors wait for them)
        for dag_id in agency_dags:
            _backfill(stack, dag_id, dt.time(0, 30))
        _backfill(stack, PACKAGE_DAG, dt.time(0, 45))

        # one worker container killed in the middle of a task
        workers = {c["Config"]["Hostname"]: c["Name"].lstrip("/") for c in stack.containers("airflow-worker")}

        def running_on_a_worker() -> tuple[str, list[dict]] | None:
            running = [t for t in _task_instances(stack) if t["state"] == "running" and t["hostname"] in workers]
            return (running[0]["hostname"], [t for t in running if t["hostname"] == running[0]["hostname"]]
                    ) if running else None

        host, interrupted = _poll(running_on_a_worker, timeout=300, interval=0.5, what="a task running on a worker")
        stack.kill(workers[host])
        timings["killed"] = time.monotonic() - started
        reference.start()  # while the scheduler gives up on the dead worker's tasks
        survivor = next(h for h in workers if h != host)

        def all_done() -> bool:
            runs = stack.api("GET", "/api/v2/dags/~/dagRuns", params={"limit": 100, "run_type": "backfill"})["dag_runs"]
            failed = [r for r in runs if r["state"] == "failed"]
            if failed:
                pytest.fail(f"backfill runs failed: {[(r['dag_id'], r['logical_date']) for r in failed]}\n"
                            f"{_summary(stack)}")
            return len(runs) == len(DAYS) * (len(agency_dags) + 1) and all(r["state"] == "success" for r in runs)

        _poll(all_done, timeout=RUNS_TIMEOUT, interval=3, what="both days' backfill runs to succeed")
        timings["runs"] = time.monotonic() - started

        # the killed worker stays down (a killed container is not restarted); its tasks ran again on the survivor
        killed = next(c for c in stack.containers("airflow-worker") if c["Config"]["Hostname"] == host)["State"]
        assert killed["Status"] == "exited", f"the killed worker is {killed['Status']}"
        after = {(t["dag_id"], t["dag_run_id"], t["task_id"], t["map_index"]): t for t in _task_instances(stack)}
        for t in interrupted:
            now = after[(t["dag_id"], t["dag_run_id"], t["task_id"], t["map_index"])]
            assert now["state"] == "success" and now["try_number"] > t["try_number"], (t, now)
            assert now["hostname"] == survivor, f"{t['task_id']} was retried on {now['hostname']}, not {survivor}"

        out = tmp_path / "compose-packages"
        stack.copy_out("airflow-scheduler", "/opt/airflow/data/packages", out)
    finally:
        try:
            stack.down()
        finally:
            timings["down"] = time.monotonic() - started
            print(f"\ncompose test timings (s from up): {timings}")
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}

    # each day's package is byte for byte osms run's, and verifies with the deployment's public key
    reference_data = reference.wait()
    from osms.dev.deploy import SIGNING_PUBLIC_KEY_FILE

    osms = str(Path(sys.executable).with_name("osms"))
    for day in DAYS:
        ours, theirs = out / day.isoformat(), reference_data / "packages" / day.isoformat()
        assert (ours / "receipt.json").is_file(), f"no receipt for {day}: the package was not delivered"
        assert differing_files(ours, theirs) == [], f"{day}: the compose run's package differs from osms run's"
        verified = subprocess.run([osms, "package", "verify", str(ours), "--public-key",
                                   str(stack.secrets_dir / SIGNING_PUBLIC_KEY_FILE)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    assert set(PACKAGE_FILES) <= {p.name for p in (out / DAYS[0].isoformat()).iterdir()}
