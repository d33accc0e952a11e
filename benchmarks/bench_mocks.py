"""Mock services at scale: `make bench-mocks [SCALE=1.0]` prints build and serving figures.

Builds (or loads) the population for the scale into a temporary cache, reports
build time, cache size and peak memory, then serves the biggest feeds over HTTP
on 127.0.0.1 and reports records per second through the whole Source API
(population lookup, defects, NDJSON, HTTP, client parsing of lines).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

import httpx

from mocks.config import MockConfig
from mocks.population import PopulationSpec, load_population
from mocks.service import start_mocks
from osms.core.keys import ensure_dev_keypair


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=660)
    ap.add_argument("--date", default="2025-06-01")
    ap.add_argument("--cache", default=None, help="reuse a cache dir (default: a fresh temporary one)")
    args = ap.parse_args()
    day = dt.date.fromisoformat(args.date)
    with tempfile.TemporaryDirectory(prefix="osms-bench-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "population"
        spec = PopulationSpec(seed=args.seed, scale=args.scale)
        t = time.perf_counter()
        population = load_population(spec, cache, progress=True)
        build = time.perf_counter() - t
        t = time.perf_counter()
        load_population(spec, cache)
        reload = time.perf_counter() - t
        print(f"scale {args.scale}: {population.persons.num_rows:,} persons")
        print(f"  build {build:,.1f} s, reload from cache {reload:,.1f} s, cache {_du(cache) / 2**20:,.0f} MiB,"
              f" peak RSS {_rss_mib():,.0f} MiB")
        _, public = ensure_dev_keypair(Path(tmp) / "keys")
        cfg = MockConfig(seed=args.seed, scale=args.scale, data_dir=Path(tmp) / "mocks")
        with start_mocks(cfg, population=population, public_key_path=public) as m:
            feeds = sorted(population.feeds(), key=lambda f: -population.record_count(f[0], f[1], day))[:3]
            for system, category in feeds:
                n, pages, first = 0, 0, None
                t = time.perf_counter()
                with httpx.Client(base_url=m.sources_url, timeout=300,
                                  headers={"Authorization": f"Bearer {m.tokens[system]}"}) as c:
                    cursor = None
                    while True:
                        params = {"category": category, "as_of": day.isoformat(), "limit": 50_000}
                        if cursor:
                            params["cursor"] = cursor
                        r = c.get(f"/v1/systems/{system}/records", params=params)
                        r.raise_for_status()
                        if first is None:
                            first = time.perf_counter() - t
                        n += r.content.count(b"\n")
                        pages += 1
                        cursor = r.headers.get("x-next-cursor")
                        if not cursor:
                            break
                total = time.perf_counter() - t
                print(f"  {system}.{category}: {n:,} records in {pages} pages, {total:,.1f} s"
                      f" (first page {first:,.1f} s: day table built), {n / total:,.0f} records/s")
        print(f"  peak RSS after serving {_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
