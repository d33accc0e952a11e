"""DuckDB within a task's budget: joins, aggregates and sorts beyond the limit spill to a private folder.

Spill files hold the rows being sorted (names and IINs), so the folder is 0700 and DuckDB
creates its files under umask 077 (0600), whatever the process's umask was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from osms.core.files import private_dir, private_umask

if TYPE_CHECKING:
    import duckdb

__all__ = ["iin_range_sql", "spilling_duckdb"]


@contextmanager
def spilling_duckdb(spill: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB whose work beyond ``memory_limit`` spills to ``spill`` (0700, files 0600)."""
    import duckdb

    private_dir(Path(spill).parent)
    with private_umask():
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET memory_limit = ?", [memory_limit])
            con.execute("SET temp_directory = ?", [str(spill)])
            con.execute("SET preserve_insertion_order = false")  # order comes from ORDER BY only
            yield con
        finally:
            con.close()


def iin_range_sql(lo: str | None, hi: str | None) -> tuple[str, list[str]]:
    """SQL over ``iin`` for [lo, hi), and its parameters; the last range (``hi`` None) also holds missing IINs, so
    ranges that split a file by IIN between them hold every row once."""
    parts, params = [], []
    if lo is not None:
        parts.append("iin >= ?")
        params.append(lo)
    if hi is not None:
        parts.append("iin < ?")
        params.append(hi)
    if not parts:
        return "true", []
    cond = " AND ".join(parts)
    return (f"({cond} OR iin IS NULL)" if hi is None else cond), params
