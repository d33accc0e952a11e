"""A hostile source's page of 600 MB: the extract stops at its byte bound, within the task's memory budget.

The mock Source API serves, in a process of its own on 127.0.0.1, a feed whose first page
carries one record with a ``last_name`` of 600 MB (streamed: the mock never holds it). The
extract runs in a fresh process that has first imported what an Airflow task process holds
(Airflow's task SDK, pandas, pyarrow, Great Expectations), as in a worker; it must fail with
a message naming the limit, and its peak resident memory (``VmHWM``, the kernel's high-water
mark) must stay within ``OSMS_TASK_MEMORY_BUDGET``.

    .venv/bin/python benchmarks/bench_hostile.py [--page-mib 600] [--budget 2GiB]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extract import SyntheticSource  # noqa: E402: the same synthetic feed as the extract benchmark

DAY = dt.date(2025, 6, 1)
SYSTEM, CATEGORY = "payments", "pregnant"


def _serve(page_bytes: int, queue: mp.Queue, stop: mp.Event) -> None:
    from mocks.config import MockConfig
    from mocks.defects import DefectRates
    from mocks.faults import SystemFaults
    from mocks.runner import serving
    from mocks.sources import SourceService, create_app

    service = SourceService(SyntheticSource({CATEGORY: 50_000}), MockConfig(defects=DefectRates.none()))
    service.faults[SYSTEM] = SystemFaults(huge_page_bytes=page_bytes)
    with serving(create_app(service), name="bench-hostile") as server:
        service.served_table(SYSTEM, CATEGORY, DAY)
        queue.put((server.url, service.tokens[SYSTEM]))
        stop.wait()


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(f"{field}:"))


def _extract(url: str, token: str, out: Path, queue: mp.Queue) -> None:
    import logging

    logging.disable(logging.INFO)  # the libraries' notices as they load; the figures are printed by main
    import airflow.sdk  # noqa: F401: what a task process holds before its task starts
    import great_expectations  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    from osms.core.budget import task_budget
    from osms.orchestration.failures import is_permanent
    from osms.core.run import Run
    from osms.sources.extract import FeedExtractError, SourceEndpoint, extract_feed

    after_imports = _status_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # the high-water mark from here: what the extract itself adds to the imports
    endpoint = SourceEndpoint(url, token, page_size=50_000)
    started = time.perf_counter()
    try:
        extract_feed(endpoint, Run.of(DAY, data_dir=out.parent),
                     body="health", system=SYSTEM, category=CATEGORY, landing_path=out)
        message, permanent = "(the extract succeeded: the page was not refused)", False
    except FeedExtractError as exc:
        message, permanent = str(exc), is_permanent(exc)
    seconds = time.perf_counter() - started
    queue.put({"message": message, "permanent": permanent, "seconds": seconds, "after_imports": after_imports,
               "peak": _status_kib("VmHWM") * 1024, "budget": task_budget().total,
               "page_bound": endpoint.page_bytes(task_budget()), "landed": out.exists()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--page-mib", type=int, default=600, help="size of the hostile page (MiB)")
    ap.add_argument("--budget", default=None, help="OSMS_TASK_MEMORY_BUDGET for the extract (default: 2GiB)")
    args = ap.parse_args()
    if args.budget:
        os.environ["OSMS_TASK_MEMORY_BUDGET"] = args.budget
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(args.page_mib << 20, queue, stop), daemon=True)
    server.start()
    url, token = queue.get(timeout=600)
    print(f"source ready: {SYSTEM}.{CATEGORY}, page 1 holds one record with a last_name of {args.page_mib:,} MiB")
    try:
        with tempfile.TemporaryDirectory(prefix="osms-bench-hostile-") as tmp:
            results: mp.Queue = ctx.Queue()
            worker = ctx.Process(target=_extract, args=(url, token, Path(tmp) / f"{CATEGORY}.parquet", results))
            worker.start()
            r = results.get(timeout=1800)
            worker.join()
    finally:
        stop.set()
        server.join(10)
    mib = 2**20
    print(f"  the feed: {r['message']}")
    print(f"  failed at once (permanent, not retried): {r['permanent']}; nothing landed: {not r['landed']};"
          f" {r['seconds']:.1f} s")
    print(f"  page bound {r['page_bound'] / mib:,.0f} MiB: an eighth of the budget's working share"
          f" ({r['budget'] / mib:,.0f} MiB less 600 MiB for the interpreter and its libraries)")
    print(f"  extract process: {r['after_imports'] / mib:,.0f} MiB after a task's imports, peak {r['peak'] / mib:,.0f}"
          f" MiB (VmHWM, the extract's own share {(r['peak'] - r['after_imports']) / mib:,.0f} MiB),"
          f" budget {r['budget'] / mib:,.0f} MiB")
    ok = r["peak"] <= r["budget"] and not r["landed"] and r["permanent"] and "larger than the limit" in r["message"]
    print("  within the budget, refused with the limit named: " + ("yes" if ok else "NO"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
