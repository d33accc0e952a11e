"""The whole country's daily job, measured: ``make bench-national``.

    .venv/bin/python benchmarks/bench_national.py [--scales 0.1,1.0] [--date 2026-03-02] [--root bench-data]

For each scale, the real thing: ``osms run --scale S`` (the mock sources and
receiver on 127.0.0.1, the 8 agency DAGs and the package DAG on Airflow's
embedded SQLite, the real files), in a fresh data folder that keeps only the
cached population (its build is timed apart and excluded). While it runs, the
machine's load and each process's memory are sampled; afterwards the task
metrics (``osms.orchestration.task_metrics``) give, per stage and for the biggest tasks, wall
time, CPU time, rows per second and peak memory of the task's process.

Measured in the same run, next to the pipeline's figures:

- the package's I/O floor: pyarrow reading every validated file of the date and
  writing one zstd Parquet file (the package build must stay within 3 times it);
- validation against plain Great Expectations on the same landing file and suite
  (enlightenment/nedb/children): one GX ``ValidationDefinition.run`` over one
  pandas DataFrame, the path of the GX provider's DataFrame operator, each in a
  fresh process, imports excluded;
- growth between the scales: time per stage against rows, and memory per task.

Nothing here is a pass/fail test: figures are printed, and written to
``<root>/national.json``. Run it alone on the machine (it uses both cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OSMS = str(Path(sys.executable).with_name("osms"))
GIB = 2**30
TASK_LIMIT = 2.5 * GIB
REFERENCE_FEED = ("enlightenment", "nedb", "children")

STAGES = {
    "extract": lambda t: t.split(".")[-1].startswith("extract_"),
    "validate": lambda t: t.endswith(".validate") or t == "validate",
    "publish status": lambda t: t == "publish_status",
    "package": lambda t: t == "build_package",
    "Data Docs": lambda t: t == "data_docs",
    "deliver": lambda t: t == "deliver",
}


# --------------------------------------------------------------------------- sampling


class Sampler:
    """Load average and the resident size and CPU time of the run's processes, sampled every second."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.loads: list[float] = []
        self.peak_rss: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            try:
                self.loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
            except OSError:
                pass
            for pid in self._tree():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    status = Path(f"/proc/{pid}/status").read_text()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
                except OSError:
                    continue
                rss = next((int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmRSS:")), 0)
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
                self.cpu[pid] = (int(stat[11]) + int(stat[12])) / tick  # utime + stime of the process itself
                self.names[pid] = cmd
            self._stop.wait(1.0)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int(Path(d, "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out


# --------------------------------------------------------------------------- one scale


def prepare(data: Path, scale: float, seed: int = 660) -> float:
    """A fresh data folder that keeps the cached population; build it if missing. Returns the build seconds."""
    if data.exists():
        for child in data.iterdir():
            if child.name != "mocks":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for child in (data / "mocks").iterdir() if (data / "mocks").exists() else ():
            if child.name != "population":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    code = ("from pathlib import Path; from mocks.population import PopulationSpec, load_population; "
            f"load_population(PopulationSpec(seed={seed}, scale={scale}), Path({str(data / 'mocks' / 'population')!r}))")
    subprocess.run([PY, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def run_scale(data: Path, scale: float, day: dt.date) -> dict[str, Any]:
    """``osms run`` at one scale, sampled; the run's figures."""
    log = data / "osms-run.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen([OSMS, "run", "--date", day.isoformat(), "--data-dir", str(data), "--scale", str(scale)],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        with Sampler(proc.pid) as sampler:
            code = proc.wait()
    wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    dags_wall = next((float(line.split()[3].replace(",", "")) for line in text.splitlines()
                      if line.strip().startswith("all DAGs in")), None)
    workers = {p: r for p, r in sampler.peak_rss.items() if "local_run worker" in sampler.names.get(p, "")}
    # each DAG run's seconds as osms run prints them ("[3/9] agency_labour  done in 41 s")
    dag_seconds = {m.group(1): float(m.group(2).replace(",", ""))
                   for m in re.finditer(r"\[\d+/\d+\]\s+(\S+)\s+(?:done|FAILED) in ([\d,.]+) s", text)}
    return {
        "scale": scale, "exit_code": code, "wall_seconds": wall, "dags_wall_seconds": dags_wall,
        "load_mean": statistics.fmean(sampler.loads) if sampler.loads else None,
        "load_max": max(sampler.loads) if sampler.loads else None,
        "mocks_cpu_seconds": sampler.cpu.get(proc.pid),
        "mocks_peak_rss": sampler.peak_rss.get(proc.pid),
        "worker_peak_rss": max(workers.values()) if workers else None,
        "worker_cpu_seconds": sum(sampler.cpu.get(p, 0.0) for p in workers),
        "dag_seconds": dag_seconds,
        "log": str(log),
    }


def task_figures(data: Path, day: dt.date) -> list[dict[str, Any]]:
    """Every task's metrics, with the rows it handled."""
    import pyarrow.parquet as pq

    from osms.core import layout
    from osms.core.registry import default_registry
    from osms.core.status import read_status
    from osms.orchestration.task_metrics import read_metrics

    edition = default_registry().edition_on(day)
    statuses = {b.code: read_status(data, day, b.code) for b in edition.bodies}
    out = []
    for m in read_metrics(data, day.isoformat()):
        body = m["dag_id"].removeprefix("agency_")
        task = m["task_id"]
        rows = None
        if task.split(".")[-1].startswith("extract_"):
            category, system = task.split(".")[0], task.split(".")[-1].removeprefix("extract_")
            path = layout.landing(data, day, body, system, category)
            rows = pq.ParquetFile(path).metadata.num_rows if path.exists() else None
        elif task.endswith(".validate") and statuses.get(body):
            try:
                rows = statuses[body].category(task.split(".")[0]).rows_in
            except KeyError:
                rows = None
        elif task == "build_package":
            q = json.loads((layout.package_dir(data, day) / "quality.json").read_text())
            rows = sum(b["rows_used"] for c in q["categories"].values() for b in c["bodies"].values())
        elif task == "deliver":
            rows = pq.ParquetFile(layout.package_dir(data, day) / "records.parquet").metadata.num_rows
        out.append({**m, "rows": rows})
    return out


def stage_figures(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: task-seconds, CPU, span (first start to last end), rows, rows/s per task process, peak memory."""
    out = {}
    for stage, match in STAGES.items():
        ts = [t for t in tasks if match(t["task_id"]) and t["state"] == "success"]
        if not ts:
            continue
        rows = sum(t["rows"] or 0 for t in ts)
        task_seconds = sum(t["wall_seconds"] for t in ts)
        starts = [t["started_at"] for t in ts if t.get("started_at")]
        ends = [t["ended_at"] for t in ts if t.get("ended_at")]
        out[stage] = {
            "tasks": len(ts), "task_seconds": task_seconds, "cpu_seconds": sum(t["cpu_seconds"] for t in ts),
            "span_seconds": (max(ends) - min(starts)) if starts and ends else None,
            "rows": rows, "rows_per_second": rows / task_seconds if task_seconds and rows else None,
            "peak_rss": max(t["peak_rss_bytes"] or 0 for t in ts),
            # the task's own memory: its process's peak less what the (warm) process held when it began
            "own_rss": max((t["peak_rss_bytes"] or 0) - (t.get("start_rss_bytes") or 0) for t in ts),
        }
    return out


# --------------------------------------------------------------------------- same-run references


def io_floor(data: Path, day: dt.date) -> dict[str, Any]:
    """pyarrow reading every validated file of D and writing one zstd Parquet: the package's I/O floor."""
    code = f"""
import glob, json, time
import pyarrow as pa, pyarrow.parquet as pq
files = sorted(glob.glob({str(data / 'validated' / day.isoformat() / '*' / '*.parquet')!r}))
schema = pa.unify_schemas([pq.read_schema(f) for f in files])  # every file's columns, one file
t0 = time.perf_counter()
rows = 0
with pq.ParquetWriter({str(data / 'tmp' / 'io-floor.parquet')!r}, schema, compression="zstd") as writer:
    for f in files:
        t = pq.read_table(f)
        rows += t.num_rows
        cols = [t.column(n) if n in t.column_names else pa.nulls(t.num_rows, schema.field(n).type) for n in schema.names]
        writer.write_table(pa.Table.from_arrays(cols, schema=schema))
print(json.dumps({{"files": len(files), "rows": rows, "seconds": time.perf_counter() - t0}}))
"""
    (data / "tmp").mkdir(exist_ok=True)
    out = subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    (data / "tmp" / "io-floor.parquet").unlink(missing_ok=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def validation_reference(data: Path, day: dt.date) -> dict[str, Any]:
    """The project's validation and plain GX on the same landing file and suite, each in a fresh process."""
    from osms.core import layout

    body, system, category = REFERENCE_FEED
    landing = layout.landing(data, day, body, system, category)
    scratch = data / "tmp" / "validation-reference"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "landing").mkdir(parents=True)
    ours = f"""
import datetime as dt, json, resource, time
from pathlib import Path
import great_expectations, pandas, pyarrow, duckdb  # imports are not what is measured
import osms.quality.runner, osms.quality.frames
from osms.core.run import Run
from osms.quality.validate import validate_category
t0 = time.perf_counter(); c0 = time.process_time()
o = validate_category(Run.of(dt.date.fromisoformat({day.isoformat()!r}), data_dir=Path({str(scratch)!r})),
                      body={body!r}, category={category!r}, landing_paths=[Path({str(landing)!r})])
print(json.dumps({{"rows": o.rows_in, "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""
    plain = f"""
import datetime as dt, json, resource, time
import great_expectations as gx, pandas, pyarrow.parquet as pq
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
import osms.quality.expectations  # the project's custom IIN expectations, which the suite names
from osms.quality.suites import load_suite_dict, suite_parameters
day = dt.date.fromisoformat({day.isoformat()!r})
suite = load_suite_dict({category!r})
params = suite_parameters(suite, day, "2026" if day >= dt.date(2026, 1, 1) else "2022")
ctx = gx.get_context(mode="ephemeral"); ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
bd = ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
s = ctx.suites.add(gx.ExpectationSuite(name="s", expectations=[ExpectationConfiguration(
    type=e["type"], kwargs=e["kwargs"], meta=e.get("meta"), severity=e.get("severity", "critical")).to_domain_obj()
    for e in suite["expectations"]]))
vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="v", data=bd, suite=s))
t0 = time.perf_counter(); c0 = time.process_time()
df = pq.read_table({str(landing)!r}).to_pandas()
vd.run(batch_parameters={{"dataframe": df}}, expectation_parameters=params, result_format={{"result_format": "COMPLETE"}})
print(json.dumps({{"rows": len(df), "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""
    result = {}
    for name, code in (("osms", ours), ("plain_gx", plain)):
        out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            result[name] = {"error": out.stderr[-500:]}
            continue
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(scratch, ignore_errors=True)
    if "seconds" in result.get("osms", {}) and "seconds" in result.get("plain_gx", {}):
        result["speedup"] = (result["osms"]["rows"] / result["osms"]["seconds"]) / (
            result["plain_gx"]["rows"] / result["plain_gx"]["seconds"])
    return result


# --------------------------------------------------------------------------- printing


def _mib(b: float | None) -> str:
    return f"{b / 2**20:,.0f} MiB" if b else "-"


def _rate(r: float | None) -> str:
    return f"{r:,.0f}/s" if r else "-"


def print_scale(fig: dict[str, Any]) -> None:
    """One scale's figures."""
    run = fig["run"]
    print(f"\n=== scale {run['scale']}  ({fig['population_seconds']:.0f} s to build or load the population, excluded)")
    print(f"osms run: exit {run['exit_code']}, {run['wall_seconds']:,.0f} s wall in all, DAGs {run['dags_wall_seconds']} s;"
          f" load average during the run: mean {run['load_mean']:.2f}, max {run['load_max']:.2f} (2 cores)")
    print(f"mocks (sources and receiver, in the osms run process): {run['mocks_cpu_seconds'] or 0:,.0f} s CPU,"
          f" peak {_mib(run['mocks_peak_rss'])}")
    print(f"Airflow workers: {run['worker_cpu_seconds']:,.0f} s CPU, highest process peak {_mib(run['worker_peak_rss'])}"
          f" (limit {_mib(TASK_LIMIT)})")
    print(f"{'stage':<15} {'tasks':>5} {'task-s':>8} {'span s':>7} {'CPU s':>8} {'rows':>12} {'rows/s':>12}"
          f" {'peak task':>10} {'its own':>10}")
    for stage, s in fig["stages"].items():
        print(f"{stage:<15} {s['tasks']:>5} {s['task_seconds']:>8.1f} {s['span_seconds'] or 0:>7.1f}"
              f" {s['cpu_seconds']:>8.1f} {s['rows'] or 0:>12,} {_rate(s['rows_per_second']):>12} {_mib(s['peak_rss']):>10}"
              f" {_mib(s['own_rss']):>10}")
    dag_total = sum(run.get("dag_seconds", {}).values())
    task_total = fig.get("task_seconds_all") or 0.0
    if dag_total:
        print(f"where the DAG runs' {dag_total:,.0f} s went: tasks {task_total:,.0f} s"
              f" ({100 * task_total / dag_total:.0f} %), Airflow's own (parsing, scheduling loops, task start-up and"
              f" its listeners) {dag_total - task_total:,.0f} s ({100 * (dag_total - task_total) / dag_total:.0f} %)")
    print("biggest tasks:")
    for t in fig["biggest"]:
        rate = t["rows"] / t["wall_seconds"] if t["rows"] and t["wall_seconds"] else None
        print(f"  {t['dag_id'] + '.' + t['task_id']:<52} {t['wall_seconds']:>7.1f} s wall {t['cpu_seconds']:>7.1f} s CPU"
              f" {t['rows'] or 0:>11,} rows {_rate(rate):>11} {_mib(t['peak_rss_bytes']):>10}"
              f" (own {_mib((t['peak_rss_bytes'] or 0) - (t.get('start_rss_bytes') or 0))})")
    floor = fig["io_floor"]
    build = fig["stages"].get("package", {}).get("task_seconds")
    print(f"package I/O floor (pyarrow: {floor['files']} validated files, {floor['rows']:,} rows, read + one zstd write):"
          f" {floor['seconds']:.1f} s; build_package {build or 0:.1f} s = {build / floor['seconds'] if build else 0:.2f}x")
    ref = fig["validation"]
    if "speedup" in ref:
        o, p = ref["osms"], ref["plain_gx"]
        print(f"validation of {'/'.join(REFERENCE_FEED)} ({o['rows']:,} rows), same file and suite:"
              f" osms {o['seconds']:.1f} s ({o['rows'] / o['seconds']:,.0f} rows/s, peak {_mib(o['peak_rss'])});"
              f" plain GX {p['seconds']:.1f} s ({p['rows'] / p['seconds']:,.0f} rows/s, peak {_mib(p['peak_rss'])});"
              f" {ref['speedup']:.2f}x the rows per second")
    else:
        print(f"validation reference: {ref}")


def print_growth(small: dict[str, Any], big: dict[str, Any]) -> None:
    """Time per stage against rows between two scales, and memory per task."""
    print(f"\n=== growth from scale {small['run']['scale']} to {big['run']['scale']}")
    for stage in big["stages"]:
        a, b = small["stages"].get(stage), big["stages"][stage]
        if not a or not a["rows"] or not b["rows"]:
            continue
        rows_x, time_x = b["rows"] / a["rows"], b["task_seconds"] / a["task_seconds"]
        verdict = "ok" if time_x <= 1.1 * rows_x else "OVER"
        print(f"  {stage:<15} rows x{rows_x:5.1f}  time x{time_x:5.1f} ({verdict}: at most x{1.1 * rows_x:.1f})"
              f"  peak task process {_mib(a['peak_rss'])} -> {_mib(b['peak_rss'])},"
              f" the task's own {_mib(a['own_rss'])} -> {_mib(b['own_rss'])}")


def main(argv: list[str] | None = None) -> int:
    """Run every scale, print and store the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="0.1,1.0")
    ap.add_argument("--date", default="2026-03-02")
    ap.add_argument("--root", default=str(ROOT / "bench-data"))
    args = ap.parse_args(argv)
    day = dt.date.fromisoformat(args.date)
    root = Path(args.root).resolve()
    figures = []
    for scale in [float(s) for s in args.scales.split(",")]:
        data = root / f"national-{scale:g}"
        population = prepare(data, scale)
        run = run_scale(data, scale, day)
        tasks = task_figures(data, day)
        fig = {"run": run, "population_seconds": population, "stages": stage_figures(tasks),
               "task_seconds_all": sum(t["wall_seconds"] for t in tasks),
               "biggest": sorted(tasks, key=lambda t: -t["wall_seconds"])[:8],
               "io_floor": io_floor(data, day), "validation": validation_reference(data, day)}
        figures.append(fig)
        print_scale(fig)
    for small, big in zip(figures, figures[1:], strict=False):
        print_growth(small, big)
    (root / "national.json").write_text(json.dumps(figures, indent=1, default=str))
    print(f"\nfigures: {root / 'national.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
