"""``make soak``: the real scheduler of the embedded shape runs day after day under a seeded chaos plan, then an audit.

What it does, in order:

1. writes the plan (``soak-plan.json``) before anything runs: per day zero to three faults of the
   catalogue (:data:`CATALOGUE`), each with the effect it must have (the feeds carried forward or
   held back, QA's release the next morning, the notices);
2. runs the reference: ``osms run`` for every day on clean mocks, into a data dir of its own;
3. starts the loopback mocks (the plan's source faults keyed to their day, so they hold whenever the
   request comes) and the embedded Airflow ``make airflow`` runs (API server, scheduler with the
   LocalExecutor, DAG processor, triggerer; no scheduled runs: the days come by catch-up), writes the
   chain's start at the first day, and for each day, as an operator catching up would: QA's decisions
   of the morning (through the Data quality API, as the ``qa`` user), a REST backfill of the day for
   every agency DAG, the day's process faults (the scheduler SIGKILLed mid-day and restarted), then a
   REST backfill of the package DAG for the day (D waits for D-1: the chain);
4. audits (:mod:`osms.dev.soak_audit`) and writes ``soak.json``; exits 1 when a difference is unexplained or a run
   is left unfinished.

Only the embedded shape: ``SHAPE=cluster`` is not implemented. The plan (1) is :mod:`osms.dev.soak_plan`, the
audit (4) :mod:`osms.dev.soak_audit`; this module runs the days.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# The plan and the audit live in modules of their own; their names are importable from here too.
from osms.dev.soak_audit import (
    DayFacts,
    is_terminal,
    audit_soak,
    baseline_notices,
    check_ledger,
    compare_days,
    differing_categories,
    non_published,
    runs_from_database,
    sent_from_outbox,
)
from osms.dev.soak_plan import (
    CATALOGUE,
    DATA_FAULTS,
    DEFAULT_START,
    PACKAGE_DAG,
    RECEIVER_FAILURES,
    expected_effects,
    make_plan,
    mock_day_faults,
    parse_faults,
)

__all__ = ["CATALOGUE", "DATA_FAULTS", "DEFAULT_START", "PACKAGE_DAG", "RECEIVER_FAILURES", "DayFacts", "Soak",
           "baseline_notices", "check_ledger", "compare_days", "differing_categories", "expected_effects", "main",
           "make_plan", "mock_day_faults", "non_published", "parse_faults", "reaudit", "run_reference",
           "runs_from_database", "sent_from_outbox", "webhook"]

QA_USER = "qa"
BACKFILL_ATTEMPTS = 12  # a backfill refused while SQLite is locked is asked for again
RUN_TIMEOUT = 900.0  # seconds for one day's runs to end


# --------------------------------------------------------------------------- the run


class _Webhook(BaseHTTPRequestHandler):
    """The alert webhook (connection osms_alert_webhook): records every notice it accepts."""

    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        try:
            notice = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        with self.lock:
            self.received.append(notice)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def webhook() -> Iterator[tuple[ThreadingHTTPServer, list[dict[str, Any]]]]:
    """A webhook on 127.0.0.1 collecting notices; yields (server, the list it fills)."""
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Webhook,), {"received": received, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, received
    finally:
        server.shutdown()
        server.server_close()


def run_reference(ref: Path, days: Sequence[dt.date], config: Any, say: Callable[[str], None]) -> None:
    """What ``osms run`` does for each day in order (``run_day_dags`` on warm workers), on clean mocks, into ``ref``.

    One start of the mocks and one database migration for all the days (``osms run`` does both per day);
    a complete reference is kept and reused.
    """
    from mocks.service import start_mocks
    from osms.core import layout
    from osms.dev.local_run import airflow_env, migrate, run_day_dags, signing_env

    todo = [d for d in days if not (layout.package_dir(ref, d) / "records.parquet").is_file()]
    if not todo:
        return
    if todo != list(days)[len(days) - len(todo):]:
        raise RuntimeError(f"the reference in {ref} is incomplete in the middle: remove it")
    with start_mocks(config) as mocks:
        env = airflow_env(ref, {**mocks.airflow_env(), **signing_env()})
        migrate(env)
        for day in todo:
            started = time.perf_counter()
            # warm workers per day: run_day_dags starts them and stops them when the day is done
            results, _ = run_day_dags(day, ref, env, say=lambda _: None)
            if not (layout.package_dir(ref, day) / "receipt.json").is_file():
                failed = [r.dag_id for r in results if not r.ok]
                raise RuntimeError(f"the reference of {day} was not delivered (runs failed: {failed})")
            say(f"  reference {day}: {time.perf_counter() - started:,.0f} s")


class Soak:
    """One soak: the plan, the mocks, the embedded Airflow, the days, the audit."""

    def __init__(self, out: Path, plan: dict[str, Any], scale: float, *, population: Path | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.out, self.plan, self.scale, self.say = out, plan, scale, say
        self.population = population or out / "soak-population"
        self.work = out / "soak"
        self.data = self.work / "data"
        self.days = [dt.date.fromisoformat(d) for d in plan["days"]]
        self.human_actions: list[dict[str, Any]] = []
        self.day_seconds: dict[str, float] = {}
        self.kills: list[dict[str, Any]] = []

    def faults_on(self, day: dt.date, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.plan["faults"] if f["day"] == day.isoformat() and f["kind"] == kind]

    # the days --------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Reference, soak, audit; returns the audit (also written to soak.json)."""
        from mocks.config import MockConfig
        from mocks.population import PopulationSpec, load_population

        seed = int(self.plan["seed"])
        population_dir = self.population
        self.say(f"population (seed {seed}, scale {self.scale}) ...")
        load_population(PopulationSpec(seed=seed, scale=self.scale), population_dir)
        ref = self.work / "reference"
        (ref / "mocks").mkdir(parents=True, exist_ok=True)
        link = ref / "mocks" / "population"
        if not link.exists():
            link.symlink_to(population_dir.resolve(), target_is_directory=True)
        self.say(f"reference: the days one by one on clean mocks, as osms run runs them ({ref}) ...")
        run_reference(ref, self.days, MockConfig(seed=seed, scale=self.scale, data_dir=ref / "mocks"), self.say)

        import shutil

        shutil.rmtree(self.data, ignore_errors=True)  # a soak starts from nothing, as a new deployment
        (self.data / "mocks").mkdir(parents=True)
        (self.data / "mocks" / "population").symlink_to(population_dir.resolve(), target_is_directory=True)
        config = MockConfig(seed=seed, scale=self.scale, data_dir=self.data / "mocks",
                            day_faults=mock_day_faults(self.plan))
        started = time.perf_counter()
        with webhook() as (hook, received):
            runs = self._soak(config, hook.server_address[1])
            received_now = list(received)
        audit = self.audit(ref, runs, received_now)
        audit["wall_seconds"] = round(time.perf_counter() - started, 1)
        return audit

    def _soak(self, config: Any, hook_port: int) -> dict[str, Any]:
        from mocks.service import start_mocks
        from osms.core import layout
        from osms.dev.ui_stack import ALL_COMPONENTS, stack_airflow

        layout.lineage(self.data).mkdir(parents=True, exist_ok=True)
        with start_mocks(config) as mocks:
            af = stack_airflow(self.data, mocks, use_job_schedule=False)  # the days come by catch-up only
            af.extra_env.update({
                "AIRFLOW_CONN_OSMS_ALERT_WEBHOOK": json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                               "port": hook_port, "schema": "http",
                                                               "password": "soak-webhook"}),
                # a task whose process died with the scheduler is seen as such within a minute, not five
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            })
            self.say(f"starting the embedded Airflow ({af.home}) ...")
            try:
                af.start(ALL_COMPONENTS, timeout=300)
                edition_dags = sorted({b.dag_id for day in self.days for b in _bodies(day)})
                for dag_id in [*edition_dags, PACKAGE_DAG]:
                    af.wait_for_dag(dag_id, timeout=300)
                    af.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
                self._chain_start(self.days[0])
                for day in self.days:
                    self._day(af, mocks, day)
                af.wait_tasks_finished(timeout=120)
                return self._runs(af, [*edition_dags, PACKAGE_DAG])
            finally:
                af.stop()

    def _chain_start(self, day: dt.date) -> None:
        osms = str(Path(sys.executable).with_name("osms"))
        out = subprocess.run([osms, "chain", "start", "--date", day.isoformat(), "--data-dir", str(self.data)],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"osms chain start failed: {out.stdout}{out.stderr}")
        self.say(f"chain start: {out.stdout.strip()}")

    def _day(self, af: Any, mocks: Any, day: dt.date) -> None:
        from osms.core.dates import almaty, logical_date

        started = time.perf_counter()
        self._morning_decisions(af, day)
        bodies = [b.dag_id for b in _bodies(day)]
        for dag_id in bodies:
            self._backfill(af, dag_id, logical_date(day))
        if self.faults_on(day, "scheduler_kill"):
            self._kill_scheduler(af, day)
        self._wait(af, bodies, day)
        if self.faults_on(day, "receiver_down"):
            self._receiver_faults(mocks, {"fail_next_uploads": RECEIVER_FAILURES})
        package_moment = dt.datetime.combine(day, dt.time(0, 45), tzinfo=almaty()).isoformat()
        # every agency run of D has ended: a body without a status has failed, nothing is worth waiting for
        self._backfill(af, PACKAGE_DAG, package_moment, conf={"status_wait_minutes": 0, "previous_wait_minutes": 0})
        self._wait(af, [PACKAGE_DAG], day)
        if self.faults_on(day, "receiver_down"):
            left = self._receiver_faults(mocks, None)
            if left.get("fail_next_uploads"):
                raise RuntimeError(f"{day}: the receiver's injected failures were not all met: {left}")
        self.day_seconds[day.isoformat()] = time.perf_counter() - started
        self.say(f"  {day}: {self.day_seconds[day.isoformat()]:,.0f} s"
                 f" ({', '.join(f['kind'] for f in self.plan['faults'] if f['day'] == day.isoformat()) or 'clean'})")

    def _backfill(self, af: Any, dag_id: str, moment: str, conf: dict[str, Any] | None = None) -> None:
        from osms.dev.airflow_local import AirflowLocalError

        body = {"dag_id": dag_id, "from_date": moment, "to_date": moment, "max_active_runs": 1,
                "reprocess_behavior": "none", **({"dag_run_conf": conf} if conf else {})}
        for attempt in range(BACKFILL_ATTEMPTS):
            try:
                af.api("POST", "/api/v2/backfills", json=body)
                return
            except AirflowLocalError as exc:
                # the embedded SQLite has one writer: Airflow answers 503 and keeps nothing, so asking again is safe
                if "answered 503" not in str(exc) or "locked" not in str(exc) or attempt == BACKFILL_ATTEMPTS - 1:
                    raise
                time.sleep(1 + attempt)

    def _day_runs(self, af: Any, dag_ids: Sequence[str], day: dt.date) -> list[dict[str, Any]]:
        from osms.core.dates import almaty

        start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=almaty())
        params = {"logical_date_gte": start.isoformat(), "logical_date_lt": (start + dt.timedelta(days=1)).isoformat(),
                  "limit": 100}
        runs = (af.api("GET", "/api/v2/dags/~/dagRuns", params=params) or {}).get("dag_runs", [])
        return [r for r in runs if r["dag_id"] in dag_ids]

    def _wait(self, af: Any, dag_ids: Sequence[str], day: dt.date) -> None:
        def ended() -> bool:
            af.check_alive()
            runs = self._day_runs(af, dag_ids, day)
            return len(runs) == len(dag_ids) and all(is_terminal(r["state"]) for r in runs)

        af.poll(ended, timeout=RUN_TIMEOUT, interval=2, what=f"the runs of {day} ({len(dag_ids)}) to end")

    def _kill_scheduler(self, af: Any, day: dt.date) -> None:
        af.poll(lambda: af.task_processes("scheduler"), timeout=300, interval=0.2, what=f"{day}'s first task")
        time.sleep(1.0)  # mid-task
        pids = af.kill("scheduler")
        self.kills.append({"day": day.isoformat(), "component": "scheduler", "pids": len(pids)})
        self.say(f"  {day}: scheduler SIGKILLed ({len(pids)} processes), restarting it")
        af.components.append(af._spawn("scheduler"))
        af.wait_healthy(["scheduler"], timeout=180)

    def _receiver_faults(self, mocks: Any, faults: dict[str, int] | None) -> dict[str, Any]:
        import httpx

        url = f"{mocks.state_corp_url}/_admin/faults"
        headers = {"Authorization": f"Bearer {mocks.config.admin_token}"}
        r = httpx.put(url, json=faults, headers=headers, timeout=10) if faults is not None else \
            httpx.get(url, headers=headers, timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def _morning_decisions(self, af: Any, day: dt.date) -> None:
        """QA releases yesterday's held-back volume drops through the Data quality API, as the qa user."""
        import httpx

        yesterday = day - dt.timedelta(days=1)
        for f in self.faults_on(yesterday, "volume_drop"):
            for feed in f["expect"]["released_next_day"]:
                body, system, category = feed.split(".")
                reason = f"soak plan: the drop of {yesterday} is real (seed {self.plan['seed']})"
                r = httpx.post(f"{af.url}/osms/api/decisions", timeout=30, json={
                    "day": yesterday.isoformat(), "category": category, "body": body, "system": system,
                    "action": "release", "reason": reason}, headers={"Authorization": f"Bearer {af.token(QA_USER)}"})
                if r.status_code != 201:
                    raise RuntimeError(f"QA's release of {feed} for {yesterday} answered {r.status_code}: {r.text}")
                self.human_actions.append({"day": day.isoformat(), "who": QA_USER, "action": "release",
                                           "feed": feed, "for_day": yesterday.isoformat()})

    def _runs(self, af: Any, dag_ids: Sequence[str]) -> dict[str, Any]:
        """Every run and task instance of the soak, read through the REST API at the end."""
        runs, tis = [], []
        for dag_id in dag_ids:
            runs += af.dag_runs(dag_id)
        offset = 0
        while True:
            page = af.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params={"limit": 100, "offset": offset})
            tis += page["task_instances"]
            offset += 100
            if offset >= page["total_entries"]:
                break
        return {"runs": runs, "task_instances": tis}

    # the audit -------------------------------------------------------------------------------------------
    def audit(self, ref: Path, runs: dict[str, Any], received: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The figures of soak.json (:func:`osms.dev.soak_audit.audit_soak`)."""
        return audit_soak(self, ref, runs, received)


def reaudit(out: Path, scale: float) -> dict[str, Any]:
    """The audit of a finished soak in ``out`` again, the plan's expected effects recomputed by this code."""
    plan = json.loads((out / "soak-plan.json").read_text())
    for f in plan["faults"]:
        f["expect"] = expected_effects(f["kind"], dt.date.fromisoformat(f["day"]), f["system"])
    soak = Soak(out, plan, scale)
    before = json.loads((out / "soak.json").read_text()) if (out / "soak.json").is_file() else {}
    soak.day_seconds = dict(before.get("seconds_per_day", {}).get("each", {}))
    soak.kills = list(before.get("kills", []))
    soak.human_actions = list(before.get("human_actions", []))
    runs = runs_from_database(soak.data / "airflow" / "airflow.db")
    audit = soak.audit(soak.work / "reference", runs, sent_from_outbox(soak.data))
    audit["reaudited"] = "expected effects recomputed; notices from the outbox; runs from the database"
    return audit


def _bodies(day: dt.date) -> list[Any]:
    from osms.core.registry import default_registry

    return list(default_registry().edition_on(day).bodies)


def main(argv: Sequence[str] | None = None) -> int:
    """``make soak``: plan, reference, soak, audit; exit 1 on an unexplained difference or a stuck run."""
    parser = argparse.ArgumentParser(prog="osms-soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--scale", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=660)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=DEFAULT_START)
    parser.add_argument("--faults", default="", help="kinds to draw from (a,b) or fixed kind:day pairs")
    parser.add_argument("--out", type=Path, default=Path("bench-data"))
    parser.add_argument("--population", type=Path, default=None, help="population cache (default OUT/soak-population)")
    parser.add_argument("--audit-only", action="store_true",
                        help="audit the finished soak in OUT again (its plan's faults, this code's expected effects)")
    parser.add_argument("--shape", default="embedded", choices=("embedded", "cluster"))
    args = parser.parse_args(argv)
    if args.shape != "embedded":
        print("SHAPE=cluster is not implemented: the soak runs the embedded shape only", file=sys.stderr)
        return 2
    if args.days < 1:
        parser.error("--days must be at least 1")
    from osms.core.files import write_bytes_atomic

    if args.audit_only:
        return _report(reaudit(args.out.resolve(), args.scale), args.out.resolve(), write_bytes_atomic)
    kinds, fixed = parse_faults(args.faults)
    plan = make_plan(args.seed, args.start, args.days, kinds=kinds, fixed=fixed)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "soak-plan.json"
    write_bytes_atomic(json.dumps(plan, indent=2).encode() + b"\n", plan_path)
    print(f"plan: {plan_path} ({len(plan['faults'])} faults over {args.days} days)")
    for f in plan["faults"]:
        print(f"  {f['day']} {f['kind']}{' ' + f['system'] if f['system'] else ''}")
    audit = Soak(out, plan, args.scale, population=args.population).run()
    return _report(audit, out, write_bytes_atomic)


def _report(audit: dict[str, Any], out: Path, write_bytes_atomic: Callable[..., Any]) -> int:
    """Write soak.json, print its figures; the exit status."""
    write_bytes_atomic(json.dumps(audit, indent=2).encode() + b"\n", out / "soak.json")
    print(json.dumps({k: audit[k] for k in ("days", "delivered", "in_order", "chained", "identical_days",
                                            "faulted_days", "unexplained_differences", "stuck_runs",
                                            "seconds_per_day", "task_peak_memory_mib", "retries")}, indent=2))
    for line in audit["unexplained"] + audit["stuck"]:
        print(f"  ! {line}")
    print(f"audit: {out / 'soak.json'}")
    return 1 if audit["unexplained_differences"] or audit["stuck_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())