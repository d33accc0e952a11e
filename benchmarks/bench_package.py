"""Wall time and peak memory of build_package at national scale.

    .venv/bin/python benchmarks/bench_package.py --rows 13000000 [--memory-limit 2GB] [--keep DIR]

Synthesises validated files of every (body, category) of the 2022 edition in a
temporary data directory (vectorised, valid IINs), about 10 % of a category's
persons reported by a second feed and 1 % of those with another last name, then
builds the package in a child process and prints its time and peak RSS (the
child's own, so the synthesis does not count).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from osms.core.run import Run
from osms.core import iin

from osms.core import layout
from osms.core.registry import default_registry
from osms.core.status import BodyStatus, CategoryStatus, write_status

DAY = dt.date(2025, 6, 1)
CHUNK = 1_000_000
# Rough shares of the national list (children and pensioners dominate).
WEIGHTS = {
    "children": 40, "pensioners": 20, "students": 6, "disabled": 5, "tsa_recipients": 5,
    "mothers_many_children": 4, "carer_child_under3": 4, "parental_leave": 3, "unemployed": 3,
}
_DAYS = 30_000  # birth dates spread over ~82 years; with 10,000 serials: 300 M distinct IINs
_LAST = np.array(["Ахметов", "Иванов", "Сейтқали", "Нұрланов", "Ким", "Петров", "Омаров"])
_FIRST = np.array(["Алихан", "Айгерим", "Дана", "Ерлан", "Мария", "Сергей", "Әсел"])


def _people(idx: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic persons for indices (a function of the index only): invalid IINs are dropped."""
    births = np.datetime64("1940-01-01") + (idx % _DAYS).astype("timedelta64[D]")
    serials = (idx // _DAYS) % 10_000
    sexes = np.where((idx // 7) % 2 == 0, "M", "F")
    ids, ok = iin.generate_many(births, sexes, serials)
    return {"idx": idx[ok], "iin": ids[ok], "birth": births[ok], "sex": sexes[ok]}


def _table(p: dict[str, np.ndarray], body: str, system: str, category: str, renamed: np.ndarray) -> pa.Table:
    n = len(p["idx"])
    last = _LAST[p["idx"] % len(_LAST)]
    last = np.where(renamed, np.char.add(last, "а"), last)
    return pa.table({
        "record_id": pa.array(np.char.add(f"{system}-", p["idx"].astype(str))),
        "iin": pa.array(p["iin"]),
        "last_name": pa.array(last),
        "first_name": pa.array(_FIRST[(p["idx"] // 3) % len(_FIRST)]),
        "patronymic": pa.nulls(n, pa.string()),
        "birth_date": pa.array(p["birth"], pa.date32()),
        "sex": pa.array(p["sex"]),
        "period_start": pa.array(np.datetime64("2023-01-01") + (p["idx"] % 800).astype("timedelta64[D]"), pa.date32()),
        "period_end": pa.nulls(n, pa.date32()),
        "updated_at": pa.array(np.full(n, np.datetime64("2025-05-31T12:00:00", "us")), pa.timestamp("us", tz="UTC")),
        "body": pa.array([body] * n),
        "system": pa.array([system] * n),
        "category": pa.array([category] * n),
        "as_of": pa.array([DAY] * n, pa.date32()),
    })


def synthesize(data_dir: Path, rows: int, day: dt.date = DAY) -> int:
    """Validated files and statuses for ``day`` with about ``rows`` source records; returns the records written."""
    edition = default_registry().edition_on(day)
    weights = {c.code: WEIGHTS.get(c.code, 1) for c in edition.categories}
    per_weight = rows / 1.1 / sum(weights.values())
    writers: dict[tuple[str, str], pq.ParquetWriter] = {}
    written = 0
    start = 0
    try:
        for cat in edition.categories:
            n = int(per_weight * weights[cat.code] * 1.1)  # indices; ~1/11 give no IIN
            feeds = edition.feeds_for(cat.code)
            for lo in range(start, start + n, CHUNK):
                p = _people(np.arange(lo, min(lo + CHUNK, start + n), dtype=np.int64))
                for j, f in enumerate(feeds):
                    mine = p["idx"] % len(feeds) == j
                    if j == 0 and len(feeds) > 1:
                        mine |= p["idx"] % 10 == 1  # a second report of ~10 % of the category
                    sel = {k: v[mine] for k, v in p.items()}
                    renamed = (sel["idx"] % 100 == 1) & (j == 0) & (len(feeds) > 1)
                    table = _table(sel, f.body, f.system, cat.code, renamed)
                    key = (f.body, cat.code)
                    if key not in writers:
                        path = layout.validated(data_dir, day, f.body, cat.code)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        writers[key] = pq.ParquetWriter(path, table.schema, compression="zstd")
                    writers[key].write_table(table)
                    written += table.num_rows
            start += n
    finally:
        for w in writers.values():
            w.close()
    for body in edition.bodies:
        cats = tuple(CategoryStatus(category=c.code, status="published") for c in edition.categories_of(body.code))
        write_status(data_dir, BodyStatus(body=body.code, as_of=day, edition=edition.code, categories=cats))
    return written


def _build(data_dir: Path, memory_limit: str) -> None:
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logging.getLogger("osms.package.build").addHandler(handler)
    logging.getLogger("osms.package.build").setLevel(logging.INFO)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from osms.package.build import build_package, verify_package

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    t0 = time.perf_counter()
    result = build_package(Run.of(DAY, data_dir=data_dir), signing_key_pem=pem, producer_version="bench",
                           memory_limit=memory_limit)
    took = time.perf_counter() - t0
    t1 = time.perf_counter()
    problems = verify_package(result.path, public)
    verify = time.perf_counter() - t1
    size = sum(p.stat().st_size for p in result.path.iterdir())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"build: {result.rows:,} package rows in {took:.1f} s ({result.rows / took:,.0f} rows/s),"
          f" peak RSS {peak:,.0f} MiB (memory_limit {memory_limit}), package {size / 2**20:,.0f} MiB")
    print(f"verify: {verify:.1f} s, problems: {problems or 'none'}")


def main(argv: list[str] | None = None) -> int:
    """Synthesise, then build in a child process and report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=13_000_000)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--keep", type=Path, help="use (and keep) this data directory")
    ap.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_only:
        _build(args.build_only, args.memory_limit)
        return 0
    with tempfile.TemporaryDirectory(prefix="osms-bench-package-") as tmp:
        data_dir = args.keep or Path(tmp)
        t0 = time.perf_counter()
        written = synthesize(data_dir, args.rows)
        print(f"synthesised {written:,} validated records in {time.perf_counter() - t0:.1f} s")
        subprocess.run([sys.executable, __file__, "--build-only", str(data_dir), "--memory-limit", args.memory_limit],
                       check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
