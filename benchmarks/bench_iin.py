"""IIN throughput at national scale: `make bench` prints the figures.

Scale 1.0 is about 20.3 million persons; a day's package holds about 13 million
(IIN, category) rows. Times are best of three; memory is the process's peak RSS.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from osms.core import iin  # noqa: E402


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(660)
    print(f"{'values':>12} {'generate s':>11} {'check s':>9} {'M/s':>7} {'decode s':>9}")
    for n in (1_000_000, 5_000_000, 20_300_000):
        births = np.datetime64("1935-01-01") + rng.integers(0, 33000, n).astype("timedelta64[D]")
        sexes = np.where(rng.integers(0, 2, n) == 1, "M", "F")
        t = time.perf_counter()
        ids, ok = iin.generate_many(births, sexes, rng.integers(0, 10000, n))
        gen = time.perf_counter() - t
        arr = pa.array(ids)
        del ids
        check = best_of(lambda: iin.check(arr).valid)
        decode = best_of(lambda: iin.check(arr).birth_date)
        assert iin.check(arr).valid.sum() == ok.sum()
        print(f"{n:>12,} {gen:>11.2f} {check:>9.3f} {n / check / 1e6:>7.1f} {decode:>9.3f}")
        del arr
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
