"""A backfill, measured: ``make bench-backfill DAYS=30 SCALE=0.1``.

    .venv/bin/python benchmarks/bench_backfill.py [--days 30] [--scale 0.1] [--start 2026-03-02] [--root bench-data]

What an operator's backfill after an outage replays: DAYS consecutive days, in
order, each chained on the one before (the package DAG of D waits for D-1's
delivery), on the real DAGs and the real files: the mock sources and receiver
on 127.0.0.1 at SCALE (started once, as they would stay up), the 8 agency DAGs
and the package DAG of each day on warm Airflow workers (``dag.test()`` on the
embedded SQLite, two side by side on this machine's two cores, as ``osms run``
runs them), the workers kept warm from one day to the next.

Per day: wall time, delivered or not, task-seconds per stage, and Airflow's own
share (the DAG runs' seconds less their tasks' seconds: parsing, scheduling
loops and task start-up); at the end time per day p50/p95 and in all, the load
average beside them and the workers' peak memory. Written to
``<root>/backfill.json``. Nothing here passes or fails a test; run it alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_national import ROOT, STAGES, Sampler, prepare  # noqa: E402

GIB = 2**30


def day_figures(data: Path, day: dt.date, results: list[Any], wall: float) -> dict[str, Any]:
    """One day's figures from its DAG runs and its task metrics."""
    from osms.core import layout
    from osms.orchestration.task_metrics import read_metrics

    metrics = [m for m in read_metrics(data, day.isoformat()) if m.get("state") == "success"]
    stages = {stage: round(sum(m["wall_seconds"] for m in metrics if match(m["task_id"])), 2)
              for stage, match in STAGES.items()}
    dag_seconds = sum(r.seconds for r in results)
    task_seconds = sum(m["wall_seconds"] for m in metrics)
    return {
        "day": day.isoformat(), "wall_seconds": round(wall, 2),
        "delivered": (layout.package_dir(data, day) / "receipt.json").exists(),
        "dags_ok": sum(1 for r in results if r.ok), "dags": len(results),
        "stage_task_seconds": stages, "task_seconds": round(task_seconds, 2),
        "airflow_seconds": round(dag_seconds - task_seconds, 2),
        "peak_task_rss": max((m.get("peak_rss_bytes") or 0 for m in metrics), default=0),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(days: int, scale: float, start: dt.date, root: Path, workers: int | None) -> dict[str, Any]:
    """Replay ``days`` days from ``start`` in order; their figures."""
    from mocks.config import MockConfig
    from mocks.service import start_mocks
    from osms.dev.local_run import (
        DagWorkers,
        airflow_env,
        default_workers,
        run_day_dags,
        signing_env,
        start_migrate,
        wait_migrate,
    )

    logging.getLogger("mocks").setLevel(logging.WARNING)  # the receiver's own log is in its state dir
    data = root / f"backfill-{scale:g}"
    population_seconds = prepare(data, scale)
    migrating = start_migrate(airflow_env(data, signing_env()))
    per_day: list[dict[str, Any]] = []
    started = time.perf_counter()
    with start_mocks(MockConfig(data_dir=data / "mocks", scale=scale)) as services, \
            Sampler(os.getpid()) as sampler:
        env = airflow_env(data, {**services.airflow_env(), **signing_env()})
        with DagWorkers(env, workers or default_workers()) as pool:
            wait_migrate(migrating)
            for i in range(days):
                day = start + dt.timedelta(days=i)
                t0 = time.perf_counter()
                results, _ = run_day_dags(day, data, env, pool=pool, say=lambda _: None)
                fig = day_figures(data, day, results, time.perf_counter() - t0)
                per_day.append(fig)
                s = fig["stage_task_seconds"]
                delivered = "delivered" if fig["delivered"] else "NOT delivered"
                print(f"  {fig['day']}  {fig['wall_seconds']:7.1f} s  {delivered}"
                      f"  DAGs {fig['dags_ok']}/{fig['dags']}  task-s: extract {s['extract']:.0f}"
                      f" validate {s['validate']:.0f} package {s['package']:.0f} deliver {s['deliver']:.0f};"
                      f" Airflow's own {fig['airflow_seconds']:.0f} s", flush=True)
    total = time.perf_counter() - started
    walls = [d["wall_seconds"] for d in per_day]
    workers_rss = [r for p, r in sampler.peak_rss.items() if "local_run worker" in sampler.names.get(p, "")]
    return {
        "days": days, "scale": scale, "start": start.isoformat(), "population_seconds": population_seconds,
        "total_seconds": round(total, 1), "day_p50": _pct(walls, 0.5), "day_p95": _pct(walls, 0.95),
        "day_mean": statistics.fmean(walls), "delivered": sum(d["delivered"] for d in per_day),
        "load_mean": statistics.fmean(sampler.loads) if sampler.loads else None,
        "load_max": max(sampler.loads) if sampler.loads else None,
        "worker_peak_rss": max(workers_rss, default=0),
        "task_seconds": round(sum(d["task_seconds"] for d in per_day), 1),
        "airflow_seconds": round(sum(d["airflow_seconds"] for d in per_day), 1),
        "per_day": per_day,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the backfill, print and store its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--start", default="2026-03-02")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--root", default=str(ROOT / "bench-data"))
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    print(f"backfill of {args.days} days from {args.start} at scale {args.scale} (the population's build excluded):")
    fig = run(args.days, args.scale, dt.date.fromisoformat(args.start), root, args.workers)
    print(f"\n{fig['delivered']}/{fig['days']} days delivered in order in {fig['total_seconds']:,.0f} s"
          f" ({fig['total_seconds'] / 60:.1f} min); per day p50 {fig['day_p50']:.1f} s, p95 {fig['day_p95']:.1f} s;"
          f" load average mean {fig['load_mean'] or 0:.2f}, max {fig['load_max'] or 0:.2f} (2 cores);"
          f" workers' peak {fig['worker_peak_rss'] / GIB:.2f} GiB")
    print(f"task-seconds {fig['task_seconds']:,.0f}; Airflow's own (DAG runs less their tasks)"
          f" {fig['airflow_seconds']:,.0f} s")
    (root / "backfill.json").write_text(json.dumps(fig, indent=1))
    print(f"figures: {root / 'backfill.json'}")
    return 0 if fig["delivered"] == fig["days"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
