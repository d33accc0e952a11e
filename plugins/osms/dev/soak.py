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
4. audits (:func:`audit`) and writes ``soak.json``; exits 1 when a difference is unexplained or a run
   is left unfinished.

Only the embedded shape: ``SHAPE=cluster`` is not implemented.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PACKAGE_DAG = "osms_daily_package"
QA_USER = "qa"
# The fault catalogue: what each does and the effect it must have (see expected_effects).
CATALOGUE: dict[str, str] = {
    "source_down": "a source system answers 503 to every request for day D (back the next day)",
    "schema_change": "a source system renames a required column (period_start) for day D only",
    "volume_drop": "a source system withholds 90 % of day D's records; QA releases the held-back feeds the next"
                   " morning (the next package follows the release)",
    "receiver_down": "the State Corporation answers 503 to D's first uploads; the delivery retries and succeeds",
    "scheduler_kill": "the scheduler and its task processes are SIGKILLed while D's agency tasks run, then restarted",
}
# Faults that change what D's package holds (the others must leave it byte-identical to a clean run).
DATA_FAULTS = ("source_down", "schema_change", "volume_drop")
# Systems one body reads (one feed each in the 2022 edition): a fault's effect stays one body's.
SINGLE_FEED_SYSTEMS = ("disability_db", "egov_portal", "judicial_is", "labour_market", "legal_statistics",
                       "migration_police", "penal_db", "pregnancy_register", "students_abroad", "tsa_db")
# Feeds large enough at scale 0.001 that losing 90 % is seen by the volume rule.
VOLUME_SYSTEMS = ("disability_db", "pregnancy_register", "penal_db")
VOLUME_DROP = 0.9
VOLUME_HISTORY = 3  # days of history the volume rule needs before it judges (quality.validate)
RENAMED_COLUMN = ("period_start", "start_of_period")
RECEIVER_FAILURES = 3  # uploads answered 503 before the receiver is back
BACKFILL_ATTEMPTS = 12  # a backfill refused while SQLite is locked is asked for again
RUN_TIMEOUT = 900.0  # seconds for one day's runs to end
DEFAULT_START = dt.date(2025, 6, 1)


# --------------------------------------------------------------------------- the plan


def _edition_feeds(day: dt.date) -> list[tuple[str, str, str]]:
    """(category, body, system) of every feed in force on D."""
    from osms.core.registry import default_registry

    return sorted((f.category, f.body, f.system) for f in default_registry().edition_on(day).feeds)


def expected_effects(kind: str, day: dt.date, system: str | None) -> dict[str, Any]:
    """What a fault of ``kind`` on D must do: feed verdicts on D, QA decisions for D+1, notices (kind, dag)."""
    feeds = [(c, b, s) for c, b, s in _edition_feeds(day) if s == system]
    bodies = sorted({b for _, b, _ in feeds})
    effect: dict[str, Any] = {"feeds": {}, "released_next_day": [], "notices": [], "identical": kind not in DATA_FAULTS,
                              "next_day_may_differ": []}
    if kind == "source_down":
        # the extract gives up after its retries: the feed failed, the body's run failed
        effect["feeds"] = {f"{c}/{b}/{s}": "failed" for c, b, s in feeds}
        effect["notices"] = sorted([["feeds_not_published", f"agency_{b}"] for b in bodies]
                                   + [["agency_run_failed", f"agency_{b}"] for b in bodies])
    elif kind in ("schema_change", "volume_drop"):
        # a schema change is held back (kind schema_change) by the extract, a drop by the volume rule
        effect["feeds"] = {f"{c}/{b}/{s}": "held_back" for c, b, s in feeds}
        effect["notices"] = sorted([["feeds_not_published", f"agency_{b}"] for b in bodies]
                                   + [["qa_decision_waiting", PACKAGE_DAG]])
        if kind == "volume_drop":
            effect["released_next_day"] = [f"{b}.{s}.{c}" for c, b, s in feeds]
    if kind in DATA_FAULTS:
        # D+1 keeps D's rows of a record it quarantines (per-record protection): where D lacked the feed's rows,
        # D+1 may differ from the clean run in these categories, and only in them
        effect["next_day_may_differ"] = sorted({c for c, _, _ in feeds})
    return effect


