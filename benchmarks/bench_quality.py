"""Throughput and peak memory of validate_category on synthetic children records.

    .venv/bin/python benchmarks/bench_quality.py --rows 1000000 [--chunk-rows 1000000]

Builds one landing file of clean children records (vectorised, valid IINs) with
0.1 % of rows broken, validates it and prints rows/s and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from osms.core.run import Run
from osms.core import iin
from osms.quality.validate import validate_category

DAY = dt.date(2025, 6, 1)


def children(n: int, seed: int = 7) -> pa.Table:
    """n children records of one system, with 0.1 % bad check digits."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    births = np.datetime64("2007-07-01") + (i % 6500).astype("timedelta64[D]")  # with the serial below: unique IINs
    sexes = np.where(rng.random(n) < 0.5, "M", "F")
    serials = (i // 6500 * 7) % 10000
    ids, ok = iin.generate_many(births, sexes, serials)
    while not ok.all():
        serials = np.where(ok, serials, (serials + 1) % 10000)
        ids, ok = iin.generate_many(births, sexes, serials)
    bad = rng.random(n) < 0.001
    ids = np.where(bad, np.char.add(np.char.ljust(ids, 11).astype("<U11"), "0"), ids)
    period_start = np.datetime64("2023-01-01") + rng.integers(0, 800, n).astype("timedelta64[D]")
    return pa.table(
        {
            "record_id": pa.array(np.char.add("NEDB-", np.arange(n).astype(str))),
            "iin": pa.array(ids),
            "last_name": pa.array(np.where(sexes == "M", "Ахметов", "Ахметова")),
            "first_name": pa.array(np.where(sexes == "M", "Алихан", "Айгерим")),
            "patronymic": pa.nulls(n, pa.string()),
            "birth_date": pa.array(births.astype("datetime64[D]"), pa.date32()),
            "sex": pa.array(sexes),
            "period_start": pa.array(period_start, pa.date32()),
            "period_end": pa.nulls(n, pa.date32()),
            "updated_at": pa.array(np.full(n, np.datetime64("2025-05-31T12:00:00", "us")), pa.timestamp("us", tz="UTC")),
            "care_status": pa.array(np.where(rng.random(n) < 0.98, "family", "orphan")),
            "body": pa.array(["enlightenment"] * n),
            "system": pa.array(["nedb"] * n),
            "category": pa.array(["children"] * n),
            "as_of": pa.array([DAY] * n, pa.date32()),
        }
    )


def main(argv: list[str] | None = None) -> int:
    """Build, validate, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        path = data / "landing" / DAY.isoformat() / "enlightenment" / "nedb" / "children.parquet"
        path.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        pq.write_table(children(args.rows), path, compression="zstd")
        built = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        outcome = validate_category(
            Run.of(DAY, data_dir=data), body="enlightenment", category="children", landing_paths=[path],
            chunk_rows=args.chunk_rows,
        )
        took = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows               {outcome.rows_in:,} (built in {built:.1f} s)")
    print(f"chunk rows         {args.chunk_rows:,}")
    print(f"verdict            {outcome.verdict} ({outcome.rows_quarantined:,} quarantined: {outcome.quarantined_by_rule})")
    print(f"validate_category  {took:.1f} s = {outcome.rows_in / took:,.0f} rows/s")
    print(f"peak RSS           {peak:,.0f} MiB (before validating {rss_before:,.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
