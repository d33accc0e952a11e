"""extract_feed at scale: rows/s and peak memory, to show memory does not grow with feed size.

A synthetic feed (vectorised, every column type of the category) is served by the
mock Source API in a separate process on 127.0.0.1, so its tables do not count
against the extract. Each extract runs in a fresh process and reports its own
peak RSS; a feed ten times larger should need about the same memory.

    .venv/bin/python benchmarks/bench_extract.py [--rows 2000000] [--page-size 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

DAY = dt.date(2025, 6, 1)
SYSTEM = "payments"
BIG, SMALL = "pregnant", "kandases"  # both feeds of payments: one big, one a tenth of it


class SyntheticSource:
    """Feeds of a given size with every column filled, built with Arrow kernels (no per-row Python)."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes

    def feeds(self) -> tuple[tuple[str, str], ...]:
        return tuple((SYSTEM, c) for c in sorted(self.sizes))

    def records(self, system: str, category: str, as_of: dt.date):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from osms.core.registry import default_registry

        n = self.sizes[category]
        i = pa.array(np.arange(n, dtype=np.int64))
        digits = pc.utf8_lpad(i.cast(pa.string()), 9, "0")
        names = pa.array(["Әлімжанов", "Иванова", "Сейітқали", "Nurlanov", "Құдайбергенова"])
        cols = {}
        for col in default_registry().edition_on(as_of).category(category).record_columns:
            k = pa.array(np.arange(n) % 9000)
            if col.name == "record_id":
                values = pc.binary_join_element_wise("R-", digits, "")
            elif col.type == "iin":
                values = pc.binary_join_element_wise("790", digits, "")
            elif col.type == "date":
                values = pa.array((np.datetime64("1960-01-01") + np.arange(n) % 20000).astype("datetime64[D]"))
            elif col.type == "timestamp":
                values = pa.array(1_700_000_000 + np.arange(n) % 86400, pa.int64()).cast(pa.timestamp("s", tz="UTC"))
            elif col.type == "int":
                values = pa.array((np.arange(n) % 40).astype(np.int32))
            elif col.type == "bool":
                values = pa.array(np.arange(n) % 2 == 0)
            elif col.type == "enum":
                values = pc.take(pa.array(list(col.values)), pa.array(np.arange(n) % len(col.values)))
            elif col.name == "patronymic":
                values = pa.nulls(n, pa.string())
            elif "name" in col.name:
                values = pc.take(names, pc.remainder(k, 5))
            else:
                values = pa.repeat(pa.scalar("KZ"), n)
            cols[col.name] = values
        return pa.table(cols)


def _serve(sizes: dict[str, int], queue: mp.Queue, stop: mp.Event) -> None:
    from mocks.config import MockConfig
    from mocks.defects import DefectRates
    from mocks.runner import serving
    from mocks.sources import SourceService, create_app

    service = SourceService(SyntheticSource(sizes), MockConfig(defects=DefectRates.none()))
    with serving(create_app(service), name="bench-sources") as server:
        for category in sizes:  # build the day tables before timing
            service.served_table(SYSTEM, category, DAY)
        queue.put((server.url, service.tokens[SYSTEM]))
        stop.wait()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _extract(url: str, token: str, category: str, page_size: int, out: Path, queue: mp.Queue) -> None:
    from osms.core.run import Run
    from osms.sources.extract import SourceEndpoint, extract_feed

    before = _rss_mib()
    result = extract_feed(SourceEndpoint(url, token, page_size=page_size), Run.of(DAY, data_dir=out.parent),
                          body="labour", system=SYSTEM,
                          category=category, landing_path=out)
    queue.put((result.as_dict(), before, _rss_mib(), out.stat().st_size))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--page-size", type=int, default=10_000)
    args = ap.parse_args()
    sizes = {BIG: args.rows, SMALL: max(1, args.rows // 10)}
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(sizes, queue, stop), daemon=True)
    t = time.perf_counter()
    server.start()
    url, token = queue.get(timeout=600)
    print(f"source ready in {time.perf_counter() - t:.1f} s: {SYSTEM}.{BIG} {sizes[BIG]:,} rows,"
          f" {SYSTEM}.{SMALL} {sizes[SMALL]:,} rows, page size {args.page_size:,}")
    try:
        with tempfile.TemporaryDirectory(prefix="osms-bench-extract-") as tmp:
            for category in (SMALL, BIG):
                results: mp.Queue = ctx.Queue()
                worker = ctx.Process(target=_extract,
                                     args=(url, token, category, args.page_size, Path(tmp) / f"{category}.parquet",
                                           results))
                worker.start()
                r, before, peak, size = results.get(timeout=1800)
                worker.join()
                print(f"  {category}: {r['rows']:,} rows in {r['pages']} pages, {r['bytes_received'] / 2**20:,.0f} MiB"
                      f" NDJSON -> {size / 2**20:,.1f} MiB Parquet in {r['seconds']:.1f} s,"
                      f" {r['rows'] / r['seconds']:,.0f} rows/s; peak RSS {peak:,.0f} MiB"
                      f" (after imports {before:,.0f} MiB)")
    finally:
        stop.set()
        server.join(10)
    sys.exit(0)


if __name__ == "__main__":
    main()