def make_plan(seed: int, start: dt.date, days: int, *, kinds: Sequence[str] = tuple(CATALOGUE),
              fixed: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """The seeded chaos plan: the same seed, start, days and faults give the same plan.

    ``fixed`` names the faults instead of drawing them: (kind, day number from 1); the systems are still drawn.
    """
    unknown = sorted(set(kinds) - set(CATALOGUE) | {k for k, _ in fixed} - set(CATALOGUE))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; the catalogue: {', '.join(CATALOGUE)}")
    rng = random.Random(seed)
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    wanted: list[list[str]] = [[] for _ in dates]
    if fixed:
        for kind, number in fixed:
            if not 1 <= number <= days:
                raise ValueError(f"{kind}:{number}: the day number must be within 1..{days}")
            wanted[number - 1].append(kind)
    else:
        for i in range(days):
            possible = [k for k in kinds if _fits(k, i, days)]
            wanted[i] = rng.sample(possible, k=min(len(possible), rng.choice((0, 1, 1, 2, 3))))
    faults: list[dict[str, Any]] = []
    for i, day in enumerate(dates):
        taken: set[str] = set()
        for kind in sorted(wanted[i]):
            if not _fits(kind, i, days):
                raise ValueError(f"{kind} cannot be on day {i + 1} of {days}"
                                 f" (volume_drop needs {VOLUME_HISTORY} days before it and one after)")
            system = None
            if kind in DATA_FAULTS:
                pool = [s for s in (VOLUME_SYSTEMS if kind == "volume_drop" else SINGLE_FEED_SYSTEMS)
                        if s not in taken]
                system = rng.choice(pool)
                taken.add(system)
            faults.append({"day": day.isoformat(), "kind": kind, "system": system, "what": CATALOGUE[kind],
                           "expect": expected_effects(kind, day, system)})
    return {"seed": seed, "start": start.isoformat(), "days": [d.isoformat() for d in dates], "faults": faults}


def _fits(kind: str, index: int, days: int) -> bool:
    """Whether ``kind`` can be on day ``index`` (0-based): a volume drop needs history before and a morning after."""
    return kind != "volume_drop" or (index >= VOLUME_HISTORY and index + 1 < days)


def parse_faults(text: str) -> tuple[list[str], list[tuple[str, int]]]:
    """``FAULTS``: kinds to draw from (``a,b``) or faults fixed to days (``schema_change:1,scheduler_kill:2``)."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    fixed = [(k, int(n)) for k, _, n in (x.partition(":") for x in items) if n]
    kinds = [x for x in items if ":" not in x]
    if fixed and kinds:
        raise ValueError("FAULTS is either kinds to draw from or kind:day pairs, not both")
    return kinds or list(CATALOGUE), fixed


def mock_day_faults(plan: dict[str, Any]) -> dict[dt.date, dict[str, Any]]:
    """The mocks' faults keyed to their day (mocks.config.MockConfig.day_faults)."""
    from mocks.faults import SystemFaults

    out: dict[dt.date, dict[str, Any]] = {}
    for f in plan["faults"]:
        settings = {"source_down": {"down": True}, "schema_change": {"rename_columns": dict([RENAMED_COLUMN])},
                    "volume_drop": {"volume_drop": VOLUME_DROP}}.get(f["kind"])
        if settings is not None:
            out.setdefault(dt.date.fromisoformat(f["day"]), {})[f["system"]] = SystemFaults.from_mapping(settings)
    return out


# --------------------------------------------------------------------------- the audit


def non_published(quality: dict[str, Any]) -> dict[str, str]:
    """``category/body/system`` -> verdict of every feed of a package that is not plainly published."""
    return {f"{c}/{b}/{s}": feed["status"]
            for c, cat in sorted(quality["categories"].items()) for b, body in sorted(cat["bodies"].items())
            for s, feed in sorted(body["feeds"].items()) if feed["status"] != "published"}


def baseline_notices(quality: dict[str, Any]) -> set[tuple[str, str]]:
    """The notices a clean day's package implies (its own held-back or failed feeds)."""
    notices: set[tuple[str, str]] = set()
    for key, verdict in non_published(quality).items():
        body = key.split("/")[1]
        if verdict in ("held_back", "failed"):
            notices.add(("feeds_not_published", f"agency_{body}"))
        if verdict == "held_back" and not any(d.get("action") for d in quality.get("decisions", [])):
            notices.add(("qa_decision_waiting", PACKAGE_DAG))
        if verdict == "failed":
            notices.add(("agency_run_failed", f"agency_{body}"))
    return notices


@dataclass
class DayFacts:
    """What one day left behind in the soak and in the reference (None: missing)."""

    day: str
    records: bytes | None
    reference_records: bytes | None
    quality: dict[str, Any] | None
    reference_quality: dict[str, Any] | None


def compare_days(plan: dict[str, Any], facts: Sequence[DayFacts],
                 sent: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """The audit's comparisons: records identical where no data fault was, verdicts and notices as planned.

    ``sent``: the notices the webhook received, as (day, kind, dag_id).
    """
    by_day: dict[str, list[dict[str, Any]]] = {}
    for f in plan["faults"]:
        by_day.setdefault(f["day"], []).append(f)
    released: dict[str, list[str]] = {}
    may_differ: dict[str, set[str]] = {}
    for f in plan["faults"]:
        nxt = (dt.date.fromisoformat(f["day"]) + dt.timedelta(days=1)).isoformat()
        may_differ.setdefault(nxt, set()).update(f["expect"].get("next_day_may_differ", []))
    for f in plan["faults"]:
        if f["expect"]["released_next_day"]:
            nxt = (dt.date.fromisoformat(f["day"]) + dt.timedelta(days=1)).isoformat()
            released.setdefault(nxt, []).extend(f["expect"]["released_next_day"])
    unexplained: list[str] = []
    identical, expected_notices = [], set()
    for fact in facts:
        faults = by_day.get(fact.day, [])
        if fact.records is None or fact.quality is None:
            unexplained.append(f"{fact.day}: no package")
            continue
        if fact.reference_records is None or fact.reference_quality is None:
            unexplained.append(f"{fact.day}: no reference package")
            continue
        same = fact.records == fact.reference_records
        if same:
            identical.append(fact.day)
        elif all(f["expect"]["identical"] for f in faults):
            differing = differing_categories(fact.records, fact.reference_records)
            allowed = may_differ.get(fact.day, set())
            if not differing <= allowed or not allowed:
                unexplained.append(f"{fact.day}: records.parquet differs from the clean run's"
                                   f" (faults: {', '.join(f['kind'] for f in faults) or 'none'}; categories"
                                   f" {sorted(differing)}, the day before's data faults allow {sorted(allowed)})")
        want = non_published(fact.reference_quality)
        for f in faults:
            want.update(f["expect"]["feeds"])
        got = non_published(fact.quality)
        if got != want:
            extra = {k: v for k, v in got.items() if want.get(k) != v}
            missing = {k: v for k, v in want.items() if got.get(k) != v}
            unexplained.append(f"{fact.day}: quality.json verdicts differ from the plan's: not planned {extra},"
                               f" planned but absent {missing}")
        decided = sorted(d["feed"] for d in fact.quality.get("decisions", []) if d.get("action") == "release")
        if decided != sorted(released.get(fact.day, [])):
            unexplained.append(f"{fact.day}: releases named {decided}, the plan's {sorted(released.get(fact.day, []))}")
        day_notices = baseline_notices(fact.reference_quality)
        for f in faults:
            day_notices |= {(k, d) for k, d in f["expect"]["notices"]}
        expected_notices |= {(fact.day, k, d) for k, d in day_notices}
    counted = Counter(sent)
    got_notices = set(counted)
    for day, kind, dag in sorted(expected_notices - got_notices):
        unexplained.append(f"{day}: notice {kind} of {dag} expected, not sent")
    for day, kind, dag in sorted(got_notices - expected_notices):
        unexplained.append(f"{day}: notice {kind} of {dag} sent, not expected")
    for (day, kind, dag), n in sorted(counted.items()):
        if n > 1:
            unexplained.append(f"{day}: notice {kind} of {dag} sent {n} times")
    return {
        "identical_days": identical,
        "faulted_days": sorted(by_day),
        "notices": {"expected": len(expected_notices), "sent": sum(counted.values()),
                    "expected_list": [list(x) for x in sorted(expected_notices)],
                    "sent_list": [list(x) for x in sorted(counted)]},
        "unexplained": unexplained,
    }


def differing_categories(ours: bytes, theirs: bytes) -> set[str]:
    """The categories whose rows differ between two records.parquet files (every category if unreadable)."""
    import io

    import pyarrow.parquet as pq

    try:
        a, b = pq.read_table(io.BytesIO(ours)), pq.read_table(io.BytesIO(theirs))
    except Exception:  # noqa: BLE001 (a file that is not Parquet differs everywhere)
        return {"<unreadable>"}

    def rows(t: Any) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for r in t.to_pylist():
            out.setdefault(r["category"], []).append(json.dumps(r, sort_keys=True, default=str))
        return out

    ra, rb = rows(a), rows(b)
    return {c for c in set(ra) | set(rb) if ra.get(c) != rb.get(c)} or ({"<schema>"} if a.schema != b.schema else set())


def check_ledger(ledger: Sequence[dict[str, Any]], manifests: dict[str, dict[str, Any]],
                 days: Sequence[str]) -> tuple[list[str], bool, bool, list[str]]:
    """(delivered days, in order, chained, problems) from the receiver's ledger and its stored manifests."""
    delivered = [e["receipt"]["logical_date"] for e in ledger]
    problems = []
    in_order = delivered == list(days)
    if not in_order:
        problems.append(f"the ledger holds {delivered}, not each of {list(days)} once in order")
    chained = True
    previous = None
    for entry in ledger:
        r = entry["receipt"]
        manifest = manifests.get(r["logical_date"]) or {}
        if manifest.get("previous_manifest_sha256") != previous:
            chained = False
            problems.append(f"{r['logical_date']}: manifest names {manifest.get('previous_manifest_sha256')},"
                            f" the previous commit was {previous}")
        previous = r["manifest_sha256"]
    return delivered, in_order, chained, problems


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


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
    from osms.dev.local_run import DagWorkers, airflow_env, default_workers, migrate, run_day_dags, signing_env

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
            # warm workers per day (run_day_dags closes its pool when the day is done)
            results, _ = run_day_dags(day, ref, env, pool=DagWorkers(env, default_workers()), say=lambda _: None)
            if not (layout.package_dir(ref, day) / "receipt.json").is_file():
                failed = [r.dag_id for r in results if not r.ok]
                raise RuntimeError(f"the reference of {day} was not delivered (runs failed: {failed})")
            say(f"  reference {day}: {time.perf_counter() - started:,.0f} s")


def _terminal(state: str | None) -> bool:
    return state in ("success", "failed")


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
            return len(runs) == len(dag_ids) and all(_terminal(r["state"]) for r in runs)

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
        """The figures of soak.json."""
        from osms.core import layout
        from osms.orchestration.task_metrics import read_metrics

        receiver = self.data / "mocks" / "state" / "state_corp"
        ledger_path = receiver / "ledger.jsonl"
        ledger = [json.loads(x) for x in ledger_path.read_text().splitlines() if x.strip()] \
            if ledger_path.is_file() else []
        manifests = {}
        for entry in ledger:
            r = entry["receipt"]
            path = receiver / "packages" / r["package_id"] / "manifest.json"
            if path.is_file():
                manifests[r["logical_date"]] = json.loads(path.read_text())
        delivered, in_order, chained, ledger_problems = check_ledger(ledger, manifests, self.plan["days"])
        answers = receiver / "audit.jsonl"  # the receiver's log of every request's outcome
        refused = Counter(json.loads(x).get("package_id") for x in answers.read_text().splitlines()
                          if x.strip() and json.loads(x).get("status") == 503) if answers.is_file() else Counter()

        def read(path: Path) -> bytes | None:
            return path.read_bytes() if path.is_file() else None

        def quality(path: Path) -> dict[str, Any] | None:
            return json.loads(path.read_text()) if path.is_file() else None

        facts = [DayFacts(day=d.isoformat(),
                          records=read(layout.package_dir(self.data, d) / "records.parquet"),
                          reference_records=read(layout.package_dir(ref, d) / "records.parquet"),
                          quality=quality(layout.package_dir(self.data, d) / "quality.json"),
                          reference_quality=quality(layout.package_dir(ref, d) / "quality.json"))
                 for d in self.days]
        sent = [(n["day"], n["kind"], n["dag_id"]) for n in received]
        compared = compare_days(self.plan, facts, sent)
        stuck = [f"{r['dag_id']} {r['dag_run_id']}: {r['state']}" for r in runs["runs"] if not _terminal(r["state"])]
        unfinished = [f"{t['dag_id']}.{t['task_id']} {t['dag_run_id']}: {t['state']}" for t in runs["task_instances"]
                      if t["state"] in ("running", "queued", "scheduled", "up_for_retry", "up_for_reschedule",
                                        "deferred", "restarting")]
        retries = sum(max(0, int(t.get("try_number") or 0) - 1) for t in runs["task_instances"])
        peaks = [m for d in self.days for m in read_metrics(self.data, d.isoformat()) if m.get("peak_rss_bytes")]
        peak = max(peaks, key=lambda m: m["peak_rss_bytes"]) if peaks else None
        seconds = list(self.day_seconds.values())
        unexplained = ledger_problems + compared["unexplained"]
        expected_actions = sum(len(f["expect"]["released_next_day"]) for f in self.plan["faults"])
        if len(self.human_actions) != expected_actions:
            unexplained.append(f"{len(self.human_actions)} human actions, the plan's {expected_actions}")
        return {
            "shape": "embedded",
            "seed": self.plan["seed"],
            "scale": self.scale,
            "days": len(self.days),
            "delivered": len(delivered),
            "in_order": in_order,
            "chained": chained,
            "identical_days": len(compared["identical_days"]),
            "faulted_days": len(compared["faulted_days"]),
            "faults": [[f["day"], f["kind"], f["system"]] for f in self.plan["faults"]],
            "unexplained_differences": len(unexplained),
            "unexplained": unexplained,
            "human_actions": self.human_actions,
            "notices": compared["notices"],
            "stuck_runs": len(stuck) + len(unfinished),
            "stuck": stuck + unfinished,
            "runs": len(runs["runs"]),
            "runs_failed": sorted(f"{r['dag_id']} {r['dag_run_id']}" for r in runs["runs"] if r["state"] == "failed"),
            "seconds_per_day": {"p50": _percentile(seconds, 0.5), "p95": _percentile(seconds, 0.95),
                                "each": {k: round(v, 1) for k, v in self.day_seconds.items()}},
            "task_peak_memory_mib": round(peak["peak_rss_bytes"] / 2**20, 1) if peak else None,
            "task_peak_memory_task": f"{peak['dag_id']}.{peak['task_id']}" if peak else None,
            "retries": retries,
            "receiver_failures_injected": RECEIVER_FAILURES * sum(
                1 for f in self.plan["faults"] if f["kind"] == "receiver_down"),
            "receiver_503_by_package": dict(sorted(refused.items())),
            "kills": self.kills,
            "identical": compared["identical_days"],
        }


def runs_from_database(db: Path) -> dict[str, Any]:
    """Every run and task instance, read from the embedded SQLite database (the audit of a stopped soak)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        runs = [{"dag_id": d, "dag_run_id": r, "state": st}
                for d, r, st in conn.execute("SELECT dag_id, run_id, state FROM dag_run ORDER BY id")]
        tis = [{"dag_id": d, "task_id": t, "dag_run_id": r, "state": st, "try_number": n}
               for d, t, r, st, n in conn.execute("SELECT dag_id, task_id, run_id, state, try_number"
                                                   " FROM task_instance")]
    return {"runs": runs, "task_instances": tis}


def sent_from_outbox(data: Path) -> list[dict[str, Any]]:
    """The notices the webhook accepted, from the outbox (``alerts/D/*.json`` marked ``.sent``)."""
    out = []
    for path in sorted((data / "alerts").glob("*/*.json")):
        if path.with_suffix(".sent").exists():
            out.append(json.loads(path.read_text())["notice"])
    return out


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
