"""Build the synthetic population at a scale and report time, size, memory and serving speed.

    .venv/bin/python benchmarks/bench_population.py [SCALE]   # default 1.0
"""

from __future__ import annotations

import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocks.population import PopulationSpec, load_population  # noqa: E402


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    spec = PopulationSpec(scale=scale)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pop = load_population(spec, Path(tmp), progress=True)
        build = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (Path(tmp) / spec.key).iterdir())
        t0 = time.perf_counter()
        load_population(spec, Path(tmp))
        reload = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        members = sum(t.num_rows for t in pop.memberships.values())
        print(f"scale {scale:g}: {pop.persons.num_rows:,} persons, {members:,} memberships")
        print(f"build {build:.1f} s, reload from cache {reload:.1f} s, cache {size / 2**20:.1f} MiB, peak RSS {peak:.2f} GiB")
        day = dt.date(2025, 6, 1)
        counts = {f: pop.record_count(*f, day) for f in pop.feeds()}
        biggest = max(counts, key=counts.get)
        t0 = time.perf_counter()
        n = 0
        for k in range(3):
            n += pop.records(*biggest, day + dt.timedelta(days=k)).num_rows
        dt_s = (time.perf_counter() - t0) / 3
        print(f"records() for {biggest[0]}/{biggest[1]}: {n // 3:,} rows in {dt_s:.2f} s ({n / 3 / dt_s:,.0f} rows/s)")
        t0 = time.perf_counter()
        total = sum(pop.records(*f, day).num_rows for f in pop.feeds())
        print(f"every feed on {day}: {total:,} rows in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
