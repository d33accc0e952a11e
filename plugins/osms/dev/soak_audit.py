"""``make soak``'s audit: what the days left behind (packages, the receiver's ledger, notices, runs) against the
clean reference and the plan's expected effects (:mod:`osms.dev.soak_plan`); every difference not explained by
a planned fault is listed in ``soak.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.dev.soak_plan import PACKAGE_DAG, RECEIVER_FAILURES

if TYPE_CHECKING:
    from osms.dev.soak import Soak


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

def is_terminal(state: str | None) -> bool:
    """Whether a run or task state is final."""
    return state in ("success", "failed")


def audit_soak(soak: Soak, ref: Path, runs: dict[str, Any], received: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures of soak.json: what ``soak`` left in its data dir and noted, against the reference in ``ref``."""
    from osms.core import layout
    from osms.orchestration.task_metrics import read_metrics

    receiver = soak.data / "mocks" / "state" / "state_corp"
    ledger_path = receiver / "ledger.jsonl"
    ledger = [json.loads(x) for x in ledger_path.read_text().splitlines() if x.strip()] \
        if ledger_path.is_file() else []
    manifests = {}
    for entry in ledger:
        r = entry["receipt"]
        path = receiver / "packages" / r["package_id"] / "manifest.json"
        if path.is_file():
            manifests[r["logical_date"]] = json.loads(path.read_text())
    delivered, in_order, chained, ledger_problems = check_ledger(ledger, manifests, soak.plan["days"])
    answers = receiver / "audit.jsonl"  # the receiver's log of every request's outcome
    refused = Counter(json.loads(x).get("package_id") for x in answers.read_text().splitlines()
                      if x.strip() and json.loads(x).get("status") == 503) if answers.is_file() else Counter()

    def read(path: Path) -> bytes | None:
        return path.read_bytes() if path.is_file() else None

    def quality(path: Path) -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.is_file() else None

    facts = [DayFacts(day=d.isoformat(),
                      records=read(layout.package_dir(soak.data, d) / "records.parquet"),
                      reference_records=read(layout.package_dir(ref, d) / "records.parquet"),
                      quality=quality(layout.package_dir(soak.data, d) / "quality.json"),
                      reference_quality=quality(layout.package_dir(ref, d) / "quality.json"))
             for d in soak.days]
    sent = [(n["day"], n["kind"], n["dag_id"]) for n in received]
    compared = compare_days(soak.plan, facts, sent)
    stuck = [f"{r['dag_id']} {r['dag_run_id']}: {r['state']}" for r in runs["runs"] if not is_terminal(r["state"])]
    unfinished = [f"{t['dag_id']}.{t['task_id']} {t['dag_run_id']}: {t['state']}" for t in runs["task_instances"]
                  if t["state"] in ("running", "queued", "scheduled", "up_for_retry", "up_for_reschedule",
                                    "deferred", "restarting")]
    retries = sum(max(0, int(t.get("try_number") or 0) - 1) for t in runs["task_instances"])
    peaks = [m for d in soak.days for m in read_metrics(soak.data, d.isoformat()) if m.get("peak_rss_bytes")]
    peak = max(peaks, key=lambda m: m["peak_rss_bytes"]) if peaks else None
    seconds = list(soak.day_seconds.values())
    unexplained = ledger_problems + compared["unexplained"]
    expected_actions = sum(len(f["expect"]["released_next_day"]) for f in soak.plan["faults"])
    if len(soak.human_actions) != expected_actions:
        unexplained.append(f"{len(soak.human_actions)} human actions, the plan's {expected_actions}")
    return {
        "shape": "embedded",
        "seed": soak.plan["seed"],
        "scale": soak.scale,
        "days": len(soak.days),
        "delivered": len(delivered),
        "in_order": in_order,
        "chained": chained,
        "identical_days": len(compared["identical_days"]),
        "faulted_days": len(compared["faulted_days"]),
        "faults": [[f["day"], f["kind"], f["system"]] for f in soak.plan["faults"]],
        "unexplained_differences": len(unexplained),
        "unexplained": unexplained,
        "human_actions": soak.human_actions,
        "notices": compared["notices"],
        "stuck_runs": len(stuck) + len(unfinished),
        "stuck": stuck + unfinished,
        "runs": len(runs["runs"]),
        "runs_failed": sorted(f"{r['dag_id']} {r['dag_run_id']}" for r in runs["runs"] if r["state"] == "failed"),
        "seconds_per_day": {"p50": _percentile(seconds, 0.5), "p95": _percentile(seconds, 0.95),
                            "each": {k: round(v, 1) for k, v in soak.day_seconds.items()}},
        "task_peak_memory_mib": round(peak["peak_rss_bytes"] / 2**20, 1) if peak else None,
        "task_peak_memory_task": f"{peak['dag_id']}.{peak['task_id']}" if peak else None,
        "retries": retries,
        "receiver_failures_injected": RECEIVER_FAILURES * sum(
            1 for f in soak.plan["faults"] if f["kind"] == "receiver_down"),
        "receiver_503_by_package": dict(sorted(refused.items())),
        "kills": soak.kills,
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
