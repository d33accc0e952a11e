"""The package's gate: ``expectations/package.json`` run through GX over records.parquet before anything is signed.

Table-level rules see the whole file (its ``category`` column only); row-level rules run
on chunks of the file cut where (category, iin) changes, within the task's memory budget.
pyarrow and GX are imported inside functions: the package DAG imports this module at parse time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.package.errors import PackageGateError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["run_package_suite"]


def run_package_suite(records_path: Path, *, expected_rows: int, categories: Sequence[str], chunk_rows: int,
                      expectations_dir: Path) -> None:
    """Run ``expectations/package.json`` over records.parquet; :class:`PackageGateError` naming the failed rules.

    Table-level rules see the whole file (its ``category`` column only); row-level
    rules run on chunks of the file cut where (category, iin) changes. The file is
    sorted by (category, iin), which is checked here, so a duplicate key always
    falls inside one chunk and the per-chunk uniqueness is uniqueness of the file.
    """
    import pyarrow.parquet as pq

    from osms.quality.suites import load_suite_dict

    suite = load_suite_dict("package", expectations_dir)
    parameters = {"expected_rows": int(expected_rows), "edition_categories": sorted(categories)}
    table_rules = [e for e in suite["expectations"] if e.get("meta", {}).get("scope") == "table"]
    row_rules = [e for e in suite["expectations"] if e not in table_rules]
    failures: dict[str, dict[str, Any]] = {}

    _run_rules(suite["name"], table_rules, pq.read_table(records_path, columns=["category"]), parameters, failures)
    unsorted = 0
    last_key: tuple[str, str] | None = None
    for chunk in _key_chunks(records_path, chunk_rows):
        disorder, last_key = _disorder(chunk, last_key)
        unsorted += disorder
        _run_rules(suite["name"], row_rules, chunk, parameters, failures)

    problems = [
        # GX's exception text can quote a cell value (an IIN): it stays out of the message
        f"{rule}: {f['unexpected']:,} rows failed" if f["exception"] is None else f"{rule}: could not be evaluated"
        for rule, f in sorted(failures.items())
    ]
    if unsorted:
        problems.append(f"records.parquet is not sorted by (category, iin) at {unsorted:,} places")
    if problems:
        raise PackageGateError(
            f"the package suite failed for {records_path.parent.name}, no package is written: " + "; ".join(problems)
        )


def _run_rules(suite_name: str, expectations: list[dict[str, Any]], table: pa.Table, parameters: dict[str, Any],
               failures: dict[str, dict[str, Any]]) -> None:
    """Run some of the suite's rules over a table; add what failed to ``failures`` (rule -> unexpected, exception)."""
    from osms.quality.frames import columns_used, to_frame
    from osms.quality.runner import rule_results, run_expectations

    if not expectations:
        return
    results = rule_results(expectations, table.num_rows)
    frame = to_frame(table, columns_used(expectations) or table.column_names)
    for res in run_expectations(suite_name, expectations, frame, parameters)["results"]:
        results[res["expectation_config"]["meta"]["rule"]].add(res)
    for r in results.values():
        if r.success and r.exception is None:
            continue
        f = failures.setdefault(r.rule, {"unexpected": 0, "exception": None})
        f["unexpected"] += r.unexpected_count
        f["exception"] = f["exception"] or r.exception


def _key_chunks(records_path: Path, chunk_rows: int) -> Iterator[pa.Table]:
    """records.parquet's (iin, category) in chunks of at least ``chunk_rows`` rows (the last may be shorter), each
    cut where (category, iin) changes, so that no key is split between two chunks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    carry: pa.Table | None = None
    for batch in pq.ParquetFile(records_path).iter_batches(batch_size=chunk_rows, columns=["iin", "category"]):
        incoming = pa.Table.from_batches([batch])
        chunk = incoming if carry is None else pa.concat_tables([carry, incoming])
        if chunk.num_rows < chunk_rows:
            carry = chunk
            continue
        cut = _key_boundary(chunk, chunk_rows)
        if cut >= chunk.num_rows:  # the last key may go on in the next batch
            carry = chunk
            continue
        chunk, carry = chunk.slice(0, cut), chunk.slice(cut)
        yield chunk.combine_chunks()
    if carry is not None and carry.num_rows > 0:
        yield carry.combine_chunks()


def _disorder(chunk: pa.Table, last_key: tuple[str, str] | None) -> tuple[int, tuple[str, str]]:
    """(the places where (category, iin) goes down in ``chunk`` and from the chunk before to it, its last key)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cat, iin = chunk.column("category"), chunk.column("iin")
    unsorted = 0
    if chunk.num_rows > 1:
        a_cat, b_cat = cat.slice(0, chunk.num_rows - 1), cat.slice(1)
        a_iin, b_iin = iin.slice(0, chunk.num_rows - 1), iin.slice(1)
        ordered = pc.or_(pc.less(a_cat, b_cat), pc.and_(pc.equal(a_cat, b_cat), pc.less_equal(a_iin, b_iin)))
        unsorted += chunk.num_rows - 1 - pc.sum(pc.fill_null(ordered, False).cast(pa.int64())).as_py()
    first = (cat[0].as_py(), iin[0].as_py())
    if last_key is not None and first < last_key:
        unsorted += 1
    return unsorted, (cat[-1].as_py(), iin[-1].as_py())


def _key_boundary(chunk: pa.Table, at: int) -> int:
    """The first position at or after ``at`` where (category, iin) differs from the row before."""
    cat, iin = chunk.column("category"), chunk.column("iin")
    cut = at
    while cut < chunk.num_rows and cat[cut] == cat[cut - 1] and iin[cut] == iin[cut - 1]:
        cut += 1
    return cut
