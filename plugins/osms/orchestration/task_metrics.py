"""What each task cost: wall time, CPU time and peak memory of its process.

An Airflow listener (registered by ``plugins/osms_task_metrics_plugin.py``), so
it measures every task the same way whoever runs it: a LocalExecutor or Celery
task process, or ``dag.test()`` in ``osms run``'s warm workers. At a task's
start the process's peak resident size is reset (Linux's ``clear_refs``), so the
peak read at its end is this task's, also in a process that ran others before.
One line goes to the task's log, and ``metrics/<D>/<dag_id>/<task_id>.json``
(counts only, no data) is what ``make bench-national`` and ``osms run`` read.

After each task the process gives its freed memory back (Python's garbage, the
Arrow pool's and the C allocator's free pages): a worker that runs many tasks
would otherwise carry the biggest one's footprint into every later one.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

_started: dict[str, tuple[float, float, float, int | None]] = {}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss() -> int | None:
    """The process's peak resident size since the last reset, in bytes (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss() -> int | None:
    """The process's resident size now, in bytes (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:")), None)
    except OSError:
        return None


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # 5: reset the peak resident set size to the current one
    except OSError:
        pass


def _key(ti: Any) -> str:
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Note the start; reset the process's peak memory."""
    _reset_peak_rss()
    _started[_key(task_instance)] = (time.perf_counter(), _cpu(), time.time(), _peak_rss())


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Record a succeeded task's cost."""
    _finish(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """Record a failed try's cost."""
    _finish(task_instance, "failed")


def release_memory() -> None:
    """Give freed memory back to the system: Arrow's pool, glibc's free pages, and Python's cyclic garbage
    when the process holds much (a full collection costs a few tenths of a second with GX loaded)."""
    import ctypes
    import gc
    import sys

    from osms.core.budget import task_budget

    rss = _rss()
    if rss is not None and rss > task_budget().total // 2:
        gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _finish(ti: Any, state: str) -> None:
    started = _started.pop(_key(ti), None)
    if started is None:
        return
    release_memory()
    try:
        metrics = {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "try_number": getattr(ti, "try_number", None),
            "state": state,
            "wall_seconds": round(time.perf_counter() - started[0], 3),
            # when, so that a benchmark can tell how the tasks overlapped (not part of any package)
            "started_at": round(started[2], 3),
            "ended_at": round(time.time(), 3),
            "cpu_seconds": round(_cpu() - started[1], 3),
            "peak_rss_bytes": _peak_rss(),
            # what the process held when the task began (a warm worker keeps its imports and some of
            # what earlier tasks allocated): the task's own memory is the peak less this
            "start_rss_bytes": started[3],
        }
        log.info("task cost: %.1f s wall, %.1f s CPU, peak memory %.0f MiB", metrics["wall_seconds"],
                 metrics["cpu_seconds"], (metrics["peak_rss_bytes"] or 0) / 2**20)
        _write(ti, metrics)
    except Exception as exc:  # noqa: BLE001: measuring must never fail a task
        log.warning("task metrics not recorded: %s", type(exc).__name__)


def _write(ti: Any, metrics: dict[str, Any]) -> None:
    from osms.core import layout
    from osms.core.dates import run_day
    from osms.core.files import write_bytes_atomic

    day = run_day(ti.get_template_context())
    path = layout.paths().task_metrics(day, ti.dag_id, ti.task_id)
    write_bytes_atomic((json.dumps(metrics, sort_keys=True) + "\n").encode(), path, mode=0o644)


def read_metrics(data_dir: Path, day: Any) -> list[dict[str, Any]]:
    """Every task's recorded cost for D."""
    from osms.core import layout

    out = []
    for path in layout.Paths(Path(data_dir)).tasks_metrics(day):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out
